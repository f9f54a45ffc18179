"""The label and routing rules of the card, and the row checks shared by the writer and verify.

`check_table` is cheap (no decoding): identity, labels, routing, slots, flags, magic bytes.
`check_decoded` decodes geometry and images (verify --deep).
"""

from __future__ import annotations

import json
import re
import struct
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pywuffs import ImageDecoderType, PixelFormat
from pywuffs.aux import ImageDecoder, ImageDecoderConfig

from core.hashing import md5_hex
from core.release_schema import (
    EM_COLUMNS,
    SPLIT_MASK_A,
    SPLIT_MASK_B,
    SPLIT_MASK_BACKGROUND,
    SPLIT_MASK_COLUMNS,
    SPLITS,
)
from core.samples import DUAL_TYPES, LABELS, SAME_NEURON, SAMPLE_TYPES, source_archive, task_routing
from render.encode import decode_geometry

SINGLE_TYPES = frozenset(SAMPLE_TYPES) - DUAL_TYPES
# sample_type -> (same_neuron, false_split_correction_label, false_merge_identification_label)
TYPE_RULES: dict[str, tuple[bool, float | None, float | None]] = {t: (SAME_NEURON[t], *LABELS[t]) for t in SAMPLE_TYPES}
SLOT_COLUMNS = ("geometry",) + EM_COLUMNS + SPLIT_MASK_COLUMNS
GEOMETRY_SHAPE = (3, 7, 224, 224)
IMAGE_SIZE = (224, 224)
SPLIT_MASK_VALUES = frozenset({SPLIT_MASK_BACKGROUND, SPLIT_MASK_A, SPLIT_MASK_B})
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX12 = re.compile(r"^[0-9a-f]{12}$")
_ZIP_MAGIC = b"PK\x03\x04"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class RowError(ValueError):
    """A row that breaks the release contract; the message names its combined_sample_hash."""


def expected_slots(present: dict[str, bool]) -> list[str]:
    """present_slots: the non-null modality columns, sorted (as in the card's examples)."""
    return sorted(c for c in SLOT_COLUMNS if present.get(c))


def _valid_mask(col: pa.ChunkedArray | pa.Array, inner: str | None = None) -> list[bool]:
    valid = pc.is_valid(col)
    if inner is not None:
        valid = pc.and_(valid, pc.is_valid(pc.struct_field(col, inner)))
    return valid.to_pylist()


def _prefixes(col: pa.ChunkedArray | pa.Array, n: int, inner: str | None = None) -> list[bytes | None]:
    if inner is not None:
        col = pc.struct_field(col, inner)
    return pc.binary_slice(col, 0, n).to_pylist()


def row_problems(row: dict, species: str | None = None, split: str | None = None) -> list[str]:
    """Problems of one row's identity/label/routing/flags (no decoding). `row` holds the non-image
    columns plus, for every slot column, a bool `present:<col>` and optionally `magic:<col>` bytes."""
    p: list[str] = []
    st = row["sample_type"]
    if st not in TYPE_RULES:
        return [f"unknown sample_type {st!r}"]
    same, fsc, fmi = TYPE_RULES[st]
    h = row["combined_sample_hash"]
    if h is None or not _HEX32.match(h):
        p.append(f"combined_sample_hash {h!r} is not 32 lowercase hex digits")
    sah = row["source_archive_sample_hash"]
    if sah is None or not _HEX12.match(sah):
        p.append(f"source_archive_sample_hash {sah!r} is not 12 lowercase hex digits")
    sp = row["species"]
    if species is not None and sp != species:
        p.append(f"species {sp!r} in the parts of species {species!r}")
    archive = source_archive(st, sp)
    if row["source_archive"] != archive:
        p.append(f"source_archive {row['source_archive']!r}, expected {archive!r} for {st}")
    elif h is not None and sah is not None and md5_hex(f"{row['source_archive']}|{sah}") != h:
        p.append("combined_sample_hash is not md5(source_archive|source_archive_sample_hash)")
    if row["same_neuron"] is not same:
        p.append(f"same_neuron {row['same_neuron']!r}, expected {same} for {st}")
    if row["false_split_correction_label"] != fsc:
        p.append(f"false_split_correction_label {row['false_split_correction_label']!r}, expected {fsc} for {st}")
    if row["false_merge_identification_label"] != fmi:
        p.append(
            f"false_merge_identification_label {row['false_merge_identification_label']!r}, expected {fmi} for {st}"
        )
    if split is not None and row.get("split") != split:
        p.append(f"split {row.get('split')!r}, expected {split!r}")
    elif row.get("split", SPLITS[0]) not in SPLITS:
        p.append(f"split {row.get('split')!r} is not one of {SPLITS}")
    present = {c: row[f"present:{c}"] for c in SLOT_COLUMNS}
    masks = [present[c] for c in SPLIT_MASK_COLUMNS]
    ham = row["has_after_mask"]
    if any(masks) and not all(masks):
        p.append("some but not all split_mask_* columns are present")
    if ham is not all(masks):
        p.append(f"has_after_mask {ham!r} but split masks present: {all(masks)}")
    if ham and st != "split_edit":
        p.append(f"has_after_mask true on a {st} row")
    if row["has_em"] is not any(present[c] for c in EM_COLUMNS):
        p.append(f"has_em {row['has_em']!r} disagrees with the EM columns")
    if not present["geometry"]:
        p.append("geometry is null")
    want_routing = task_routing(st, bool(ham))
    if row["task_routing"] != want_routing:
        p.append(f"task_routing {row['task_routing']!r}, expected {want_routing}")
    slots = row["present_slots"]
    want_slots = expected_slots(present)
    if slots is None or sorted(slots) != want_slots or len(set(slots)) != len(slots):
        p.append(f"present_slots {slots!r}, expected {want_slots}")
    meta = row["metadata"]
    try:
        if not isinstance(json.loads(meta), dict):
            p.append("metadata is not a JSON object")
    except (TypeError, ValueError):
        p.append("metadata is not valid JSON")
    for c in SLOT_COLUMNS:
        magic = row.get(f"magic:{c}")
        if magic is None:
            continue
        want = _ZIP_MAGIC if c == "geometry" else _PNG_MAGIC
        if not magic or not want.startswith(magic):
            p.append(f"{c} does not start with the {'npz' if c == 'geometry' else 'PNG'} magic bytes")
    return p


