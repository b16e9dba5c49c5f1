"""The compressor's model runtime: the torch token classifier (`model.py`), the batching worker thread
(`worker.py`) or child process (`process.py`). The offline set-up of the model stack is `../offline.py`, used by the coarse step's encoder too."""
