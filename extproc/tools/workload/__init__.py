"""Workloads for evaluation: seeded arrival processes, RAG items that repeat and are hard, multi-turn
chat, SLA mixes. Pure: plain data out of a seed, no I/O. The grid twin (`extproc/tools/twin/`) and the live
check drive the same requests (`extproc.tools.workload.generate.generate`)."""
