"""The incremental tool-call parser on its own: every format, every chunking, markup never in content."""

from __future__ import annotations

import json

import pytest
import xgrammar as xgr

from pyinfer.server.tool_formats import FORMATS, HERMES, LLAMA3_JSON, MISTRAL, structural_tag, tool_support
from pyinfer.server.tool_parser import ToolCallParser

TOOLS = {"get_weather", "search"}
HARD = {"text": 'a}{b "quoted" </tool_call> [TOOL_CALLS] {"name": "x"} é ✓ \\ end', "n": [1, {"k": None}]}
CHUNKINGS = (1, 2, 3, 5, 7, 10_000)


def write_calls(fmt, calls: list[tuple[str, dict]], before: str = "") -> str:
    """The calls as a model writes them in `fmt` (the grammar's spelling)."""
    objects = [
        f"{fmt.call_begin}{json.dumps({'name': n, fmt.arguments_key: a}, ensure_ascii=False)}{fmt.call_end}"
        for n, a in calls
    ]
    return before + fmt.block_begin + fmt.separator.join(objects) + fmt.block_end


def parse(fmt, text: str, chunk: int, names=TOOLS) -> tuple[str, list[dict], int]:
    """Content, the calls reassembled from their deltas as a client does, and the failures counted."""
    failures = []
    parser = ToolCallParser(fmt, names, on_failure=lambda: failures.append(1))
    pieces = [parser.feed(text[i : i + chunk]) for i in range(0, len(text), chunk)] + [parser.finish()]
    content, calls = "", []
    for piece in pieces:
        content += piece.content
        for delta in piece.calls:
            if delta.name is not None:  # a call's first delta: its index, id and name
                assert delta.index == len(calls) and delta.id.startswith("call_")
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
    content, parsed, failures = parse(fmt, write_calls(fmt, calls, before), chunk)
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


TEMPLATES = {
    "hermes": "{% for t in tools %}{{ t | tojson }}{% endfor %}<tool_call>{{ messages }}",
    "llama3_json": '{% if tools %}{"name": function name, "parameters": ...}{% endif %}<|python_tag|>',
    "mistral": "{% if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}{% endif %}[TOOL_CALLS]",
}


def test_the_format_follows_the_chat_template_unless_named():
    for name, template in TEMPLATES.items():
        support = tool_support(template)
        assert (support.format.name, support.template_renders_tools) == (name, True)
    chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}"
    assert tool_support(chatml) == tool_support(None)
    assert (tool_support(chatml).format, tool_support(chatml).template_renders_tools) == (HERMES, False)
    assert tool_support(TEMPLATES["hermes"], "llama3_json").format is LLAMA3_JSON
    assert not tool_support(TEMPLATES["hermes"], "generic").template_renders_tools
    assert tool_support({"default": chatml, "tool_use": TEMPLATES["mistral"]}).format is MISTRAL


@pytest.fixture(scope="module")
def grammar_compiler(smollm2_path):
    from pyinfer.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(smollm2_path, "gguf")
    info = xgr.TokenizerInfo.from_huggingface(tokenizer.hf, vocab_size=49152, stop_token_ids=[2])
    return xgr.GrammarCompiler(info)


FUNCTIONS = [
    {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
    {
        "name": "search",
        "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}, "required": ["q"]},
    },
]


def accepts(compiler, spec: str, text: str) -> bool:
    matcher = xgr.GrammarMatcher(compiler.compile_structural_tag(spec))
    return matcher.accept_string(text) and matcher.accept_token(2) and matcher.is_terminated()


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS)
def test_the_grammar_admits_exactly_the_calls_the_parser_reads(grammar_compiler, fmt):
    weather = ("get_weather", {"city": "Paris"})
    two = write_calls(fmt, [weather, ("search", {"q": 3})])

    def spec(choice: str, parallel: bool = True, text_schema=None) -> str:
        return structural_tag(fmt, FUNCTIONS, choice, parallel, 16, text_schema)

    assert accepts(grammar_compiler, spec("required"), two)
    assert parse(fmt, two, 1)[1] == [
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "search", "arguments": {"q": 3}},
    ]
    assert not accepts(grammar_compiler, spec("required", parallel=False), two)
    assert not accepts(grammar_compiler, spec("required"), "Just text.")
    assert not accepts(grammar_compiler, spec("required"), write_calls(fmt, [("search", {"q": "three"})]))
    assert not accepts(grammar_compiler, spec("search"), write_calls(fmt, [weather]))
    assert accepts(grammar_compiler, spec("auto"), "Just text.")
    assert accepts(grammar_compiler, spec("auto"), write_calls(fmt, [weather], before="Let me see. "))
    answer = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    assert accepts(grammar_compiler, spec("auto", text_schema=answer), '{"answer": "sunny"}')
    assert not accepts(grammar_compiler, spec("auto", text_schema=answer), "Just text.")
