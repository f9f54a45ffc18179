"""Species configs: one YAML per species, validated by the pydantic schema in schema.py."""

from config.schema import SAMPLE_TYPES, SpeciesConfig, config_path, known_species, load_config

__all__ = ["SAMPLE_TYPES", "SpeciesConfig", "config_path", "known_species", "load_config"]
