"""The incremental tool-call parser on its own: every format, every chunking, markup never in content."""

from __future__ import annotations

import json

import pytest

from pyinfer.server.tool_formats import FORMATS, HERMES, LLAMA3_JSON, MISTRAL
from pyinfer.server.tool_parser import ToolCallParser

TOOLS = {"get_weather", "search"}
HARD = {"text": 'a}{b "quoted" </tool_call> [TOOL_CALLS] {"name": "x"} é ✓ \\ end', "n": [1, {"k": None}]}
CHUNKINGS = (1, 2, 3, 5, 7, 10_000)


def parse(fmt, text: str, chunk: int, names=TOOLS, besides_calls="text") -> tuple[str, list[dict], int]:
    """Content, the calls reassembled from their deltas as a client does, and the failures counted."""
    failures = []
    parser = ToolCallParser(fmt, names, lambda: failures.append(1), besides_calls)
    pieces = [parser.feed(text[i : i + chunk]) for i in range(0, len(text), chunk)] + [parser.finish()]
    content, calls = "", []
    for piece in pieces:
        content += piece.content
        for delta in piece.calls:
            if delta.name is not None:  # a call's first delta: its index, id and name
                assert delta.index == len(calls) and delta.id
                calls.append({"id": delta.id, "name": delta.name, "arguments": ""})
            calls[delta.index]["arguments"] += delta.arguments
    return (
        content,
        [{"name": c["name"], "arguments": json.loads(c["arguments"])} for c in calls],
        len(failures),
    )


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS)
@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_calls_reassemble_at_any_chunking_and_no_markup_reaches_content(fmt, chunk):
    calls = [("get_weather", {"city": "Paris", "unit": "celsius"}), ("search", HARD)]
    before = "Let me look that up. \n" if fmt is not MISTRAL else "Checking. "
    content, parsed, failures = parse(fmt, before + fmt.write_calls(calls), chunk)
    assert parsed == [{"name": n, "arguments": a} for n, a in calls]
    assert content == before.strip()
    assert failures == 0


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_text_without_calls_is_content_unchanged(chunk):
    text = 'Tags like <tool or {"name" in prose, [TOOL_ and <tool_cal stay text.'
    for fmt in FORMATS.values():
        content, calls, _ = parse(fmt, text, chunk)
        assert (content, calls) == (text, [])
    assert (
        parse(HERMES, "  \n leading and trailing space \n", chunk)[0] == "  \n leading and trailing space \n"
    )


def test_llama_calls_after_python_tag_and_keys_in_any_order():
    text = '<|python_tag|>{"parameters": {"q": "x"}, "name": "search"}; {"name": "get_weather", "parameters": {}}'
    for chunk in CHUNKINGS:
        assert parse(LLAMA3_JSON, text, chunk) == (
            "",
            [{"name": "search", "arguments": {"q": "x"}}, {"name": "get_weather", "arguments": {}}],
            0,
        )


def test_arguments_given_as_a_json_string_or_left_out():
    text = '[TOOL_CALLS][{"name": "search", "arguments": "{\\"q\\": 1}"}, {"name": "get_weather"}]'
    assert parse(MISTRAL, text, 3)[1] == [
        {"name": "search", "arguments": {"q": 1}},
        {"name": "get_weather", "arguments": {}},
    ]


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_markup_that_is_not_a_call_of_a_known_tool_is_content_and_counted(chunk):
    text = '<tool_call>\n{"name": "delete_everything", "arguments": {}}\n</tool_call> done'
    content, calls, failures = parse(HERMES, text, chunk)
    assert (content, calls, failures) == (text, [], 1)
    broken = "<tool_call>\nnot json at all</tool_call>"
    assert parse(HERMES, broken, chunk) == (broken, [], 1)


