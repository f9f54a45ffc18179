"""The release: parquet shards, metadata sidecars, demo.parquet, shards.csv, dataset card, figure, verify."""
