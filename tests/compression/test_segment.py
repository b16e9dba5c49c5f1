"""segment.py: what is protected, what is compressible, restore and rebuild."""

from __future__ import annotations

import copy

import orjson
import pytest

from extproc.gateway.compression.core.segment import (
    PROTECT_CLOSE,
    PROTECT_OPEN,
    SegmentOptions,
    atoms_of,
    is_subsequence,
    rebuild,
    restore,
    script_of,
    segment,
    units,
)

CHAT = "/v1/chat/completions"
OPTS = SegmentOptions(min_segment_tokens=10)
LONG = (
    "The Osaka plant of Kinoshita Robotics shipped many units in March according to the quarterly filing "
    "and the plant manager said that demand from logistics customers was the main driver of growth. "
) * 3


def texts(seg, compress: bool) -> list[str]:
    return [p.text for s in seg.slots for p in s.pieces if p.compress == compress]


def test_pieces_concatenate_to_the_original() -> None:
    body = {"messages": [{"role": "user", "content": "Intro.\n\nDocument [1]: " + LONG + "\n\nDocument [2]: " + LONG + "\n\nQuestion: why?"}]}
    seg = segment(CHAT, body, OPTS)
    assert seg.slots[0].text == body["messages"][0]["content"]
    assert len(seg.documents) == 2 and seg.rag
    assert seg.question == "Question: why?"


@pytest.mark.parametrize("role", ["system", "developer", "assistant", "weird"])
def test_protected_roles(role: str) -> None:
    seg = segment(CHAT, {"messages": [{"role": role, "content": LONG}]}, OPTS)
    assert not texts(seg, True) and seg.compressible_tokens == 0


def test_tool_output_and_earlier_user_context_are_compressible_documents() -> None:
    body = {"messages": [
        {"role": "user", "content": LONG},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": LONG},
        {"role": "user", "content": "So what happened in Osaka?"},
    ]}
    # With earlier turns open to rewriting (not the default), both are documents.
    seg = segment(CHAT, body, SegmentOptions(min_segment_tokens=OPTS.min_segment_tokens, rewrite_earlier_turns=True))
    assert len(seg.documents) == 2 and all(d.whole_message for d in seg.documents)
    assert seg.question == "So what happened in Osaka?" and seg.rag
    # By default the first user message, sent before the assistant's tool call, is an earlier turn: the
    # site has it in its prefix cache, so it is protected; the tool output since is new and compressible.
    seg = segment(CHAT, body, OPTS)
    assert [d.slot for d in seg.documents] == [next(i for i, s in enumerate(seg.slots) if s.path[1] == 2)]
    assert all(not p.compress for s in seg.slots if s.path[1] == 0 for p in s.pieces)


def test_earlier_turns_are_never_rewritten() -> None:
    turn = "Document [1]: " + LONG + "\n\nDocument [2]: " + LONG + "\n\nQuestion: what happened?"
    body = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": turn},
        {"role": "assistant", "content": "It rained."},
        {"role": "user", "content": turn.replace("what happened?", "and then?")},
    ]}
    seg = segment(CHAT, body, OPTS)
    assert {s.path[1] for s in seg.slots for p in s.pieces if p.compress} == {3}
    assert len(seg.documents) == 2 and seg.rag


def test_json_tool_output_is_protected() -> None:
    payload = orjson.dumps({"rows": [{"id": i, "name": "x" * 20} for i in range(20)]}).decode()
    seg = segment(CHAT, {"messages": [{"role": "tool", "content": payload}, {"role": "user", "content": "q?"}]}, OPTS)
    assert seg.compressible_tokens == 0


def test_short_messages_are_protected() -> None:
    seg = segment(CHAT, {"messages": [{"role": "user", "content": "tell me a joke about GPUs please"}]}, SegmentOptions())
    assert seg.compressible_tokens == 0


def test_last_user_message_keeps_its_last_paragraph() -> None:
    content = LONG + "\n\n" + LONG + "\n\nSummarise the above in two sentences."
    seg = segment(CHAT, {"messages": [{"role": "user", "content": content}]}, OPTS)
    assert seg.question == "Summarise the above in two sentences."
    assert seg.slots[0].pieces[-1].text.endswith("Summarise the above in two sentences.")
    assert not seg.slots[0].pieces[-1].compress


def test_single_paragraph_keeps_its_last_sentence() -> None:
    content = LONG + "What was the main driver?"
    seg = segment(CHAT, {"messages": [{"role": "user", "content": content}]}, OPTS)
    assert seg.question == "What was the main driver?"


