"""cb2-build: builds the ConnectomeBench2 dataset (bank -> fetch -> render -> split -> shard -> verify)."""

__version__ = "0.1.0"
