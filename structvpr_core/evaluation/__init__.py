"""Metrics (Recall@N, precision-recall) and the ``structvpr eval`` command."""
