"""The twin: the demo world served over HTTP as CAVE and a graphene segmentation (docstring TBD)."""

from pipeline.twin.limits import TwinLimits
from pipeline.twin.server import TOKEN, TwinServer, serve_twin

__all__ = ["TOKEN", "TwinLimits", "TwinServer", "serve_twin"]
