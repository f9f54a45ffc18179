"""Species configs: one YAML per species, validated by the pydantic schema in schema.py."""

from config.schema import SpeciesConfig, config_path, known_species, load_config

__all__ = ["SpeciesConfig", "config_path", "known_species", "load_config"]
