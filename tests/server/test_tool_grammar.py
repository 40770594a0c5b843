"""The tools' grammar (an xgrammar structural tag) admits exactly the calls the parser reads."""

from __future__ import annotations

import pytest
import xgrammar as xgr

from pyinfer.server.tool_formats import FORMATS
from pyinfer.server.tool_grammar import structural_tag, takes_nothing
from tests.server.test_tool_parser import parse


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
    two = fmt.write_calls([weather, ("search", {"q": 3})])

    def spec(mode: str, parallel: bool = True, text_schema=None) -> str:
        functions = [f for f in FUNCTIONS if mode != "named" or f["name"] == "search"]
        return structural_tag(fmt, functions, mode, parallel, text_schema)

    assert accepts(grammar_compiler, spec("required"), two)
    assert parse(fmt, two, 1)[1] == [
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "search", "arguments": {"q": 3}},
    ]
    assert not accepts(grammar_compiler, spec("required", parallel=False), two)
    assert not accepts(grammar_compiler, spec("required"), "Just text.")
    assert not accepts(grammar_compiler, spec("required"), fmt.write_calls([("search", {"q": "three"})]))
    assert not accepts(grammar_compiler, spec("named"), fmt.write_calls([weather]))
    assert accepts(grammar_compiler, spec("named"), fmt.write_calls([("search", {"q": 3})]))
    assert accepts(grammar_compiler, spec("auto"), "Just text.")
    assert accepts(grammar_compiler, spec("auto"), "Let me see. " + fmt.write_calls([weather]))
    answer = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    assert accepts(grammar_compiler, spec("auto", text_schema=answer), '{"answer": "sunny"}')
    assert not accepts(grammar_compiler, spec("auto", text_schema=answer), "Just text.")


NO_PARAMETERS = [
    None,
    {},
    {"type": "object", "properties": {}},
    {"type": "object", "properties": {}, "required": [], "additionalProperties": False},
]


@pytest.mark.parametrize("parameters", NO_PARAMETERS, ids=["left-out", "empty", "no-properties", "strict"])
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS)
def test_a_function_of_no_parameters_is_called_with_exactly_an_empty_object(
    grammar_compiler, fmt, parameters
):
    now = {"name": "now"} | ({"parameters": parameters} if parameters is not None else {})
    for mode in ("required", "auto"):
        spec = structural_tag(fmt, [now], mode, True)
        assert accepts(grammar_compiler, spec, fmt.write_calls([("now", {}), ("now", {})]))
        spaced = fmt.write_calls([("now", {})]).replace("{}", "{ }")
        assert "{ }" in spaced and not accepts(grammar_compiler, spec, spaced)
    assert parse(fmt, fmt.write_calls([("now", {})]), 1, names={"now"})[1] == [
        {"name": "now", "arguments": {}}
    ]


def test_a_schema_that_admits_arguments_is_no_empty_list():
    assert takes_nothing({"type": "object", "properties": {}, "additionalProperties": False})
    for admits in (
        {"type": "object", "additionalProperties": True},
        {"type": "object", "properties": {"a": {"type": "string"}}},
        {"type": "object", "patternProperties": {"^a": {}}},
    ):
        assert not takes_nothing(admits), admits


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS)
def test_a_length_bounded_argument_holds_no_raw_control_character(grammar_compiler, fmt):
    # xgrammar's own length rule lets a raw tab through: the call would not be JSON
    note = {
        "name": "note",
        "parameters": {"type": "object", "properties": {"text": {"type": "string", "maxLength": 5}}},
    }
    spec = structural_tag(fmt, [note], "required", False)
    assert accepts(grammar_compiler, spec, fmt.write_calls([("note", {"text": "a b"})]))
    with_tab = fmt.write_calls([("note", {"text": "a b"})]).replace("a b", "a\tb")
    assert "a\tb" in with_tab and not accepts(grammar_compiler, spec, with_tab)
    assert not accepts(grammar_compiler, spec, fmt.write_calls([("note", {"text": "abcdef"})]))
