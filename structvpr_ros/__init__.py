"""Thin rclpy adapters over structvpr_core: node, message conversion, replay."""
