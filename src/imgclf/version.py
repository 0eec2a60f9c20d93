"""The version of imgclf (written into every run folder, export and report)."""

__version__ = "0.1.0"
