"""StructVPR core library: models, SLME, segmentation, training, retrieval, evaluation.

Pure Python + torch + faiss. Nothing in this package imports rclpy.
"""

__version__ = "0.1.0"
