"""Workloads for evaluation: seeded arrival processes, RAG items that repeat and are hard, multi-turn
chat, SLA mixes. Pure: plain data out of a seed, no I/O. The grid twin (`extproc/twin/`) and the live
check drive the same requests (`extproc.workload.generate.generate`)."""
