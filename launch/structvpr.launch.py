"""Launch the StructVPR loop-closure node on a ROS 2 install (ros2 launch structvpr_ros structvpr.launch.py).

Arguments:
  params_file       parameter YAML (default: the package's config/structvpr.yaml)
  image_topic       remap the node's sensor_msgs/Image input to this topic
  compressed_topic  remap the node's sensor_msgs/CompressedImage input to this topic
  odom_topic        remap the node's nav_msgs/Odometry input to this topic
  use_sim_time      true when replaying a bag with --clock

The remappings point the node's input names at your camera and odometry topics: `image`
(the params file's image_topic, on by default), `compressed` and `odom` (off by default: set
compressed_topic: compressed / odom_topic: odom in the params file to use them). For 640x480 images,
start the camera driver with FASTDDS_DEFAULT_PROFILES_FILE=<share>/structvpr_ros/config/fastdds_shm.xml
(~14 ms -> ~2 ms transport per image; the README says why). Without the `launch` packages
(pip-only setups) start the node directly:
  python -m structvpr_ros.node --ros-args --params-file config/structvpr.yaml
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = "structvpr_ros"
EXECUTABLE = "structvpr_node"


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "structvpr.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="parameter YAML for structvpr_node"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="sensor_msgs/Image input"),
        DeclareLaunchArgument("compressed_topic", default_value="/camera/image_raw/compressed",
                              description="sensor_msgs/CompressedImage input (set compressed_topic: compressed in the params file to use it)"),
        DeclareLaunchArgument("odom_topic", default_value="/odom",
                              description="nav_msgs/Odometry input (set odom_topic: odom in the params file to use it)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (bag replay)"),
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name="structvpr_node",
            output="screen",
            parameters=[
                LaunchConfiguration("params_file"),
                {"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)},
            ],
            remappings=[
                ("image", LaunchConfiguration("image_topic")),
                ("compressed", LaunchConfiguration("compressed_topic")),
                ("odom", LaunchConfiguration("odom_topic")),
            ],
        ),
    ])
