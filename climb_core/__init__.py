"""CLIMB Studio's engine: corpus -> embeddings -> clusters -> mixture search -> export."""

__version__ = "0.1.0"
