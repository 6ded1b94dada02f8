"""advise: video self-supervised learning on top of frozen image foundation models."""

__version__ = "0.1.0"
