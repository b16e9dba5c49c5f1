"""Build LLMLingua-2-shaped token classifiers offline, for tests and benchmarks.

No LLMLingua-2 checkpoint ships on PyPI, and nothing may be downloaded here, so tests and the benchmark
build their own model: a WordPiece vocabulary trained with `tokenizers` on a small generated corpus
(English + Japanese) and a `BertForTokenClassification` with 2 labels (0 = drop, 1 = keep), exactly the
head LLMLingua-2 uses. Weights are random but seeded, so keep decisions are deterministic.

The directory name always contains `bert-base-multilingual-cased`: llmlingua's word merging only
recognises that name (or `xlm-roberta-large`), and the equivalence test runs llmlingua on the same folder.
"""

from __future__ import annotations

import random
from pathlib import Path

MODEL_DIR_MARKER = "bert-base-multilingual-cased"

_EN_SUBJECTS = [
    "The gateway", "Our compressor", "The edge site", "A remote cluster", "The operator", "Each request",
    "The load balancer", "The scheduler", "Alice", "Bob", "The model", "Every stream", "The router",
]
_EN_VERBS = [
    "routes", "compresses", "measures", "forwards", "drops", "keeps", "batches", "schedules", "reports",
    "caches", "retries", "rejects", "ranks", "answers",
]
_EN_OBJECTS = [
    "the prompt tokens", "long retrieved documents", "the user question", "GPU memory", "the KV cache",
    "requests to the least loaded site", "tool outputs", "3 documents", "the answer 42", "version 1.40.0",
    "the latency budget", "the token throughput", "the Envoy filter", "important numbers like 2026",
]
_EN_TAILS = [
    "when the load rises", "before the deadline", "on every node", "in Tokyo and Osaka", "at 570 ms",
    "without blocking the loop", "with dynamic quantisation", "for the RAG pipeline", "under heavy load",
    "because compression is an optimisation", "so the GPU stays busy", "and never corrupts a prompt",
]
_JA_SENTENCES = [
    "キャリア網は分散AI推論基盤です。",
    "東京の拠点は負荷が高いので、大阪の拠点に要求を送ります。",
    "圧縮はプロンプトのトークンを減らし、GPUのメモリを節約します。",
    "私は昨日、新しいモデルを評価しました。",
    "質問に関係のない文書は先に削除されます。",
    "この要求は締め切りまでに処理されなければなりません。",
    "日本語の文は空白で区切られていないので、形態素解析が必要です。",
    "ゲートウェイは各サイトの負荷を測定して、最適な経路を選びます。",
    "答えは四十二です。",
    "ひらがなとカタカナと漢字が混ざった文章を正しく扱います。",
]


def english_sentence(rng: random.Random) -> str:
    return (
        f"{rng.choice(_EN_SUBJECTS)} {rng.choice(_EN_VERBS)} {rng.choice(_EN_OBJECTS)} "
        f"{rng.choice(_EN_TAILS)}."
    )


def japanese_sentence(rng: random.Random) -> str:
    return rng.choice(_JA_SENTENCES)


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Deterministic training sentences: mostly English, some Japanese."""
    rng = random.Random(seed)
    out = [english_sentence(rng) for _ in range(n)]
    out += _JA_SENTENCES * 3
    return out


def generate_text(n_sentences: int, seed: int = 0, japanese: bool = False) -> str:
    """A deterministic prompt-like paragraph from the same vocabulary the tiny tokenizer was trained on."""
    rng = random.Random(seed)
    pick = japanese_sentence if japanese else english_sentence
    sep = "" if japanese else " "
    return sep.join(pick(rng) for _ in range(n_sentences))


def _train_tokenizer(vocab_size: int):
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    # Same pipeline as bert-base-multilingual-cased's tokenizer.json: cased, no accent stripping, CJK
    # ideographs split one per token, punctuation split, "##" continuation pieces.
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=specials, continuing_subword_prefix="##", min_frequency=1
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _save(
    out_dir: Path,
    *,
    vocab_size: int,
    hidden: int,
    layers: int,
    heads: int,
    intermediate: int,
    model_vocab_size: int | None,
    seed: int,
) -> Path:
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    out_dir = Path(out_dir)
    if MODEL_DIR_MARKER not in str(out_dir):
        out_dir = out_dir / f"tiny-{MODEL_DIR_MARKER}"
    out_dir.mkdir(parents=True, exist_ok=True)

    raw = _train_tokenizer(vocab_size)
    fast = BertTokenizerFast(
        tokenizer_object=raw,
        unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
        do_lower_case=False, tokenize_chinese_chars=True, strip_accents=False,
        model_max_length=512,
    )
    fast.save_pretrained(str(out_dir))

    config = BertConfig(
        vocab_size=max(model_vocab_size or 0, raw.get_vocab_size()),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=512,
        num_labels=2,
        pad_token_id=raw.token_to_id("[PAD]"),
    )
    torch.manual_seed(seed)
    model = BertForTokenClassification(config)
    # Random init gives every token p(keep) ~ 0.5 with tiny spread; widen the classifier so the keep
    # probabilities spread over (0, 1) and keep decisions are far from float-noise ties.
    with torch.no_grad():
        model.classifier.weight.mul_(8.0)
    model.eval()
    model.save_pretrained(str(out_dir))
    return out_dir


def build_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """A 2-layer, 64-wide classifier: builds in a couple of seconds, forward pass in milliseconds."""
    return _save(
        Path(out_dir), vocab_size=1500, hidden=64, layers=2, heads=2, intermediate=128,
        model_vocab_size=None, seed=seed,
    )


def build_full_shape_model(out_dir: str | Path, seed: int = 0) -> Path:
    """bert-base-multilingual-cased's shape (12 layers, 768 wide, 12 heads, 3072 FFN, 119,547-row
    embedding) with random weights: the same compute per token as the real LLMLingua-2 checkpoint.
    The tokenizer is the small trained one (the real vocabulary is not available offline)."""
    return _save(
        Path(out_dir), vocab_size=3000, hidden=768, layers=12, heads=12, intermediate=3072,
        model_vocab_size=119547, seed=seed,
    )


if __name__ == "__main__":  # python -m extproc.tools.evalcompress.tinymodel OUT_DIR [--full]
    import sys

    args = sys.argv[1:]
    full = "--full" in args
    target = [a for a in args if not a.startswith("--")][0]
    print((build_full_shape_model if full else build_tiny_model)(target))
