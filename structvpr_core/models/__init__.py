"""Networks (RGB student trunks, seg branch, MC head, T) and their checkpoint files."""
