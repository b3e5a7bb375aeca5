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
# OpenCV's cap on what one decoded image may allocate, read once when cv2 loads: 8K UHD
# (ros.params.MAX_IMAGE_PIXELS_CAP, the largest max_image_pixels). Here, before any module
# of the package imports cv2, so the tools that read image folders (demo, eval,
# pseudo-label, agreement) have it too: a 249 KB PNG of 16000x16000 held `lgseg demo` for
# 16.6 s at 1.55 GB, and OpenCV's own default allows 1 Gpx (audit round 19). The node's
# header checks (ros/image_conversion) come first; this is their second line.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "33554432")

__path__ = pkgutil.extend_path(__path__, __name__)

__version__ = "0.1.0"