def table_rows(table: pa.Table) -> list[dict]:
    """The non-image columns as dicts, plus presence flags and magic-byte prefixes of the slots."""
    small = [c for c in table.column_names if c not in SLOT_COLUMNS]
    rows = table.select(small).to_pylist()
    for c in SLOT_COLUMNS:
        inner = None if c == "geometry" else "bytes"
        present = _valid_mask(table.column(c), inner)
        magic = _prefixes(table.column(c), 8 if inner else 4, inner)
        for r, ok, m in zip(rows, present, magic, strict=True):
            r[f"present:{c}"] = ok
            r[f"magic:{c}"] = m
    return rows


def check_table(table: pa.Table, species: str | None = None, split: str | None = None, where: str = "") -> list[dict]:
    """Check every row; raise RowError naming the first bad combined_sample_hash. Returns the rows
    (non-image columns + flags) for counting."""
    rows = table_rows(table)
    bad = []
    for r in rows:
        problems = row_problems(r, species, split)
        if problems:
            bad.append((r["combined_sample_hash"], problems))
    if bad:
        h, problems = bad[0]
        more = f" (and {len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
        raise RowError(f"{where}row {h}: " + "; ".join(problems) + more)
    return rows


# PNG colour types (IHDR) of the release's modes, at bit depth 8
_PNG_MODE_NAMES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}
_DECODERS = threading.local()


def _png_decoder(mode: str):  # noqa: ANN202 - a pywuffs ImageDecoder
    """Wuffs' PNG decoder (pywuffs), one per output mode and thread: ~2.5x Pillow's decoder, and deep verify
    decodes every image of the release. A decoder holds its own work buffers, so one shared by the threads of a
    `threads` scheduler corrupts the heap (double free). Like libpng's and Pillow's, it does not check the IDAT
    chunks' CRCs; unlike Pillow, not the zlib Adler-32 either: the shard's sha256 has been checked first and
    covers them."""
    decoders = _DECODERS.__dict__
    if mode not in decoders:
        cfg = ImageDecoderConfig()
        cfg.enabled_decoders = [ImageDecoderType.PNG]
        cfg.pixel_format = PixelFormat.RGB if mode == "RGB" else PixelFormat.Y
        decoders[mode] = ImageDecoder(cfg)
    return decoders[mode]


def _png_pixels(data: bytes, mode: str) -> tuple[str, tuple[int, int], np.ndarray | None]:
    """(mode, (width, height), pixels) of a PNG: the header read from its IHDR chunk; pixels (H, W, 3) for
    RGB, (H, W) for L, decoded only when the header says `mode`."""
    if data[:8] != _PNG_MAGIC or data[12:16] != b"IHDR":
        raise ValueError("no PNG signature and IHDR chunk")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    got = _PNG_MODE_NAMES.get(colour, f"colour type {colour}") + ("" if depth == 8 else f" {depth}-bit")
    if got != mode:
        return got, (width, height), None
    result = _png_decoder(mode).decode(data)
    if result.error_message:
        raise ValueError(result.error_message)
    pixels = result.pixbuf
    return got, (width, height), pixels if mode == "RGB" else pixels.reshape(pixels.shape[:2])


def _checked_png(cell: dict | None, column: str, mode: str, problems: list[str]) -> np.ndarray | None:
    """The image's pixels if the cell holds a 224 x 224 PNG of `mode`; else None (a problem noted if wrong)."""
    if cell is None or cell.get("bytes") is None:
        return None
    try:
        got_mode, size, pixels = _png_pixels(cell["bytes"], mode)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a problem to report
        problems.append(f"{column} does not decode as PNG: {exc}")
        return None
    if got_mode != mode or size != IMAGE_SIZE or pixels is None or pixels.shape[:2] != IMAGE_SIZE[::-1]:
        problems.append(f"{column} is PNG {got_mode} {size}, expected PNG {mode} {IMAGE_SIZE}")
        return None
    return pixels


