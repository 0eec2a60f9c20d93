"""The data layer: source -> scan -> split -> pipeline."""

from .dataset import ImageDataset, load_dataset
from .images import load_image
from .scan import ImageRecord, ScanReport, scan
from .sources import DataSource, resolve_source
from .split import make_splits, read_split_lists, write_splits

__all__ = [
    "DataSource", "ImageDataset", "ImageRecord", "ScanReport", "load_dataset", "load_image",
    "make_splits", "read_split_lists", "resolve_source", "scan", "write_splits",
]
