"""What a changed config key redoes, derived from the stages' own declarations: the README's table.

Each stage declares the config keys its outputs depend on (`reads`), the stages whose outputs it reads
(`consumes`), whether it keeps each sample whose own key is unchanged (`keys_samples`), and keys that redo only
the samples they widen (`widened_by`). Every unit of work is a stage's partition, sealed by the runner with the
fingerprint of those declarations: the bank's proofread roots (`roots`) and selection (`select`) and the release
(`shard`) too, so the table covers them with no case of their own. A key redoes the stages that read it, and,
after them, every stage that consumes what those wrote: all of a stage without sample keys, only the changed
samples of one with them. Keys no output depends on are `NOT_INPUTS`.

`python -m pipeline.invalidation` rewrites the table in README.md (`make readme`); `--check` exits non-zero when
the README's table is not the one derived here (`make lint`; tests/pipeline/test_invalidation.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from config.schema import SpeciesConfig
from pipeline.stage import Stage
from pipeline.stages.shard import SHARD
from pipeline.stages.species import SPECIES_STAGES

# Config keys no stage's fingerprinted output depends on, and what they are instead. (`demo_world` makes the demo
# world, whose digest every stage that reads the source covers; `species` names the work dir.)
NOT_INPUTS_REDO = "nothing by themselves (how work is cut and run; the demo world's own digest is a source input)"
VIEWER_REDO = "nothing by itself (Neuroglancer links of `show` and of the release report, which `make report` rewrites)"
KEEP_FETCHED_REDO = ("nothing by itself (false: fetched files are dropped once rendered; a later re-render fetches "
                     "again only the samples it renders)")  # fmt: skip
NOT_INPUTS = {
    **dict.fromkeys(("species", "partition_rows", "bank_roots_per_partition", "timeout_s", "fetch_threads",
                     "bank_threads", "cave_requests", "max_failed_fraction"),
                    NOT_INPUTS_REDO),
    "demo_world": NOT_INPUTS_REDO,
    "viewer_voxel_nm": VIEWER_REDO,
    "keep_fetched": KEEP_FETCHED_REDO,
}  # fmt: skip
CHANGED_SAMPLES = "only of the samples whose inputs changed"
WIDENED = "only of the samples whose {what} must grow, never when it shrinks"
MARK = "<!-- invalidation table -->"
END_MARK = "<!-- /invalidation table -->"
README = Path(__file__).resolve().parents[1] / "README.md"


def _stages() -> list[tuple[str, Stage]]:
    """(name, stage) in build order, the release's stage last."""
    return [*SPECIES_STAGES.items(), (SHARD.name, SHARD)]


def invalidation() -> dict[str, list[str]]:
    """config key -> the stages that read it (whose every output it changes), in build order."""
    out: dict[str, list[str]] = {}
    for name, stage in _stages():
        for key in stage.reads:
            out.setdefault(key, []).append(name)
    return out


def _downstream(names: set[str]) -> list[str]:
    """Every stage that consumes, directly or not, one of `names`, in build order."""
    found: list[str] = []
    for name, stage in _stages():
        if name not in names and set(stage.consumes) & (names | set(found)):
            found.append(name)
    return found


def redoes(key: str) -> str:
    """What changing `key` alone redoes, in words (one cell of the README's table)."""
    if key in NOT_INPUTS:
        return NOT_INPUTS[key]
    stages = dict(_stages())
    direct = invalidation().get(key, [])
    widened = [n for n, s in stages.items() if key in s.widened_by and n not in direct]
    after = [n for n in _downstream(set(direct) | set(widened)) if n not in widened]
    first = list(direct)
    first += [f"{n} {WIDENED.format(what=stages[n].widened_what)}" for n in widened]
    then: list[tuple[bool, list[str]]] = []  # runs of stages in build order: (only changed samples, names)
    for name in after:
        keyed = stages[name].keys_samples
        if then and then[-1][0] == keyed:
            then[-1][1].append(name)
        else:
            then.append((keyed, [name]))
    words = [" and ".join(names) + f" {CHANGED_SAMPLES}" if keyed else ", ".join(names) for keyed, names in then]
    return ", ".join(first) + ("; then " + "; ".join(words) if words else "")


def table() -> str:
    """The README's table: keys grouped by what they redo, rows in the order of the config's fields, the keys that
    are no inputs last."""
    rows: dict[str, list[str]] = {}
    for key in sorted(SpeciesConfig.model_fields, key=lambda k: k in NOT_INPUTS):
        rows.setdefault(redoes(key), []).append(key)
    lines = ["| key | redoes |", "|---|---|"]
    lines += [f"| {', '.join(f'`{k}`' for k in keys)} | {text} |" for text, keys in rows.items()]
    return "\n".join(lines)


def readme_table(text: str) -> str:
    """The table between the markers of a README's text."""
    try:
        return text.split(MARK, 1)[1].split(END_MARK, 1)[0].strip()
    except IndexError:
        raise ValueError(f"README has no table between {MARK} and {END_MARK}") from None


def with_table(text: str) -> str:
    """The README's text with the derived table between the markers."""
    head, rest = text.split(MARK, 1)
    return f"{head}{MARK}\n{table()}\n{END_MARK}{rest.split(END_MARK, 1)[1]}"


def main(argv: list[str]) -> int:
    text = README.read_text()
    if argv == ["--check"]:
        if readme_table(text) == table():
            return 0
        print(f"error: the table in {README} is not the stages' declarations; run `make readme`", file=sys.stderr)
        return 1
    if argv:
        print("usage: python -m pipeline.invalidation [--check]", file=sys.stderr)
        return 2
    README.write_text(with_table(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
