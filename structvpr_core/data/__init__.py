"""Place sets (dataset readers, splits, ground truth) and image reading."""
