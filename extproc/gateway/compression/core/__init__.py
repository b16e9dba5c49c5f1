"""The compressor's pure steps: segmentation, keep-rate control, the question-aware coarse step, the
content-hash caches, the LLMLingua-2 keep decision (`keep.py`), Japanese word units, and the pipeline that
chains them. No torch here: the model is handed in through the `fine.py` seam."""
