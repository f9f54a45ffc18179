"""Sources: the outside world behind one protocol (see base.py)."""

from pipeline.sources.base import Cutout, OperationDetails, Skeleton, Source

__all__ = ["Cutout", "OperationDetails", "Skeleton", "Source"]
