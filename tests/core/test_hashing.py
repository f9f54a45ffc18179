"""The one place hashes are made: canonical keys, seeded draws. Literal values: a changed separator or digest fails."""

from __future__ import annotations

from core.hashing import key_of, md5_hex, rng_for, seed_of, unit_interval


def test_canonical_key_and_digests():
    assert key_of("a", 1, None, 2.5) == "a|1|None|2.5"
    assert md5_hex("x") == "9dd4e461268c8034f5c8564e155c67a6"
    assert unit_interval("a", 1) == 0.8721468929600749
    assert seed_of("a", 1) == 16088270529115459560
    assert 0.0 <= unit_interval("anything") < 1.0


def test_seeded_draws_are_the_same_everywhere():
    assert rng_for("s", 1).random() == rng_for("s", 1).random()
    assert rng_for("s", 1).random() != rng_for("s", 2).random()
