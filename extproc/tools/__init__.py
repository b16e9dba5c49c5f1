"""The tools around the gateway, never imported by it: the GPU simulator (`sim`), the one workload model
(`workload`), the load tester (`loadtest`), the grid twin (`twin`), the local stack and demo (`stack`),
the compressor's quality evaluation (`evalcompress`), and what they share (`sites.py`, the one model of a simulated grid site; `tokens.py`; `percentile.py`).
They ship in their own distribution (`tools/pyproject.toml`), not in the gateway's wheel."""
