"""The bottom layer: errors, hashing, atomic files, the sample and release rules, the work-dir layout, the
failures ledger, dask execution. Imported by every other package; imports none of them (make lint checks)."""
