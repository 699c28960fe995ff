"""Generated protocol-buffer modules of `protos/fedkr/v1/` (regenerate with `python protos/generate.py`)."""
