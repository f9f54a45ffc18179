import pytest

from config import known_species, load_config
from core.errors import UserError
from core.samples import SAMPLE_TYPES

REAL = ("fly", "mouse", "human", "zebrafish")


def test_every_species_config_loads():
    assert set(known_species()) >= {"demo", *REAL}
    for species in known_species():
        cfg = load_config(species)
        assert cfg.species == species
        assert cfg.as_of is not None or cfg.materialization_version is not None


def test_real_species_carry_contract_endpoints():
    fly = load_config("fly")
    assert fly.datastack == "flywire_fafb_public"
    assert fly.em_cloudpath.endswith("flywire/fafbv14")
    assert fly.seg_cloudpath.startswith("graphene://") and "flywire_public" in fly.seg_cloudpath
    mouse = load_config("mouse")
    assert mouse.datastack == "minnie65_public" and mouse.proofread_table_name == "proofreading_status_and_strategy"
    assert mouse.proofread_root_must_equal == "valid_id"
    assert fly.synapse_table == "valid_synapses_nt_np_v6" and fly.proofread_root_must_equal is None
    assert load_config("human").datastack == "h01_c3_flat"
    assert load_config("zebrafish").datastack == "fish1_full"
    assert load_config("human").proofread_from_delta_roots


def test_demo_budgets_cover_every_type():
    budgets = load_config("demo").budgets.model_dump()
    assert set(budgets) == set(SAMPLE_TYPES)
    assert all(b >= 60 for b in budgets.values())


def _write(tmp_path, text):
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    return tmp_path


BASE = """species: demo
source: demo
em_cloudpath: file://x
seg_cloudpath: file://y
em_window_nm: 1000
extent_nm: [1000, 2000]
as_of: "2026-01-01T00:00:00Z"
demo_world: {n_sites: 2}
"""


def test_unknown_key_names_file_and_key(tmp_path):
    d = _write(tmp_path, BASE + "shard_byte: 5\n")
    with pytest.raises(UserError, match=r"demo\.yaml.*'shard_byte': unknown key"):
        load_config("demo", d)


def test_bad_value_names_key(tmp_path):
    d = _write(tmp_path, BASE.replace("[1000, 2000]", "[3000, 2000]"))
    with pytest.raises(UserError, match="'extent_nm'"):
        load_config("demo", d)
    d = _write(tmp_path, BASE + "budgets: {merge_edit: -1}\n")
    with pytest.raises(UserError, match="'budgets.merge_edit'"):
        load_config("demo", d)


def test_a_proofread_table_is_a_name_or_a_name_with_its_rule(tmp_path):
    d = _write(tmp_path, BASE + "proofread_table: {name: t, root_must_equal: valid_id}\n")
    cfg = load_config("demo", d)
    assert (cfg.proofread_table_name, cfg.proofread_root_must_equal) == ("t", "valid_id")
    d = _write(tmp_path, BASE + "proofread_table: t\n")
    plain = load_config("demo", d)
    assert (plain.proofread_table_name, plain.proofread_root_must_equal) == ("t", None)
    d = _write(tmp_path, BASE + "proofread_table: {name: t, valid: x}\n")
    with pytest.raises(UserError, match=r"demo\.yaml.*'proofread_table\.ProofreadTable\.valid': unknown key"):
        load_config("demo", d)


def test_unpinned_time_is_rejected(tmp_path):
    d = _write(tmp_path, BASE.replace('as_of: "2026-01-01T00:00:00Z"\n', ""))
    with pytest.raises(UserError, match="never made at 'now'"):
        load_config("demo", d)


def test_iso_timestamp_is_epoch_seconds(tmp_path):
    cfg = load_config("demo", _write(tmp_path, BASE))
    assert cfg.as_of == 1767225600.0


def test_unknown_species_lists_known():
    with pytest.raises(UserError, match="unknown species 'cat'.*demo"):
        load_config("cat")


def test_invalid_yaml(tmp_path):
    d = _write(tmp_path, "species: [demo\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config("demo", d)


def test_a_species_may_lose_at_most_two_percent_of_a_window_to_absent_chunks_unless_it_says_otherwise():
    """README: `max_missing_fraction` (config, default 0.02); no shipped species config changes it."""
    from config.schema import SpeciesConfig

    assert SpeciesConfig.model_fields["max_missing_fraction"].default == 0.02
    assert all(load_config(species).max_missing_fraction == 0.02 for species in known_species())
