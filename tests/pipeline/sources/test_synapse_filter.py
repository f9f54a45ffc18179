"""`synapse_score_above` (FlyWire: cleft_score > 50): the server filters the rows, the demo source the same way."""

from __future__ import annotations

import numpy as np
import pytest

from config import load_config
from core.errors import UserError
from pipeline.sources.cave import CaveSource
from pipeline.sources.demo import DemoSource
from sim.twin import TOKEN
from sim.twin.species import twin_config


def test_only_synapses_above_the_score_are_read(twin, twin_world, tiny_configs):
    demo_cfg = load_config("demo", tiny_configs)
    everything = DemoSource(demo_cfg, twin_world)
    roots = everything.proofread_roots()
    scores = np.asarray(everything.synapses(roots, roots)["cleft_score"].to_pylist(), dtype=np.float64)
    threshold = float(np.median(scores))
    filtered = {"synapse_score_above": {"cleft_score": threshold}}
    cave = CaveSource(twin_config(demo_cfg, twin.url, **filtered), token=TOKEN)
    got = cave.synapses(roots, roots)
    want = DemoSource(demo_cfg.model_copy(update=filtered), twin_world).synapses(roots, roots)
    assert sorted(got["id"].to_pylist()) == sorted(want["id"].to_pylist())
    assert 0 < got.num_rows < len(scores) and min(got["cleft_score"].to_pylist()) > threshold
    bad = CaveSource(twin_config(demo_cfg, twin.url, synapse_score_above={"no_such_score": 1.0}), token=TOKEN)
    with pytest.raises(UserError, match="no column 'no_such_score'.*synapse_score_above"):
        bad.synapses(roots, roots)
