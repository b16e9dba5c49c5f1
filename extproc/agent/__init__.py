"""GPU load agents: sources (NVML, vLLM/SGLang and DCGM Prometheus endpoints) → NodeLoadReport → Redis.

Functional core: prometheus.py / dcgm.py (text → samples), combine.py (samples → report).
Thin adapters: nvml.py (pynvml), sources.py (HTTP scrape), publisher.py (Redis), runner.py (the loop).
"""
