"""The stages as the runner sees them: bank, fetch, render, split (their graph: species.py) and shard."""
