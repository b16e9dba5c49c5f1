"""`aigrid eval-compression`: the compressor's quality on the shipped RAG QA sets (`data/`), and the tiny
LLMLingua-2-shaped models tests and benches build offline (`tinymodel.py`)."""