def test_blocks_are_cut_out_and_atoms_found() -> None:
    content = (
        "Document [1]: " + LONG + "\n```python\nprint('keep me')\n```\n"
        + LONG + f"{PROTECT_OPEN}do not touch this sentence at all{PROTECT_CLOSE} " + LONG
        + " see https://example.com/a?b=1 ticket INC-4821 on 2024-05-02 <|endoftext|> [CLS] <b>x</b>\n"
        + "| a | b |\n## Heading here\n\nQuestion: what?"
    )
    seg = segment(CHAT, {"messages": [{"role": "user", "content": content}]}, OPTS)
    kept = "".join(texts(seg, False))
    for block in ["```python\nprint('keep me')\n```", f"{PROTECT_OPEN}do not touch this sentence at all{PROTECT_CLOSE}",
                  "<|endoftext|>", "[CLS]", "<b>", "</b>", "| a | b |", "## Heading here", "Question: what?"]:
        assert block in kept, block
    atoms = [p.text[a:b] for s in seg.slots for p in s.pieces if p.compress for a, b in atoms_of(p.text)]
    assert {"https://example.com/a?b=1", "INC-4821", "2024-05-02", "Osaka", "Kinoshita Robotics"} <= set(atoms)


def test_unterminated_protect_runs_to_the_end() -> None:
    content = LONG + PROTECT_OPEN + LONG
    seg = segment(CHAT, {"messages": [{"role": "user", "content": content}, {"role": "user", "content": "q?"}]}, OPTS)
    assert any(p.text.startswith(PROTECT_OPEN) and not p.compress for p in seg.slots[0].pieces)


@pytest.mark.parametrize("marker", ["Document [{i}]: ", "[{i}] ", "Passage {i}. ", "## Source {i}\n", "【文書{i}】\n",
                                    '<document id="{i}">\n', "文書{i}：", "Doc #{i}: "])
def test_document_markers(marker: str) -> None:
    content = "Use these.\n\n" + "\n\n".join(marker.format(i=i) + LONG for i in (1, 2, 3)) + "\n\nQuestion: which?"
    seg = segment(CHAT, {"messages": [{"role": "user", "content": content}]}, OPTS)
    assert len(seg.documents) == 3 and seg.question == "Question: which?"


def test_multipart_content_keeps_non_text_parts_and_order() -> None:
    parts = [
        {"type": "text", "text": LONG},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "What is in the image?"},
    ]
    body = {"model": "m", "messages": [{"role": "user", "content": parts}]}
    seg = segment(CHAT, body, OPTS)
    assert [s.path for s in seg.slots] == [("messages", 0, "content", 0, "text"), ("messages", 0, "content", 2, "text")]
    si, pi = seg.compressible()[0]
    new = rebuild(body, seg, {(si, pi): "shorter"})
    assert new["messages"][0]["content"][1] == parts[1]
    assert new["messages"][0]["content"][2] == parts[2]
    assert [p["type"] for p in new["messages"][0]["content"]] == ["text", "image_url", "text"]


def test_rebuild_copies_only_the_path() -> None:
    body = {"model": "m", "tools": [{"type": "function"}], "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": LONG + "\n\nq?"}]}
    before = copy.deepcopy(body)
    seg = segment(CHAT, body, OPTS)
    si, pi = seg.compressible()[0]
    new = rebuild(body, seg, {(si, pi): "x "})
    assert body == before  # the gateway's parsed body is not mutated
    assert new["tools"] is body["tools"] and new["messages"][0] is body["messages"][0]
    assert new["messages"][1]["content"] == "x q?"


def test_completions_prompt() -> None:
    seg = segment("/v1/completions", {"prompt": LONG + "\n\nAnswer:"}, OPTS)
    assert seg.compressible_tokens > 0 and seg.slots[0].path == ("prompt",)
    seg1 = segment("/v1/completions", {"prompt": [LONG + "\n\nAnswer:"]}, OPTS)
    assert seg1.slots[0].path == ("prompt", 0)
    # A batch of prompts, or token ids: left alone.
    assert segment("/v1/completions", {"prompt": [LONG, LONG]}, OPTS).slots == ()
    assert segment("/v1/completions", {"prompt": [1, 2, 3]}, OPTS).slots == ()


