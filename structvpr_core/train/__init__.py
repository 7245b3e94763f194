"""Offline training (paper §3.3-3.5): stage I branches, group partition, stage II distillation.

Pipeline, one command per step; each step writes the file the next one reads:

  structvpr train stage1-rgb --config C   -> <out>/stage1-rgb/best.pt   (val-R@5 selected)
  structvpr train stage1-seg --config C   -> <out>/stage1-seg/best.pt
  structvpr train partition  --config C   -> <out>/partition/partition.csv (q, p, x, y, group, weight)
  structvpr train stage2     --config C   -> <out>/stage2-<name>/best.pt (the deployable RGB student)
  structvpr train test       --config C --step S   -> <out>/<S>/test.json (never used for selection)
"""
