"""The only rclpy code of lgseg_ros: image conversion, the lifecycle node, the relay, bench-node.

Submodules are imported on demand (``lgseg_ros.ros.node``...), so importing the package
pulls in neither rclpy nor torch.
"""
