"""Int8/uint8 calibration: each local embedding version's per-dimension ranges, measured on
a fixed sample when it loads, kept with it, and sent with a reply that asks for them."""
