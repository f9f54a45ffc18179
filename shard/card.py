"""README.md of the release: the dataset card, generated from the build's own counts.

Hugging Face YAML front matter maps train / validation / test to the three shard folders, so
`datasets.load_dataset(<release dir>)` gives the three splits. No wall-clock time appears here.
Every rule the card states (labels, routing, same_neuron, archives, coordinate keys, dual / single types,
metadata keys, column names, geometry shape) is written from the constants the rows are built and checked
with (core.samples, core.release_schema, shard.rules), never retyped. One function per
section, in the card's order.
"""

from __future__ import annotations

import json

from config.schema import SpeciesConfig
from core.release_schema import (
    EM_COLUMNS,
    SPLIT_DIRS,
    SPLIT_MASK_A,
    SPLIT_MASK_B,
    SPLIT_MASK_BACKGROUND,
    SPLIT_MASK_COLUMNS,
    SPLITS,
)
from core.samples import (
    COORD_KEY,
    DUAL_TYPES,
    LABELS,
    OP_TYPES,
    SAME_NEURON,
    SAMPLE_TYPES,
    archive_hash,
    metadata_keys,
    source_archive,
    task_routing,
)
from shard.rules import GEOMETRY_SHAPE, IMAGE_SIZE, SINGLE_TYPES

_SPECIES_SOURCES = {
    "mouse": "MICrONS (mouse cortex): https://www.microns-explorer.org/cortical-mm3",
    "fly": "FlyWire (Drosophila brain): https://flywire.ai/",
    "human": "H01 (human cortex): https://h01-release.storage.googleapis.com/landing.html",
    "zebrafish": "Zebrafish larval connectome (fish1): https://fish1-release.storage.googleapis.com/index.html",
    "demo": "the embedded synthetic demo world of cb2-build (not real data)",
}
# Prose for the groups of sample types that share a coordinate key (COORD_KEY); a grouping not listed here is
# written as its type names, so the card stays true if the rule changes.
_TYPE_GROUP_PROSE = {
    ("merge_edit", "split_edit", "adjacent_control"): "edits and adjacent controls",
    ("junction_control",): "junction controls",
    ("synapse_control",): "synapse controls",
}
DEFAULT_DESCRIPTION = (
    "ConnectomeBench2 is a unified benchmark for automated proofreading of connectomic neural-segmentation "
    "data, with mesh geometry and electron-microscopy (EM) renderings of every sample."
)
DEFAULT_CITATION = (
    "Brown, J., Farkas, T., Razgar, G., Boyden, E. S. ConnectomeBench2: A unified benchmark for automated "
    "connectomic proofreading. (2026, in submission)."
)


def _front_matter(extra: dict, splits: list[str]) -> str:
    lines = [
        "---",
        f"license: {extra.get('license', 'other')}",
        f"pretty_name: {extra.get('pretty_name', 'ConnectomeBench2')}",
        "tags:",
        "- connectomics",
        "- neuroscience",
        "- proofreading",
        "configs:",
        "- config_name: default",
        "  data_files:",
    ]
    for s in splits:
        lines += [f"  - split: {s}", f"    path: {SPLIT_DIRS[s]}/*.parquet"]
    lines.append("---")
    return "\n".join(lines)


def _pct(n: int, total: int) -> str:
    return f"{100.0 * n / total:.1f}%" if total else "n/a"


