"""lgseg_ros: language-guided lightweight semantic segmentation for ROS 2.

The library (model, text encoders, runtime backends, training) imports no ROS module;
only ``lgseg_ros.ros`` does. The generated interfaces ``lgseg_ros.msg`` and
``lgseg_ros.srv`` may live in another directory of the same name (a colcon install
space, or the development venv's site-packages); extending ``__path__`` lets both
halves import as one package.
"""
import pkgutil

__path__ = pkgutil.extend_path(__path__, __name__)

__version__ = "0.1.0"
