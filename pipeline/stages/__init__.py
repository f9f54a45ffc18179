"""The stages as the runner sees them: bank, fetch, render, split, shard (and fetch+render fused)."""