def test_a_call_cut_off_keeps_what_was_streamed():
    parser = ToolCallParser(HERMES, TOOLS)
    first = parser.feed('Hi <tool_call>\n{"name": "search", "arguments": {"q": "unfini')
    last = parser.finish()
    assert first.content == "Hi"
    assert [(d.name, d.arguments) for d in first.calls] == [("search", '{"q": "unfini')]
    assert (last.content, last.calls) == ("", [])


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_a_call_cut_off_before_its_name_leaves_no_markup_in_content(chunk):
    """Where the grammar makes every trigger open a call, what a cut-off call wrote is markup; where the
    reply may be JSON instead (a schema beside the tools), it may be that JSON's text, until a call came."""
    call = ("get_weather", {"city": "Paris"})
    cut = '{"name": "sea'
    weather = [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert parse(HERMES, f"Hi <tool_call>\n{cut}", chunk) == ("Hi", [], 0)
    assert parse(HERMES, f"{HERMES.write_calls([call])}\n<tool_call>\n{cut}", chunk) == ("", weather, 0)
    assert parse(MISTRAL, f"[TOOL_CALLS][{cut}", chunk) == ("", [], 0)
    assert parse(LLAMA3_JSON, f"<|python_tag|>{cut}", chunk) == ("", [], 0)
    assert parse(LLAMA3_JSON, f"{LLAMA3_JSON.write_calls([call])}; {cut}", chunk) == ("", weather, 0)
    assert parse(LLAMA3_JSON, cut, chunk) == ("", [], 0)
    assert parse(LLAMA3_JSON, cut, chunk, besides_calls="json") == (cut, [], 0)
    text = '{"answer": "use <tool_call>'
    assert parse(HERMES, text, chunk, besides_calls="json") == (text, [], 0)
    after = f"{LLAMA3_JSON.write_calls([call])}; {cut}"
    assert parse(LLAMA3_JSON, after, chunk, besides_calls="json") == ("", weather, 0)
    for start in ("<", "<tool_", " \n"):  # what may still become a trigger: text, unless only calls may come
        assert parse(HERMES, f"Hi{start}", chunk)[0] == f"Hi{start}"
        assert parse(HERMES, start, chunk, besides_calls="nothing") == ("", [], 0)
    for start in ("<", "\n<tool_"):  # once a call came, a trigger's start is the next call, cut off
        for besides in ("text", "json"):
            after_call = f"{HERMES.write_calls([call])}{start}"
            assert parse(HERMES, after_call, chunk, besides_calls=besides) == ("", weather, 0)
            assert parse(HERMES, f"{HERMES.write_calls([call])}\nBye {start}", chunk)[0] == "Bye"


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_text_after_calls_is_content_and_separators_are_not(chunk):
    call = ("get_weather", {"city": "Paris"})
    assert parse(LLAMA3_JSON, LLAMA3_JSON.write_calls([call]) + "; done;", chunk)[0] == "done;"
    assert parse(HERMES, HERMES.write_calls([call]) + "\nBye.\n", chunk)[0] == "Bye.\n"
    assert parse(HERMES, HERMES.write_calls([call, call]) + "\n", chunk)[0] == ""


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_a_failed_call_after_a_good_one_is_given_back_whole(chunk):
    good = '{"name": "search", "arguments": {}}'
    bad = '{"name": "zzz", "arguments": {}}'
    content, calls, failures = parse(MISTRAL, f"[TOOL_CALLS][{good}, {bad}]", chunk)
    assert calls == [{"name": "search", "arguments": {}}] and failures == 1
    assert content == f"{bad}]"
    twice = '<tool_call>\n{"name": "search", "parameters": {"a": 1}, "arguments": {"b": 2}}\n</tool_call>'
    content, calls, failures = parse(HERMES, twice, chunk)
    assert failures == 1 and content == twice.removeprefix("<tool_call>\n")
    assert calls == [{"name": "search", "arguments": {"a": 1}}]  # as it was streamed


def test_call_ids_follow_the_format():
    for fmt in FORMATS.values():
        ids = {fmt.call_id() for _ in range(50)}
        assert len(ids) == 50
        for call_id in ids:
            if fmt is MISTRAL:  # its templates take nine letters and digits only
                assert len(call_id) == 9 and call_id.isalnum()
            else:
                assert call_id.startswith("call_") and len(call_id) == 29
