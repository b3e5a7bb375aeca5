"""Launch lgseg_node: language-guided segmentation of a camera stream.

    ros2 launch lgseg_ros lgseg.launch.py camera_topic:=/camera/color/image_raw
    ros2 launch lgseg_ros lgseg.launch.py backend:=tensorrt rviz:=true
    ros2 launch lgseg_ros lgseg.launch.py \
        config_file:=$(ros2 pkg prefix lgseg_ros)/share/lgseg_ros/config/multi_camera.yaml

The node comes up active by itself (parameter autostart, default true); set it to false in
the config file to drive the lifecycle from a lifecycle manager instead. camera_info is
read from the image topic's sibling (`<camera_topic dir>/camera_info`), as image_transport
does. Discovery range is the environment's: this file never forces localhost.
Every process it starts loads config/fastdds_large_frames.xml (a larger Fast DDS shared-
memory segment: without it frames above 512 KB are dropped between processes under best
effort), unless FASTDDS_DEFAULT_PROFILES_FILE or FASTRTPS_DEFAULT_PROFILES_FILE is set;
with RMW_IMPLEMENTATION=rmw_cyclonedds_cpp, config/cyclonedds_lgseg.xml instead (a cap on
the size of any sample received), unless CYCLONEDDS_URI is set.
Checked without ROS by test/test_launch_config.py (parameters, topics, executables).
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare


def _nodes(context):
    backend = LaunchConfiguration("backend").perform(context)
    # Only what was given on the command line overrides the config file.
    overrides = {}
    if backend:
        overrides["backend"] = backend
    return [
        LifecycleNode(
            package="lgseg_ros",
            executable="lgseg_node",
            name="lgseg_node",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("config_file"), overrides],
            remappings=[("image", LaunchConfiguration("camera_topic"))],
            output="screen",
            emulate_tty=True,
        ),
        Node(
            package="rviz2",
            executable="rviz2",
            arguments=["-d", LaunchConfiguration("rviz_config")],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ]


def _dds_profile(context):
    # Before the nodes: the variable is read when each process creates its participant.
    # A configuration the user chose wins. Cyclone DDS (apt installs) gets the cap on
    # sample size; Fast DDS the larger shared-memory segment (lgseg_ros/ros/dds.py).
    share = FindPackageShare("lgseg_ros")
    if os.environ.get("RMW_IMPLEMENTATION") == "rmw_cyclonedds_cpp":
        if os.environ.get("CYCLONEDDS_URI"):
            return []
        uri = ["file://", PathJoinSubstitution([share, "config", "cyclonedds_lgseg.xml"])]
        return [SetEnvironmentVariable("CYCLONEDDS_URI", uri)]
    if os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE"):
        return []
    profile = PathJoinSubstitution([share, "config", "fastdds_large_frames.xml"])
    return [SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", profile)]


def generate_launch_description():
    share = FindPackageShare("lgseg_ros")
    return LaunchDescription([
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw",
                              description="sensor_msgs/Image input (single-camera configs)"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node (outputs: <ns>/lgseg_node/...)"),
        DeclareLaunchArgument("config_file",
                              default_value=PathJoinSubstitution([share, "config", "lgseg.yaml"]),
                              description="parameter file (see config/lgseg.yaml for every parameter)"),
        DeclareLaunchArgument("backend", default_value="",
                              description="auto | torch | onnxruntime | tensorrt; empty: the config file's"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz with rviz_config"),
        DeclareLaunchArgument("rviz_config",
                              default_value=PathJoinSubstitution([share, "config", "lgseg.rviz"]),
                              description="RViz config: overlay on the camera view, label mask"),
        OpaqueFunction(function=_dds_profile),
        OpaqueFunction(function=_nodes),
    ])
