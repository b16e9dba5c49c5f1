"""Adapters around the pure core: the torch token classifier and the per-text prepare/finish pipeline.

`TokenClassifier` owns the model (loaded from a local directory, optionally int8-quantised) and runs one
padded-to-longest forward pass per batch. `FinePipeline` turns a text into units + model chunks
(`prepare`) and, given the chunks' keep probabilities, into the compressed text (`finish`). Both are
synchronous and used only from the worker thread (worker.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from extproc.gateway.compression.core import keep as lingua
from extproc.gateway.compression.core.japanese import word_units
from extproc.gateway.compression.core.keep import Chunk, Span, UnitMode
from extproc.gateway.compression.offline import cl100k, force_offline

if TYPE_CHECKING:
    import torch


class Classifier(Protocol):
    """What the worker needs from a model: p(keep) per position for a batch of [CLS] ... inputs."""

    pad_id: int
    cls_id: int
    sep_id: int

    def forward(self, inputs: Sequence[Sequence[int]]) -> list[np.ndarray]: ...


class TokenClassifier:
    """An LLMLingua-2 token classifier (label 1 = keep) on one device."""

    def __init__(self, model: "torch.nn.Module", *, pad_id: int, cls_id: int, sep_id: int, device: str) -> None:
        self.model = model
        self.pad_id = pad_id
        self.cls_id = cls_id
        self.sep_id = sep_id
        self.device = device

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        quantize: bool = False,
        device: str = "cpu",
        dtype: str | None = None,
    ) -> "TokenClassifier":
        """Load from a local directory (never the hub). dtype: e.g. "float16" on GPU. quantize=True is an
        error: int8 is ONNX Runtime's (OrtClassifier)."""
        force_offline()
        import torch
        from transformers import AutoConfig, AutoModelForTokenClassification

        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        torch_dtype = getattr(torch, dtype) if dtype else torch.float32
        model = AutoModelForTokenClassification.from_pretrained(
            str(path), local_files_only=True, dtype=torch_dtype, config=config
        )
        model.eval()
        if quantize:
            # torch.ao.quantization.quantize_dynamic is deprecated (torch 2.13 warns it will be removed);
            # int8 runs on ONNX Runtime (OrtClassifier), which is also faster on this CPU.
            raise ValueError("int8 runs on the onnx backend (OrtClassifier.load(quantize=True)), not torch")
        model.to(device)
        tok = _load_tokenizer(path)
        ids = {t: tok.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]")}
        if any(v is None for v in ids.values()):
            raise ValueError(f"{path}: tokenizer lacks [PAD]/[CLS]/[SEP] (not a BERT-style LLMLingua-2 model)")
        return cls(model, pad_id=ids["[PAD]"], cls_id=ids["[CLS]"], sep_id=ids["[SEP]"], device=device)

    def forward(self, inputs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """p(keep) for every position of every input ([CLS] ... included), padded to the longest input."""
        import torch

        longest = max(len(x) for x in inputs)
        ids = torch.full((len(inputs), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(inputs), longest), dtype=torch.long)
        for i, x in enumerate(inputs):
            ids[i, : len(x)] = torch.as_tensor(x, dtype=torch.long)
            mask[i, : len(x)] = 1
        with torch.inference_mode():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            probs = torch.softmax(logits.float(), dim=-1)[..., 1].cpu().numpy()
        return [probs[i, : len(x)] for i, x in enumerate(inputs)]


def _load_tokenizer(path: str | Path):
    """The model's fast tokenizer as a bare `tokenizers.Tokenizer` (offsets, batch encode, no Python
    per-token overhead). Special-token text inside a prompt (a literal "[SEP]") is encoded as ordinary
    text, so a prompt cannot inject control tokens into the classifier."""
    force_offline()
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tok_file = Path(path) / "tokenizer.json"
    if tok_file.is_file():
        tok = Tokenizer.from_file(str(tok_file))
    else:  # vocab.txt only: let transformers convert it, then take the Rust tokenizer
        tok = Tokenizer.from_str(AutoTokenizer.from_pretrained(str(path), local_files_only=True).backend_tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    tok.encode_special_tokens = True
    return tok


@dataclass(slots=True)
class Prepared:
    """One text, tokenized and cut into model chunks. `inputs[i]` is chunk i's model input."""

    text: str
    units: list[Span]
    unit_tokens: list[list[int]]
    weights: list[int]
    chunks: list[Chunk]
    inputs: list[list[int]]
    tokens_before: int
    model_tokens: int = field(default=0)


class FinePipeline:
    """Text -> Prepared -> compressed text. Holds the tokenizer and a cl100k word-count cache."""

    def __init__(self, tokenizer, *, cls_id: int, sep_id: int, mode: UnitMode = "word", cache_size: int = 200_000) -> None:
        self.tok = tokenizer
        self.cls_id = cls_id
        self.sep_id = sep_id
        self.mode: UnitMode = mode
        self.enc = cl100k()
        self._counts: dict[str, int] = {}
        self._cache_size = cache_size

    @classmethod
    def load(cls, path: str | Path, *, mode: UnitMode = "word") -> "FinePipeline":
        tok = _load_tokenizer(path)
        return cls(tok, cls_id=tok.token_to_id("[CLS]"), sep_id=tok.token_to_id("[SEP]"), mode=mode)

    def count(self, text: str) -> int:
        """cl100k tokens of a whole text (encode_ordinary: special-token text is just text)."""
        return len(self.enc.encode_ordinary(text))

    def word_counts(self, words: Sequence[str]) -> list[int]:
        """cl100k tokens per word, as llmlingua counts them (each word encoded alone), with a cache and
        one batched tiktoken call for the misses instead of one call per word."""
        missing = list({w for w in words if w not in self._counts})
        if missing:
            if len(self._counts) + len(missing) > self._cache_size:
                self._counts.clear()
            for w, toks in zip(missing, self.enc.encode_ordinary_batch(missing, num_threads=1)):
                self._counts[w] = len(toks)
        return [self._counts[w] for w in words]

    def prepare(self, text: str) -> Prepared | None:
        """None when the text cannot be compressed safely (unsupported script, unpaired surrogates)."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return None  # lone surrogates: the Rust tokenizer cannot take them; leave the text alone
        enc = self.tok.encode(text, add_special_tokens=False)
        tokens, ids, offsets = enc.tokens, enc.ids, enc.offsets
        if self.mode == "wordpiece":
            units = lingua.wordpiece_units(tokens, offsets)
        else:
            found = word_units(text)
            if found is None:
                return None
            units = found
        unit_tokens = lingua.assign_tokens(units, offsets)
        chunks = lingua.chunk_tokens(tokens, lingua.unit_boundaries(len(tokens), unit_tokens))
        inputs = [lingua.model_input(ids[c.start : c.end], self.cls_id, self.sep_id) for c in chunks]
        return Prepared(
            text=text,
            units=units,
            unit_tokens=unit_tokens,
            weights=self.word_counts([text[s:e] for s, e in units]),
            chunks=chunks,
            inputs=inputs,
            tokens_before=self.count(text),
            model_tokens=sum(len(x) for x in inputs),
        )

    def token_probs(self, prepared: Prepared, chunk_probs: Sequence[np.ndarray]) -> np.ndarray:
        """Per-token p(keep) for the whole text from the chunks' outputs (dropping [CLS]/[SEP])."""
        parts = [p[1 : 1 + (c.end - c.start)] for c, p in zip(prepared.chunks, chunk_probs)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def keep_flags(self, prepared: Prepared, chunk_probs: Sequence[np.ndarray], rate: float) -> list[bool]:
        probs = lingua.unit_probs(self.token_probs(prepared, chunk_probs), prepared.unit_tokens)
        return lingua.decide(prepared.chunks, prepared.unit_tokens, probs, prepared.weights, rate)

    def finish(self, prepared: Prepared, chunk_probs: Sequence[np.ndarray], rate: float) -> tuple[str, int]:
        """(compressed text, its cl100k tokens). The text comes back unchanged when rate >= 1, when the
        model saw no token of it, or when the rule would keep nothing (llmlingua returns "" for a one-word
        prompt; an empty prompt is never a safe rewrite)."""
        if rate >= 1.0 or not prepared.units or not prepared.inputs:
            return prepared.text, prepared.tokens_before
        keep = self.keep_flags(prepared, chunk_probs, rate)
        if not any(keep):
            return prepared.text, prepared.tokens_before
        out = lingua.join_kept(prepared.text, prepared.units, keep)
        return out, self.count(out)

    def compress_sync(self, model: Classifier, texts: Sequence[str], rate: float) -> list[str]:
        """One-shot synchronous path (tests, eval): no batching across calls, unsupported texts unchanged."""
        out: list[str] = []
        for text in texts:
            prep = self.prepare(text)
            if prep is None or not prep.inputs:
                out.append(text)
                continue
            out.append(self.finish(prep, model.forward(prep.inputs), rate)[0])
        return out


# ---- ONNX Runtime backend ------------------------------------------------------------------------------
# Measured on this 2-core AVX2 CPU (bert-base shape, one 512-token chunk, CPU-seconds): torch fp32 3.9,
# torch dynamic int8 2.4, ORT fp32 with BERT fusions 2.0 (outputs equal to torch within 5e-7, so keep
# decisions do not change), ORT dynamic int8 1.4.


# The int8 recipe (part of the cached file's name): weights per output channel; the FFN down-projections
# (`layer.N.output.dense`) and the classifier head stay fp32. Why: keep decisions are a threshold on
# p(keep), and the units int8 flipped against fp32 (1.65% of them on the eval prompts with per-tensor
# weights everywhere) sat a median 0.004 from the threshold, while int8's error on p was 0.013 on average.
# Most of that error comes from the down-projection, whose input (the GELU output, 3,072 wide, with
# outliers) is quantised per tensor at run time; per-channel weights and the head alone moved agreement
# 98.35% -> 98.54%, with the down-projections in fp32 too 99.00% (error 0.007), at 0.62 CPU-s per
# 512-token chunk against 0.43 (all int8) and 1.04 (ORT fp32) — measured on the bert-base-shaped model,
# docs/compression.md.
INT8_RECIPE = "int8pc-ffdown-fp32"


def fp32_matmuls(onnx_file: str | Path) -> list[str]:
    """The MatMul nodes the int8 recipe keeps in fp32: every FFN down-projection and the classifier."""
    import onnx

    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    mm = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm")]
    down = [n for n in mm if "/output/dense/" in n and "/attention/" not in n]
    head = [n for n in mm if "classifier" in n] or mm[-1:]
    return [*down, *head]


def export_onnx(model_dir: str | Path, *, quantize: bool = False, cache_dir: str | Path | None = None) -> Path:
    """Export the classifier to ONNX (p(keep) per token as output), fuse BERT ops with onnxruntime's
    transformer optimizer, optionally quantise weights to int8. Cached: the export of a BERT-base model
    takes about a minute here, so it runs once per model (cache key: model path + weights mtime/size)."""
    import hashlib

    force_offline()
    model_dir = Path(model_dir).resolve()
    weights = sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin"))
    key_src = str(model_dir) + "".join(f"|{w.name}:{w.stat().st_mtime_ns}:{w.stat().st_size}" for w in weights)
    key = hashlib.sha1(key_src.encode()).hexdigest()[:16]
    cache = Path(cache_dir) if cache_dir else model_dir / "onnx"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only model directory
        import tempfile

        cache = Path(tempfile.gettempdir()) / "aigrid-onnx"
        cache.mkdir(parents=True, exist_ok=True)
    fp32 = cache / f"{key}-fp32.onnx"
    out = cache / f"{key}-{INT8_RECIPE}.onnx" if quantize else fp32
    if out.is_file():
        return out
    import os
    import warnings

    import torch
    from transformers import AutoModelForTokenClassification

    if not fp32.is_file():
        model = AutoModelForTokenClassification.from_pretrained(
            str(model_dir), local_files_only=True, dtype=torch.float32, attn_implementation="eager"
        ).eval()

        class _Probs(torch.nn.Module):
            def __init__(self, m: torch.nn.Module) -> None:
                super().__init__()
                self.m = m

            def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                return torch.softmax(self.m(input_ids=ids, attention_mask=mask).logits, dim=-1)[..., 1]

        wrapper = _Probs(model).eval()
        ids = torch.full((2, 16), 5, dtype=torch.long)
        mask = torch.ones((2, 16), dtype=torch.long)
        mask[1, 10:] = 0  # trace the padded path too
        raw = fp32.with_suffix(f".raw{os.getpid()}.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, (ids, mask), str(raw), dynamo=False, opset_version=17,
                input_names=["ids", "mask"], output_names=["p"],
                dynamic_axes={"ids": {0: "b", 1: "l"}, "mask": {0: "b", 1: "l"}, "p": {0: "b", 1: "l"}},
            )
        from onnxruntime.transformers import optimizer

        cfg = model.config
        opt = optimizer.optimize_model(
            str(raw), model_type="bert", num_heads=cfg.num_attention_heads, hidden_size=cfg.hidden_size
        )
        tmp = fp32.with_suffix(f".tmp{os.getpid()}.onnx")
        opt.save_model_to_file(str(tmp))
        os.replace(tmp, fp32)
        raw.unlink(missing_ok=True)
    if quantize:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = out.with_suffix(f".tmp{os.getpid()}.onnx")
        quantize_dynamic(
            str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
            nodes_to_exclude=fp32_matmuls(fp32),
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        os.replace(tmp, out)
    return out


class OrtClassifier:
    """Same interface as TokenClassifier (forward, pad/cls/sep ids) on an ONNX Runtime CPU session."""

    def __init__(self, session, *, pad_id: int, cls_id: int, sep_id: int) -> None:
        self.session = session
        self.pad_id = pad_id
        self.cls_id = cls_id
        self.sep_id = sep_id
        self.device = "cpu"

    @classmethod
    def load(
        cls, path: str | Path, *, quantize: bool = False, num_threads: int | None = 1,
        cache_dir: str | Path | None = None,
    ) -> "OrtClassifier":
        import onnxruntime as ort

        onnx_file = export_onnx(path, quantize=quantize, cache_dir=cache_dir)
        so = ort.SessionOptions()
        if num_threads:
            so.intra_op_num_threads = num_threads
            so.inter_op_num_threads = 1
        # ORT's pool spins between ops by default: on a shared 2-core host that burns the core the gRPC
        # loop needs (and, measured, costs more CPU per token than it saves).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(onnx_file), so, providers=["CPUExecutionProvider"])
        tok = _load_tokenizer(path)
        return cls(session, pad_id=tok.token_to_id("[PAD]"), cls_id=tok.token_to_id("[CLS]"),
                   sep_id=tok.token_to_id("[SEP]"))

    def forward(self, inputs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        longest = max(len(x) for x in inputs)
        ids = np.full((len(inputs), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(inputs), longest), dtype=np.int64)
        for i, x in enumerate(inputs):
            ids[i, : len(x)] = x
            mask[i, : len(x)] = 1
        probs = self.session.run(None, {"ids": ids, "mask": mask})[0]
        return [probs[i, : len(x)] for i, x in enumerate(inputs)]
