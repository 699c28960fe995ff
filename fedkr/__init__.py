"""fedkr: federated knowledge recycling for medical images."""

__version__ = "0.1.0"
