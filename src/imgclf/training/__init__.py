"""Training: fit, checkpoint, resume; the frozen-backbone feature cache."""

from .trainer import resume, train

__all__ = ["resume", "train"]
