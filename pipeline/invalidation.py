"""What a changed config key redoes, derived from the stages' own declarations: the README's table.

Each stage declares the config keys its outputs depend on (`reads`), the stages whose outputs it reads
(`consumes`), whether it keeps each sample whose own key is unchanged (`keys_samples`), and keys that redo only
the samples they widen (`widened_by`). A key redoes the stages that read it, and, after them, every stage that
consumes what those wrote: all of a stage without sample keys, only the changed samples of one with them.
Keys no output depends on are `NOT_INPUTS`.

`python -m pipeline.invalidation` rewrites the table in README.md (`make readme`); `--check` exits non-zero when
the README's table is not the one derived here (`make lint`; tests/pipeline/test_invalidation.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from config.schema import SpeciesConfig
from pipeline.build import SHARD
from pipeline.stages.bank import BankStage
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
SELECTION = "bank selection"  # the bank's last step (BankStage.finish): budgets applied to every batch's candidates
CHANGED_SAMPLES = "only of the samples whose inputs changed"
WIDENED = "only of the samples whose {what} must grow, never when it shrinks"
MARK = "<!-- invalidation table -->"
END_MARK = "<!-- /invalidation table -->"
README = Path(__file__).resolve().parents[1] / "README.md"


def _stages() -> list[tuple[str, object]]:
    """(name, stage) in build order, the shard stage last."""
    return [*SPECIES_STAGES.items(), (SHARD.name, SHARD)]


def invalidation() -> dict[str, list[str]]:
    """config key -> the stages that read it (whose every output it changes), in build order; the bank's
    selection step reads its own keys (`BankStage.select_reads`)."""
    out: dict[str, list[str]] = {}
    for name, stage in _stages():
        readers = [(name, stage.reads)] + ([(SELECTION, BankStage.select_reads)] if name == "bank" else [])
        for who, reads in readers:
            for key in reads:
                out.setdefault(key, []).append(who)
    return out


def _downstream(names: set[str]) -> list[str]:
    """Every stage that consumes, directly or not, one of `names`, in build order (the selection is the bank's)."""
    names = {"bank" if n == SELECTION else n for n in names}
    found: list[str] = []
    changed = True
    while changed:
        changed = False
        for name, stage in _stages():
            if name not in names and name not in found and set(stage.consumes) & (names | set(found)):
                found.append(name)
                changed = True
    order = [n for n, _ in _stages()]
    return sorted(found, key=order.index)


def redoes(key: str) -> str:
    """What changing `key` alone redoes, in words (one cell of the README's table)."""
    if key in NOT_INPUTS:
        return NOT_INPUTS[key]
    stages = dict(_stages())
    direct = invalidation().get(key, [])
    widened = [n for n, s in stages.items() if key in s.widened_by and n not in direct]
    after = [n for n in _downstream(set(direct) | set(widened)) if n not in direct]
    keyed = [n for n in after if stages[n].keys_samples and n not in widened]
    whole = [n for n in after if n not in keyed and n not in widened]
    first = list(direct)
    first += [f"{n} {WIDENED.format(what=stages[n].widened_what)}" for n in widened]
    then = ([" and ".join(keyed) + f" {CHANGED_SAMPLES}"] if keyed else []) + ([", ".join(whole)] if whole else [])
    return ", ".join(first) + ("; then " + "; ".join(then) if then else "")


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
