"""ament_python package; also installs with plain pip (``pip install -e .``)."""

from glob import glob

from setuptools import find_packages, setup

package_name = "structvpr_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["structvpr_core", "structvpr_core.*", "structvpr_ros", "structvpr_ros.*"]),
    package_data={"structvpr_core.segmentation": ["slme_tables/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.py")),
        (f"share/{package_name}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{package_name}/checkpoints", glob("training/checkpoints/*.pt") + glob("training/checkpoints/*.md")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="StructVPR maintainers",
    maintainer_email="structvpr@example.com",
    description="StructVPR visual place recognition: core library, ROS 2 loop-closure node, tools",
    license="MIT",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "structvpr = structvpr_core.cli:main",
            "structvpr_node = structvpr_ros.node:main",
        ],
    },
)
