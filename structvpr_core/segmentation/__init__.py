"""Teacher inputs: offline segmenters, the label-map cache, SLME encoding and its class tables."""
