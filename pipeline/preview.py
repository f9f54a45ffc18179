"""`python -m pipeline preview`: a contact sheet of rendered rows of every sample type."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from core.atomic import atomic_path
from core.errors import UserError
from core.samples import SAMPLE_TYPES
from pipeline.context import make_context
from pipeline.stages.species import species_graph
from render.contact_sheet import contact_sheet


def pick_rows(part_paths: list[Path], per_type: int) -> list[dict]:
    """The first `per_type` rendered rows of each sample type, in hash order (parts read one at a time)."""
    picked: dict[str, list[dict]] = {t: [] for t in SAMPLE_TYPES}
    for path in part_paths:
        if not path.exists():
            continue
        for row in pq.read_table(path).to_pylist():
            bucket = picked[row["sample_type"]]
            if len(bucket) < per_type:
                bucket.append(row)
        if all(len(b) >= per_type for b in picked.values()):
            break
    return [row for t in SAMPLE_TYPES for row in picked[t]]


def write_preview(species: str, work: Path, out: Path, per_type: int, output: Path) -> Path:
    ctx = make_context(species, work, out)
    parts = [p.output_file(ctx) for p in species_graph(ctx).partitions("render")]
    rows = pick_rows(parts, per_type)
    if not rows:
        raise UserError(f"species {species}: nothing rendered yet in {ctx.stage_dir('render')} (run `make build`)")
    sheet = contact_sheet(rows, all_views=True)
    with atomic_path(output) as tmp:
        sheet.save(tmp, format="PNG")
    return output