# float16 bit patterns (the geometry's dtype): the fast test reads the raw bits, no float conversion
_F16_ONE = np.uint16(0x3C00)
_F16_MAG = np.uint16(0x7FFF)
_F16_NORMAL_MAX = 0x3C01  # the largest float16 <= 1.001 (1.0009766)


def _geometry_surely_fine(bits: np.ndarray, single: bool) -> bool:
    """A fast sufficient test on the float16 bits (3, 7, H, W) uint16: True only if `_geometry_problems` finds
    nothing. Silhouette and mask A hold only 0 and 1.0, mask A | mask B == silhouette and A & B == 0 bit for
    bit (so B holds only 0 and 1.0 too, and no pixel is in both), B empty on single rows, depth in [+0, 1],
    |normals| <= 1.001 (all finite). Anything else, -0.0 included, goes to the exact check."""
    sil, ma, mb = bits[:, 0], bits[:, 5], bits[:, 6]
    for ch in (sil, ma):
        if not ((ch == 0) | (ch == _F16_ONE)).all():
            return False
    if not np.array_equal(ma | mb, sil) or (ma & mb).any() or (single and mb.any()):
        return False
    if bits[:, 1].max() > _F16_ONE:
        return False
    return int((bits[:, 2:5] & _F16_MAG).max()) <= _F16_NORMAL_MAX


# a pixel's (G, B) bytes read as one little-endian uint16 G | B << 8: A only, B only, both
_G_ONLY, _B_ONLY, _BOTH = np.uint16(0x00FF), np.uint16(0xFF00), np.uint16(0xFFFF)


def _green_blue(rgb: np.ndarray) -> np.ndarray:
    """The (G, B) bytes of every pixel of an (H, W, 3) uint8 image as uint16 G | B << 8 (one contiguous copy:
    the compares then run on 2 bytes per pixel instead of three strided passes)."""
    rgb = np.ascontiguousarray(rgb)
    n = rgb.shape[0] * rgb.shape[1]
    return np.ndarray((n,), dtype="<u2", buffer=rgb, offset=1, strides=(3,)).copy()


def _geometry_problems(geom: np.ndarray, st: str) -> list[str]:
    """The exact checks of a decoded geometry (float values; run when the fast test does not pass)."""
    p: list[str] = []
    g = geom.astype(np.float32)
    if not np.all(np.isfinite(g)):
        p.append("geometry has non-finite values")
    sil, ma, mb = g[:, 0], g[:, 5], g[:, 6]
    for name, ch in (("silhouette", sil), ("mask A", ma), ("mask B", mb)):
        if not np.all((ch == 0) | (ch == 1)):
            p.append(f"geometry {name} is not binary")
    if np.any((ma > 0) & (mb > 0)):
        p.append("geometry masks A and B overlap")
    if not np.array_equal(np.maximum(ma, mb), sil):
        p.append("geometry masks A | B differ from the silhouette")
    if st in SINGLE_TYPES and np.any(mb):
        p.append(f"geometry mask B is not empty on a single-segment {st} row")
    if np.any((g[:, 1] < 0) | (g[:, 1] > 1)):
        p.append("geometry depth outside [0, 1]")
    if np.any(np.abs(g[:, 2:5]) > 1.001):
        p.append("geometry normals outside [-1, 1]")
    return p


def decoded_problems(row: dict) -> list[str]:
    """Decode geometry and images of one full row (as from Table.to_pylist) and check them."""
    p: list[str] = []
    st = row["sample_type"]
    try:
        geom = decode_geometry(row["geometry"])
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a problem to report
        return [f"geometry does not decode: {exc}"]
    if geom.shape != GEOMETRY_SHAPE or geom.dtype != np.float16:
        return [f"geometry is {geom.shape} {geom.dtype}, expected {GEOMETRY_SHAPE} float16"]
    if not _geometry_surely_fine(geom.view(np.uint16), st in SINGLE_TYPES):
        p += _geometry_problems(geom, st)
    for c in EM_COLUMNS:
        a = _checked_png(row[c], c, "RGB", p)
        if a is None:
            continue
        gb = _green_blue(a)
        if not ((gb == 0) | (gb == _G_ONLY) | (gb == _B_ONLY)).all():
            if not ((gb == 0) | (gb == _G_ONLY) | (gb == _B_ONLY) | (gb == _BOTH)).all():
                p.append(f"{c} segment mask channels are not exactly 0/255")
            if (gb == _BOTH).any():
                p.append(f"{c} segment masks A and B overlap")
    for c in SPLIT_MASK_COLUMNS:
        a = _checked_png(row[c], c, "L", p)
        if a is not None:
            ok = (a == SPLIT_MASK_BACKGROUND) | (a == SPLIT_MASK_A) | (a == SPLIT_MASK_B)
            if not ok.all():
                vals = set(np.unique(a[~ok]).tolist())
                p.append(f"{c} has values {sorted(vals)} outside {sorted(SPLIT_MASK_VALUES)}")
    return p