@pytest.mark.parametrize("body", [
    {}, {"messages": None}, {"messages": "x"}, {"messages": [None, 1, "x", []]}, {"messages": [{"role": "user"}]},
    {"messages": [{"role": "user", "content": None}]}, {"messages": [{"role": "user", "content": ""}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url"}, {"type": "text"}, {"type": "text", "text": 5}]}]},
    {"messages": [{"role": 5, "content": LONG}]}, {"prompt": None},
])
def test_strange_bodies_do_not_raise(body: dict) -> None:
    for path in (CHAT, "/v1/completions", "/other"):
        seg = segment(path, body, OPTS)
        assert seg.compressible_tokens == 0


# ---- restore ---------------------------------------------------------------------------------------------------
def test_units() -> None:
    assert units("don't stop") == ["don", "'", "t", "stop"]
    assert units("キャリア網AI") == ["キ", "ャ", "リ", "ア", "網", "AI"]
    assert units("👨\u200d👩\u200d👧 🇯🇵 e\u0301") == ["👨\u200d👩\u200d👧", "🇯🇵", "e\u0301"]


def test_restore_keeps_spacing_and_atoms() -> None:
    text = "  The plant, in Osaka, shipped 4,210 units.\n\nThen it closed.  "
    out = restore(text, "plant shipped units closed", [(text.index("4,210"), text.index("4,210") + 5)])
    assert out == "  plant shipped 4,210 units\n\nclosed  "


def test_restore_rejects_text_that_is_not_a_subsequence() -> None:
    assert restore("alpha beta gamma", "delta") is None
    assert restore("alpha beta gamma", "gamma alpha") is None


def test_restore_never_fuses_words() -> None:
    # Dropping the particle between two Latin words must not glue them into one word.
    assert restore("GPUのH100", "GPUH100") == "GPUのH100"
    assert restore("GPU の H100", "GPU H100") == "GPU H100"


def test_restore_character_fallback() -> None:
    # A compressor that dropped the "-" of an identifier and wrote the rest fused.
    out = restore("チケットINC-3823は起票しました", "チケットINC3823起票")
    assert out == "チケットINC-3823起票"


def test_restore_stub() -> None:
    assert restore("one two three four", None, keep_units=2) == "one two"


def test_script_of() -> None:
    assert script_of("hello world") == "en"
    assert script_of("これは日本語の文です。GPU") == "ja"
    assert script_of("") == "en"


def test_is_subsequence() -> None:
    assert is_subsequence(["a", "c"], ["a", "b", "c"])
    assert not is_subsequence(["c", "a"], ["a", "b", "c"])


# ---- the Responses API under chat's rules ------------------------------------------------------------------
RESPONSES = "/v1/responses"


def _as_responses(chat: dict) -> dict:
    """The same conversation in the Responses API's shape: the system message becomes `instructions`,
    the others input items with typed text parts (tool messages: function-call outputs)."""
    msgs = chat["messages"]
    out: dict = {"model": "m", "instructions": msgs[0]["content"], "input": []}
    for m in msgs[1:]:
        if m["role"] == "tool":
            out["input"].append({"type": "function_call_output", "call_id": "c1", "output": m["content"]})
        else:
            kind = "output_text" if m["role"] == "assistant" else "input_text"
            out["input"].append({"type": "message", "role": m["role"], "content": [{"type": kind, "text": m["content"]}]})
    return out


@pytest.mark.parametrize("earlier", [False, True])
def test_responses_input_items_are_segmented_like_the_same_chat(earlier: bool) -> None:
    chat = {"messages": [
        {"role": "system", "content": "Answer from the documents. " + LONG},
        {"role": "user", "content": LONG},
        {"role": "assistant", "content": "Noted: " + LONG},
        {"role": "tool", "content": LONG},
        {"role": "user", "content": "Intro.\n\nDocument [1]: " + LONG + "\n\nDocument [2]: " + LONG + "\n\nQuestion: why?"},
    ]}
    opts = SegmentOptions(min_segment_tokens=10, rewrite_earlier_turns=earlier)
    a, b = segment(CHAT, chat, opts), segment(RESPONSES, _as_responses(chat), opts)
    assert [[(p.text, p.compress) for p in s.pieces] for s in a.slots] == [[(p.text, p.compress) for p in s.pieces] for s in b.slots]
    assert (a.question, a.compressible_tokens, a.total_tokens, len(a.documents)) == (
        b.question, b.compressible_tokens, b.total_tokens, len(b.documents))
    assert b.compressible_tokens > 0 and b.slots[0].path == ("instructions",)
    assert not any(p.compress for p in b.slots[0].pieces)  # instructions: the system prompt, kept


def test_responses_string_input_and_rebuild() -> None:
    text = "Intro.\n\nDocument [1]: " + LONG + "\n\nDocument [2]: " + LONG + "\n\nQuestion: why?"
    body = {"model": "m", "instructions": "be brief", "input": text, "previous_response_id": "resp_1", "store": True}
    seg = segment(RESPONSES, body, OPTS)
    assert seg.question == "Question: why?" and len(seg.documents) == 2
    assert segment(CHAT, {"messages": [{"role": "user", "content": text}]}, OPTS).compressible_tokens == seg.compressible_tokens
    si = next(i for i, s in enumerate(seg.slots) if s.path == ("input",))
    pi = next(i for i, p in enumerate(seg.slots[si].pieces) if p.compress)
    out = rebuild(body, seg, {(si, pi): "short"})
    assert out["input"] != text and "short" in out["input"] and out["input"].endswith("Question: why?")
    assert {k: v for k, v in out.items() if k != "input"} == {k: v for k, v in body.items() if k != "input"}
    assert body["input"] == text  # not modified in place


def test_responses_items_we_do_not_know_are_kept() -> None:
    body = {"model": "m", "input": [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": LONG}]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": LONG},
        {"type": "message", "role": "user", "content": [{"type": "input_image", "image_url": "x"}, {"type": "input_text", "text": LONG}]},
        "not an item", {"role": ["odd"], "content": LONG},
    ]}
    seg = segment(RESPONSES, body, OPTS)
    assert [s.path for s in seg.slots] == [("input", 2, "content", 1, "text"), ("input", 4, "content")]
    assert not any(p.compress for p in seg.slots[1].pieces)
    for bad in ({"input": 3}, {"input": None, "instructions": 7}, {"input": [None, []]}):
        assert segment(RESPONSES, bad, OPTS).compressible_tokens == 0