def _table(header: list[str], rows: list[list[object]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def render_card(stats: dict, extra: dict, configs: dict[str, SpeciesConfig] | None = None) -> str:
    """The dataset card as markdown. `extra` may carry: title, description, repo_id, license, pretty_name,
    citation (defaults otherwise). `configs`: each species' config, whose own values the card states (never the
    schema's defaults: a species may set its own); a species without one is stated without a number."""
    shards = stats["shards"]
    present = [s for s in SPLITS if shards[s]["n_shards"]]
    parts = [
        _front_matter(extra, present),
        "",
        f"# {extra.get('title', 'ConnectomeBench2')}",
        "",
        extra.get("description", DEFAULT_DESCRIPTION),
        "",
        *_intro(stats, present),
        *_counts_section(stats),
        *_renderings_section(stats, configs or {}),
        *_loading_section(extra.get("repo_id", "<release dir>")),
        *_columns_section(),
        *_metadata_section(stats),
        *_routing_section(),
        *_split_section(stats),
        *_failures_section(stats["failures"]),
        *_layout_section(),
        *_sources_section(list(stats["by_species"]), extra.get("license", "other")),
        "## Citation",
        "",
        extra.get("citation", DEFAULT_CITATION),
        "",
    ]
    return "\n".join(parts)


def _type_totals(stats: dict) -> dict[str, int]:
    return {t: sum(stats["by_type"][s][t] for s in SPLITS) for t in SAMPLE_TYPES}


def _intro(stats: dict, present: list[str]) -> list[str]:
    """What this build holds, in one sentence, and the splits it leaves out."""
    species = list(stats["by_species"])
    n_shards = sum(v["n_shards"] for v in stats["shards"].values())
    n_types = sum(1 for n in _type_totals(stats).values() if n)
    empty = [s for s in SPLITS if s not in present]
    return [
        f"This build: **{stats['total_rows']:,} samples** across {len(species)} species "
        f"({', '.join(species) or 'none'}) and {n_types} sample types, in {n_shards} parquet shards.",
        "",
        *([f"Empty in this build (no shards, left out of `configs`): {', '.join(empty)}.", ""] if empty else []),
        "Downstream trainers should treat this dataset as the single source of truth for sample identity, labels, "
        "train/validation/test split, and which task(s) a row is valid for.",
        "",
    ]


def _counts_section(stats: dict) -> list[str]:
    """Rows, shards and bytes per split; rows per sample type and per species; split-mask coverage."""
    rows, total, shards, se = stats["rows"], stats["total_rows"], stats["shards"], stats["split_edits"]
    n_shards = sum(v["n_shards"] for v in shards.values())
    total_bytes = sum(v["bytes"] for v in shards.values())
    type_totals = _type_totals(stats)
    return [
        "## Counts",
        "",
        _table(
            ["split", "rows", "share", "shards", "bytes"],
            [
                [s, f"{rows[s]:,}", _pct(rows[s], total), shards[s]["n_shards"], f"{shards[s]['bytes']:,}"]
                for s in SPLITS
            ]
            + [["total", f"{total:,}", _pct(total, total), n_shards, f"{total_bytes:,}"]],
        ),
        "",
        "Per sample type:",
        "",
        _table(
            ["sample_type", *SPLITS, "total"],
            [[t, *(f"{stats['by_type'][s][t]:,}" for s in SPLITS), f"{type_totals[t]:,}"] for t in SAMPLE_TYPES],
        ),
        "",
        "Per species:",
        "",
        _table(
            ["species", *SPLITS, "total"],
            [[sp, *(f"{v[s]:,}" for s in SPLITS), f"{sum(v.values()):,}"] for sp, v in stats["by_species"].items()],
        ),
        "",
        f"Split-mask coverage: {se['with_after_mask']:,} / {se['total']:,} split_edits "
        f"({_pct(se['with_after_mask'], se['total'])}) have an after state and the three `split_mask_*` views.",
        "",
    ]


def _code_list(columns: tuple[str, ...]) -> str:
    return ", ".join(f"`{c}`" for c in columns)


def _renderings_section(stats: dict, configs: dict[str, SpeciesConfig]) -> list[str]:
    """The figure (if any), then what the geometry, EM and split-mask columns hold."""
    figure = []
    if stats.get("figure"):
        figure = [
            f"![channel decomposition]({stats['figure']})",
            "",
            "(top: a dual-segment row, both masks populated; bottom: a single-segment row, mask B empty; front view)",
            "",
        ]
    return [
        "## Renderings (geometry and EM imaging data)",
        "",
        *figure,
        *_geometry_lines(),
        *_em_lines(_per_species(list(stats["by_species"]), configs, "max_missing_fraction")),
        *_split_mask_lines(),
    ]


def _geometry_lines() -> list[str]:
    return [
        "Geometry (the `geometry` column) is a compressed `.npz` payload (key `arr_0`) that decodes to a "
        f"`{GEOMETRY_SHAPE}` float16 array: three orthographic views (front, side, top) x seven channels:",
        "",
        _table(
            ["ch", "content"],
            [
                [0, "silhouette (0/1)"],
                [1, "depth (foreground min-max normalised to [0, 1], 0 nearest; background 0)"],
                [2, "normal_x (camera space, x right)"],
                [3, "normal_y (y up)"],
                [4, "normal_z (towards the viewer)"],
                [5, "mask A"],
                [6, "mask B (empty in single-segment renders)"],
            ],
        ),
        "",
        f"Geometry is dual-segment when `sample_type` is one of {', '.join(sorted(DUAL_TYPES))}, and "
        f"single-segment when it is one of {', '.join(sorted(SINGLE_TYPES))}. In dual renders both segments share "
        "one scene: each pixel belongs to the nearest surface, the masks never overlap and their union is the "
        "silhouette. A segment wholly hidden behind the other in one view leaves its mask empty in that view.",
        "",
    ]


def _per_species(species: list[str], configs: dict[str, SpeciesConfig], key: str) -> str:
    """` (demo 0.02, fly 0.05)`: each species' own value of a config key; empty when no species of the release
    has a config here (then the card names the key without a number, never the schema's default)."""
    values = {sp: getattr(configs[sp], key) for sp in species if sp in configs}
    return " (" + ", ".join(f"{sp} {v:g}" for sp, v in values.items()) + ")" if values else ""


def _em_lines(max_missing: str) -> list[str]:
    """The EM columns; `max_missing`: the species' own `max_missing_fraction`, as `_per_species` states it."""
    return [
        f"EM views ({_code_list(EM_COLUMNS)}) are RGB PNGs, {' x '.join(str(n) for n in IMAGE_SIZE)}, of "
        "the before-edit state:",
        "",
        _table(
            ["ch", "content"],
            [[0, "raw EM intensity"], [1, "segment A mask (0/255)"], [2, "segment B mask (0/255)"]],
        ),
        "",
        "R is the mean of a 3-voxel EM slab; G and B are the segmentation's labels on the slab's central plane (a "
        "slice, like the segmentation they come from): G = 255 where it is segment A, B = 255 where it is segment "
        "B, so the two masks never overlap. Segment A is the first root of the row (the first before root, the base "
        "root, the pre-synaptic root; for split_edit rows the first after root, the EM being labelled by the after "
        "state), B the second. Cardinal views: `em_xy_before` has columns x and rows y, `em_xz_before` columns x "
        "and rows z, `em_yz_before` columns y and rows z, row 0 at the low coordinate.",
        "",
        "`em_best_before` is the plane that maximises log(area A) + log(area B) in the central 75% of the view: "
        "about 51 candidate planes are searched on a coarse grid, the best few are rendered and scored on their "
        "224 px masks together with the three cardinal views, and the highest wins (a cardinal view on ties, and "
        "then `em_best_before` is that view). So it never scores below a cardinal view; the scores are in the "
        "metadata (`em_best_score`, `em_cardinal_scores`). It sees both labels, so do not test single-segment tasks "
        "on it. For single-segment tasks, merge the A and B channels.",
        "",
        "Absent data is not tissue. Where a chunk of the EM or segmentation layer is missing (inside the volume's "
        "bounds; outside them is padding), its voxels are not shown as black or unlabelled: a sample with more than "
        f"its species' `max_missing_fraction`{max_missing} of its EM window's voxels, or of any view's "
        "pixels, from missing chunks is left out (failures `em_chunks_missing` / `seg_chunks_missing`); shipped "
        "rows record the window's fractions in `em_missing_fraction` and `seg_missing_fraction`.",
        "",
    ]


def _split_mask_lines() -> list[str]:
    return [
        f"Split masks ({_code_list(SPLIT_MASK_COLUMNS)}, split_edit rows with an after state "
        "only) are single-channel PNGs aligned pixel for pixel with the single-segment geometry views:",
        "",
        _table(
            ["value", "meaning"],
            [[SPLIT_MASK_BACKGROUND, "background"], [SPLIT_MASK_A, "after-root A"], [SPLIT_MASK_B, "after-root B"]],
        ),
        "",
    ]


def _loading_section(repo: str) -> list[str]:
    return [
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("{repo}", split="train")',
        "sample = ds[0]",
        '# sample["em_xy_before"] is a PIL Image (decoded by datasets)',
        "import io, numpy as np",
        f'geom = np.load(io.BytesIO(sample["geometry"]))["arr_0"]  # {GEOMETRY_SHAPE} float16',
        "```",
        "",
        "With pyarrow only:",
        "",
        "```python",
        "import io, numpy as np, pyarrow.parquet as pq",
        'df = pq.read_table("train/train-00000.parquet").to_pandas()',
        'geom = np.load(io.BytesIO(df.iloc[0]["geometry"]))["arr_0"]',
        "```",
        "",
        "`metadata/{train,val,test}.parquet` hold every non-image column plus `shard_path` (no bytes), for fast "
        "filtering. `demo.parquet` holds a few train rows of every sample type with the full schema.",
        "",
    ]


def _archives_text() -> str:
    """`source_archive` values and the sample types in each, from source_archive()."""
    archives: dict[str, list[str]] = {}
    for t in SAMPLE_TYPES:
        archives.setdefault(source_archive(t, "{species}"), []).append(t)
    return " or ".join(f"`{a}` ({', '.join(types)})" for a, types in archives.items())


def _columns_section() -> list[str]:
    same = [t for t in SAMPLE_TYPES if SAME_NEURON[t]]
    return [
        "## Columns",
        "",
        '- `combined_sample_hash`: primary key, md5 hex of `"{source_archive}|{source_archive_sample_hash}"`; '
        "unique across the dataset.",
        f"- `source_archive_sample_hash`: {len(archive_hash(''))}-hex key of the sample inside its archive; "
        "not unique alone.",
        f"- `source_archive`: {_archives_text()}.",
        f"- `sample_type`, `species`, `split` ({' / '.join(SPLITS)}).",
        f"- `same_neuron`: true for {' and '.join(same)}, false otherwise.",
        "- `geometry`, `em_*_before`, `split_mask_*`: see above. `has_em`: any EM column present. "
        "`has_after_mask`: the three split masks present (split_edit only). `present_slots`: the modality "
        "columns present, sorted.",
        "- `metadata`: JSON (sorted keys) of the sample's provenance: operation ids, root ids, coordinates, "
        "render extent and centre, timestamps (see Metadata below).",
        "",
    ]


def _metadata_section(stats: dict) -> list[str]:
    """The metadata key set of each archive, from the constants the bank and render write them with
    (core.samples); the synapse table's score columns, which vary by species, from this build's rows."""
    observed: dict[str, list[str]] = stats.get("metadata_keys", {})
    rows = []
    for sp in stats["by_species"]:
        for ops in (True, False):
            types = [t for t in SAMPLE_TYPES if (t in OP_TYPES) == ops]
            archive = source_archive(types[0], sp)
            if archive not in observed:
                continue
            fixed = set(metadata_keys(types[0]))
            scores = () if ops else tuple(sorted(k for k in observed[archive] if k not in fixed))
            keys = metadata_keys(types[0], scores)
            rows.append([f"`{archive}`", ", ".join(types), ", ".join(f"`{k}`" for k in keys)])
    if not rows:
        return []
    return [
        "## Metadata",
        "",
        "Rows of one archive share one key set (null where a key does not apply):",
        "",
        _table(["archive", "sample types", "keys"], rows),
        "",
        "Timestamps are integer epoch seconds (UTC). `timestamp` is the operation's time; `timestamp_ms` keeps it "
        "exactly (epoch milliseconds). `cutout_timestamp` is when a control row's EM labels were resolved; it is "
        "null on operation rows, whose labels are resolved at the operation (T - 1 s for merge_edit and "
        "adjacent_control, T for split_edit). `after_root_ids` is null on adjacent controls. Control rows carry the "
        "synapse table's score columns where it has them (`cleft_score`, `connection_score`, neurotransmitter "
        "scores). `render_center_nm` and `view_extent_nm` are the geometry camera's centre and half-width; "
        "`em_view_center_nm` the EM views' centre after recentring; `em_best_normal` the best plane's normal.",
        "",
    ]


def _routing_text(sample_type: str) -> str:
    """task_routing of a row of this type, the routes that need an after mask marked as such."""
    always = task_routing(sample_type, has_after_mask=False)
    with_mask = [r for r in task_routing(sample_type, has_after_mask=True) if r not in always]
    return ", ".join(always) + (f" (+ {', '.join(with_mask)} if has_after_mask)" if with_mask else "")


def _label_text(label: float | None) -> str:
    return "null" if label is None else str(label)


def _routing_section() -> list[str]:
    """same_neuron, task_routing and the two labels of each sample type, from the rules the rows are built by."""
    return [
        "## Task routing and labels",
        "",
        _table(
            [
                "sample_type",
                "same_neuron",
                "task_routing",
                "false_split_correction_label",
                "false_merge_identification_label",
            ],
            [
                [t, str(SAME_NEURON[t]).lower(), _routing_text(t), *(_label_text(x) for x in LABELS[t])]
                for t in SAMPLE_TYPES
            ],
        ),
        "",
        "Merge correction of false splits uses the dual-segment geometry rows; identification of false merges uses "
        "the single-segment rows (fuse the EM A/B channels and leave out `em_best_before`).",
        "",
    ]


def _coord_keys_text() -> str:
    """Each coordinate key of COORD_KEY and the sample types that use it."""
    groups: dict[str, list[str]] = {}
    for t in SAMPLE_TYPES:
        groups.setdefault(COORD_KEY[t], []).append(t)
    return ", ".join(
        f"`{key}` for {_TYPE_GROUP_PROSE.get(tuple(types), ', '.join(types))}" for key, types in groups.items()
    )


def _split_section(stats: dict) -> list[str]:
    """The split rule, the observed shares and each species' split manifest."""
    rows, total = stats["rows"], stats["total_rows"]
    lines = [
        "## Train/validation/test split",
        "",
        f"Each sample's coordinate ({_coord_keys_text()}) falls in a cube "
        "`floor((point - bbox_min) / cube_nm)` of its species' canonical segmentation bbox (from CloudVolume, not "
        "from the data). The cube's split is a hash of (species, cube index, salt) mapped to [0, 1): below the train "
        "ratio -> train, below train + validation -> validation, else test. Adding or removing samples never moves a "
        "cube. Observed shares: " + ", ".join(f"{s} {_pct(rows[s], total)}" for s in SPLITS) + ".",
        "",
    ]
    manifests = _manifest_rows(stats.get("split_manifests", {}))
    if manifests:
        header = ["species", "cube_nm", "salt", "ratios (train/val/test)", "bbox_nm", "cubes (train/val/test)"]
        lines += [_table(header, manifests), ""]
    return lines


def _manifest_rows(manifests: dict) -> list[list[object]]:
    rows = []
    for sp, m in manifests.items():
        if not m:
            continue
        r = m.get("ratios") or {}
        cps = m.get("cubes_per_split") or {}
        rows.append(
            [
                sp,
                m.get("cube_nm"),
                m.get("salt"),
                "/".join(str(r.get(s)) for s in SPLITS),
                json.dumps(m.get("bbox_nm"), sort_keys=True),
                "/".join(str(cps.get(s, 0)) for s in SPLITS),
            ]
        )
    return rows


def _failures_section(f: dict) -> list[str]:
    """How many candidates failed, by stage and reason, and per species."""
    lines = ["## Failures", "", f"{f['total']:,} candidate samples could not be built and are not in the release."]
    if f["total"]:
        lines += [
            "",
            _table(
                ["stage", "reason", "samples"], [[x["stage"], x["reason"], f"{x['n']:,}"] for x in f["by_stage_reason"]]
            ),
            "",
            "Per species: " + ", ".join(f"{k} {v:,}" for k, v in f["by_species"].items()) + ".",
        ]
    return [*lines, ""]


def _layout_section() -> list[str]:
    return [
        "## Layout",
        "",
        "```",
        "README.md",
        "shards.csv            path, sha256, n_samples, size, split, shard_id (one row per shard)",
        "train/train-*.parquet shards with image bytes",
        "val/val-*.parquet",
        "test/test-*.parquet",
        "metadata/             sidecars: identifiers, labels, modality flags, shard_path (no bytes)",
        "  train.parquet",
        "  val.parquet",
        "  test.parquet",
        "demo.parquet          stratified mini-shard",
        "figures/",
        "  channel_decomposition.png",
        "report/               index.html: counts, a gallery, failures, the build (a view, not in shards.csv)",
        "```",
        "",
    ]


def _sources_section(species: list[str], license_: str) -> list[str]:
    return [
        "## Sources and license",
        "",
        *[f"- {_SPECIES_SOURCES.get(sp, sp)}" for sp in species],
        "",
        f"License: {license_}; users must comply with the upstream licenses, which may differ "
        "across species and sources.",
        "",
    ]
