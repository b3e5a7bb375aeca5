"""lgseg_ros: language-guided lightweight semantic segmentation for ROS 2.

The library (model, text encoders, runtime backends, training) imports no ROS module;
only ``lgseg_ros.ros`` does. The generated interfaces ``lgseg_ros.msg`` and
``lgseg_ros.srv`` may live in another directory of the same name (a colcon install
space, or the development venv's site-packages); extending ``__path__`` lets both
halves import as one package.
"""
import os
import pkgutil

# OpenMP threads that spin while waiting (libgomp's default) steal the cores that ONNX
# Runtime, DDS and the robot's other nodes need: on a 2-core machine a 10-label MiniLM
# encode measured 552 ms spinning vs 31 ms passive. Must be set before torch loads
# OpenMP, hence here; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__path__ = pkgutil.extend_path(__path__, __name__)

__version__ = "0.1.0"
