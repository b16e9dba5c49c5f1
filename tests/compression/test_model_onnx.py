"""The ONNX Runtime backend: fp32 keeps exactly the words the torch path keeps; int8 runs end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from extproc.gateway.compression.runtime.model import FinePipeline, OrtClassifier, TokenClassifier  # noqa: E402
from extproc.tools.evalcompress.tinymodel import generate_text  # noqa: E402


def test_onnx_fp32_same_decisions_as_torch(tiny_model_dir: Path, tmp_path: Path) -> None:
    torch_model = TokenClassifier.load(tiny_model_dir)
    ort_model = OrtClassifier.load(tiny_model_dir, cache_dir=tmp_path)
    pipe = FinePipeline.load(tiny_model_dir, mode="wordpiece")
    for n, seed in ((4, 0), (60, 1)):
        prep = pipe.prepare(generate_text(n, seed=seed))
        a, b = torch_model.forward(prep.inputs), ort_model.forward(prep.inputs)
        for rate in (0.33, 0.5):
            assert pipe.keep_flags(prep, a, rate) == pipe.keep_flags(prep, b, rate)
    assert len(list(tmp_path.glob("*.onnx"))) == 1  # cached export
    q = OrtClassifier.load(tiny_model_dir, quantize=True, cache_dir=tmp_path)
    text = generate_text(10, seed=5)
    out = FinePipeline.load(tiny_model_dir).compress_sync(q, [text], 0.5)[0]
    it = iter(text.split())
    assert out != text and all(w in it for w in out.split())


async def test_int8_is_onnx_runtime_not_deprecated_torch(tiny_model_dir: Path, tmp_path: Path) -> None:
    """torch's dynamic quantisation is deprecated: int8 is ORT's, chosen by backend "auto" on CPU."""
    from extproc.gateway.compression.runtime.worker import BatchingCompressor  # noqa: PLC0415

    with pytest.raises(ValueError, match="onnx"):
        TokenClassifier.load(tiny_model_dir, quantize=True)
    int8 = BatchingCompressor.from_path(tiny_model_dir, quantize=True, onnx_cache_dir=tmp_path)
    fp32 = BatchingCompressor.from_path(tiny_model_dir)
    assert isinstance(int8.model, OrtClassifier) and isinstance(fp32.model, TokenClassifier)
    await int8.close()
    await fp32.close()
