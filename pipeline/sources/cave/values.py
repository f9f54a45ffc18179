"""Values at the CAVE source's edge, read one way by every service: times, id lists, cloudpaths.

The servers speak datetimes, pandas Timestamps, ISO and RFC 1123 strings, seconds and milliseconds; the pipeline
speaks float epoch seconds (base.py). Cloudpaths come as `graphene://`, `precomputed://`, `gs://`, `s3://`, with or
without `middleauth+`; what is read from them (the https URL, the graphene host and table) is read here once.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from typing import Any

import numpy as np
import pandas as pd


def utc(ts: float) -> dt.datetime:
    """The aware UTC datetime of epoch seconds (what caveclient is handed as a time)."""
    return dt.datetime.fromtimestamp(float(ts), tz=dt.timezone.utc)


def epoch(value: Any) -> float:
    """Epoch seconds from a datetime, pandas Timestamp, ISO / RFC 1123 string or number (s or ms)."""
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).timestamp()
    if isinstance(value, (int, float, np.integer, np.floating)):
        v = float(value)
        return v / 1000.0 if v > 1e11 else v  # the tabular change log reports milliseconds
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value)  # Flask's default datetime format
        return epoch(parsed)
    raise ValueError(f"cannot read a timestamp from {value!r}")


def uint64_list(values: Any) -> list[int]:
    """Root or supervoxel ids as Python ints, from whatever a server's column holds (a list, an array, NaN)."""
    if values is None:
        return []
    if isinstance(values, float) and np.isnan(values):
        return []
    return [int(v) for v in np.asarray(values, dtype=np.uint64).ravel()]


def https_url(cloudpath: str) -> str:
    """The http(s) URL CloudVolume will read for a cloudpath (use_https=True)."""
    path = cloudpath
    for prefix in ("precomputed://", "graphene://", "middleauth+"):
        if path.startswith(prefix):
            path = path[len(prefix) :]
    if path.startswith("gs://"):
        return "https://storage.googleapis.com/" + path[len("gs://") :]
    if path.startswith("s3://"):
        return "https://s3.amazonaws.com/" + path[len("s3://") :]
    return path


def graphene_identity(cloudpath: str) -> tuple[str, str] | None:
    """(host, dataset) a graphene cloudpath names, whatever its form (`table/X`, `1.0/X`, `api/v1/X`)."""
    from cloudvolume.datasource.graphene.metadata import extract_graphene_path

    path = cloudpath
    for prefix in ("graphene://", "middleauth+"):
        path = path.replace(prefix, "")
    try:
        parsed = extract_graphene_path(path)
    except Exception:  # noqa: BLE001 - not a graphene path
        return None
    return parsed.fqdn.lower(), parsed.dataset
