"""The schema check against xgrammar itself: what it refuses, xgrammar compiles yet lets a reply through
that breaks the schema; what it passes (pydantic's and the openai client's schemas among them),
xgrammar enforces."""

import json
from typing import Literal

import jsonschema
import pytest
import xgrammar
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field
from referencing import Registry, Resource
from xgrammar.testing import _is_grammar_accept_string

from pyinfer.schema_support import for_grammar, strict_normalized, unenforceable

PAIR = {"a": {"type": "integer"}, "b": {"type": "integer"}}
DEFS = {"A": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}


def closed(properties: dict, **beside) -> dict:
    """An object of `properties`, all required and no others (OpenAI's strict shape), with `beside` at its top."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
        **beside,
    }


# what the external reference among the refused schemas names, for jsonschema to follow
EXTERNAL = Registry().with_resource(
    "http://example.com/s.json",
    Resource.from_contents({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "integer"}),
)


def breaks(text: str, schema: dict) -> bool:
    return not jsonschema.Draft202012Validator(schema, registry=EXTERNAL).is_valid(json.loads(text))


def grammar_accepts(schema: dict, text: str) -> bool:
    grammar = xgrammar.Grammar.from_json_schema(json.dumps(schema), strict_mode=True)
    return _is_grammar_accept_string(grammar, text)


REFUSED = [  # (schema, a reply that breaks it, the keyword named)
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "[1, 1]", "uniqueItems"),
    ({"type": "string", "not": {"const": "a"}}, '"a"', "not"),
    ({"type": "array", "items": {"type": "integer"}, "contains": {"const": 5}}, "[1]", "contains"),
    (
        {"type": "object", "properties": PAIR, "dependentRequired": {"a": ["b"]}},
        '{"a": 1}',
        "dependentRequired",
    ),
    (
        {"type": "object", "properties": PAIR, "dependentSchemas": {"a": {"required": ["b"]}}},
        '{"a": 1}',
        "dependentSchemas",
    ),
    (
        {
            "type": "object",
            "properties": PAIR,
            "if": {"properties": {"a": {"const": 1}}},
            "then": {"required": ["b"]},
        },
        '{"a": 1}',
        "if",
    ),
    (
        {"allOf": [{"type": "object", "properties": PAIR, "required": ["a"]}, {"required": ["b"]}]},
        '{"a": 1}',
        "allOf",
    ),
    ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "5", "oneOf"),
    (
        {
            "oneOf": [
                {"type": "object", "properties": {"k": {"const": "x"}}},
                {"type": "object", "properties": {"k": {"const": "y"}}},
            ]
        },
        "{}",
        "oneOf",
    ),
    (
        {"$defs": DEFS, "$ref": "#/$defs/A", "properties": PAIR, "required": ["b"]},
        '{"a": 1}',
        "beside `$ref`",
    ),
    (
        {"type": "object", "properties": PAIR, "required": ["a"], "anyOf": [{"required": ["b"]}]},
        '{"b": 1}',
        "beside `anyOf`",
    ),
    (
        {"type": "object", "properties": {"x": {"$ref": "http://example.com/s.json"}}},
        '{"x": "anything"}',
        "external",
    ),
    ({"type": "string", "pattern": "^[a-z]+$", "minLength": 3}, '"a"', "beside `pattern`"),
    ({"type": "string", "format": "email", "maxLength": 5}, '"abcdef@x.com"', "beside `format`"),
    ({"type": "number", "multipleOf": 0.5}, "0.3", "multipleOf"),
    # keys beyond `properties` may come twice; a JSON parser keeps the last
    (
        {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 2},
        '{"x": 1, "x": 2}',
        "additionalProperties",
    ),
    (
        {"type": "object", "properties": PAIR, "additionalProperties": True, "minProperties": 3},
        '{"a": 1, "c": 1, "c": 2}',
        "additionalProperties",
    ),
    (
        {"type": "object", "propertyNames": {"enum": ["k"]}, "minProperties": 2},
        '{"k": 1, "k": 2}',
        "propertyNames",
    ),
    (
        {"type": "object", "patternProperties": {"^k": {"type": "string"}}, "minProperties": 2},
        '{"k": "a", "k": "b"}',
        "patternProperties",
    ),
    # what a reference's target holds, wherever it lies; a named anchor, which the grammar cannot follow
    (
        closed(
            {"tags": {"$ref": "#/components/schemas/Tags"}},
            components={
                "schemas": {"Tags": {"type": "array", "items": {"enum": ["a"]}, "uniqueItems": True}}
            },
        ),
        '{"tags": ["a", "a"]}',
        "uniqueItems",
    ),
    (closed({"a": {"$ref": "#/x"}}, x={"type": "integer", "not": {"const": 1}}), '{"a": 1}', "not"),
    (
        closed({"a": {"$ref": "#num"}}, **{"$defs": {"n": {"$anchor": "num", "type": "integer"}}}),
        '{"a": {"b": 1}}',
        "anchor",
    ),
    # a const or enum is all the grammar enforces where it stands
    ({"type": "integer", "enum": [1, 50], "maximum": 10}, "50", "`maximum`"),
    ({"type": "string", "enum": ["a", "bbbbbb"], "maxLength": 2}, '"bbbbbb"', "`maxLength`"),
    ({"type": "string", "const": "hello", "pattern": "^x"}, '"hello"', "`pattern`"),
    ({"type": "integer", "const": "hello"}, '"hello"', "`type`"),
    ({"type": "string", "pattern": "^[a-z]+$", "format": "email"}, '"bob@example.com"', "beside `format`"),
    (
        {"type": "object", "properties": PAIR, "required": ["a", "c"], "additionalProperties": False},
        '{"a": 1}',
        "requires `c`",
    ),
    ({"type": "integer", "enum": [10**17 + 1], "multipleOf": 2}, "100000000000000001", "`multipleOf`"),
    (
        {"type": "string", "enum": ["ab"], "pattern": "^a$"},
        '"ab"',
        "`pattern`",
    ),  # a client's regex is not run
    ({"type": "integer", "minimum": 0, "multipleOf": 5}, "3", "`multipleOf`"),  # one bound: the step dropped
    ({"type": "integer", "minimum": 0, "maximum": 10000, "multipleOf": 2}, "1", "`multipleOf`"),
    (
        {
            "type": "object",
            "properties": {"ab": {}},
            "additionalProperties": False,
            "propertyNames": {"maxLength": 1},
        },
        '{"ab": 1}',
        "propertyNames",
    ),
    (  # a free key may be a defined one, escaped
        {
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "additionalProperties": {"type": "integer"},
        },
        '{"a": "x", "\\u0061": 1}',
        "additionalProperties",
    ),
    ({"type": "string", "format": "uri", "maxLength": 10}, '"http://a.bc/defghijk"', "beside `format`"),
    (  # both branches may be null
        {
            "oneOf": [
                {"type": ["object", "null"], "properties": {"x": {"type": "integer"}}, "required": ["x"]},
                {"type": ["object", "null"], "properties": {"y": {"type": "integer"}}, "required": ["y"]},
            ]
        },
        "null",
        "oneOf",
    ),
    ({"oneOf": [{"const": 1}, {"const": 1.0}]}, "1", "oneOf"),  # equal values in JSON Schema
    # JSON Schema lets a branch have properties it does not name: {"x": 1} matches both
    (
        {
            "oneOf": [
                {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
                {"type": "object", "properties": {"y": {"type": "integer"}}},
            ]
        },
        '{"x": 1}',
        "oneOf",
    ),
]


@pytest.mark.parametrize(("schema", "breaking", "named"), REFUSED)
def test_what_the_grammar_lets_through_is_refused(schema, breaking, named):
    # the reason for refusing: xgrammar lets through a reply that breaks the schema
    assert grammar_accepts(schema, breaking) and breaks(breaking, schema)
    problem = unenforceable(schema)
    assert problem is not None and named in problem


class Cat(BaseModel):
    pet_type: Literal["cat"]
    meows: int


class Dog(BaseModel):
    pet_type: Literal["dog"]
    barks: float


class Fish(BaseModel):  # a union's tag with a default: not required, yet the branches stay apart
    kind: Literal["fish"] = "fish"
    fins: int


class Bird(BaseModel):
    kind: Literal["bird"] = "bird"
    wings: int


class Pond(BaseModel):
    animal: Fish | Bird = Field(discriminator="kind")


class Address(BaseModel):
    street: str = Field(min_length=1, description="the street")
    zip_code: str | None = None


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=150)
    tags: list[str] = Field(default_factory=list, max_length=3)
    home: Address = Field(description="where they live")
    pet: Cat | Dog = Field(discriminator="pet_type")
    kind: Literal["a", "b"] = "a"
    friend: "Person | None" = None


PASSED = [  # (schema, a reply that breaks it)
    (
        Person.model_json_schema(),
        '{"name": "x", "age": 200, "home": {"street": "s"}, "pet": {"pet_type": "cat", "meows": 1}}',
    ),
    (
        to_strict_json_schema(Person),
        '{"name": "x", "age": 1, "tags": [], "home": {"street": "", "zip_code": null}, "pet": {"pet_type": "dog", "meows": 1}, "kind": "a", "friend": null}',
    ),
    ({"oneOf": [{"type": "integer"}, {"type": "string"}]}, "true"),
    (Pond.model_json_schema(), '{"animal": {"fins": 1, "wings": 2}}'),
    ({"allOf": [{"$ref": "#/$defs/A"}], "$defs": DEFS, "description": "one schema, annotated"}, "{}"),
    (
        {"type": "object", "properties": {"t": {"type": "array", "uniqueItems": False, "maxItems": 1}}},
        '{"t": [1, 2]}',
    ),
    (  # closed branches: {"x"} breaks the second (no y), {"x", "y"} the first (y is not its own)
        {
            "oneOf": [
                closed({"x": {"type": "integer"}}),
                closed({"x": {"type": "integer"}, "y": {"type": "integer"}}),
            ]
        },
        '{"x": 1, "y": "s"}',
    ),
    ({"type": "string", "enum": ["a", "b"], "maxLength": 1}, '"c"'),  # every listed value passes the rest
    (
        {"type": "object", "additionalProperties": {"type": "integer"}},
        '{"a": "x"}',
    ),  # free keys alone (dict[str, int])
    ({"type": "string", "format": "uri", "minLength": 1}, '""'),  # a URI is never empty (pydantic's AnyUrl)
    ({"type": "string", "format": "password", "minLength": 8}, '"abc"'),  # a format xgrammar ignores
    ({"type": "integer", "minimum": 0, "maximum": 100, "multipleOf": 5}, "3"),
    ({"type": "integer", "const": 5, "minimum": 0}, "6"),
    (closed({"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}}), '{"next": 1}'),  # refers to itself
    (
        closed({"a": {"$ref": "#/components/schemas/A%20B"}}, components={"schemas": {"A B": DEFS["A"]}}),
        '{"a": {}}',
    ),
]


@pytest.mark.parametrize(("schema", "breaking"), PASSED)
def test_what_the_grammar_enforces_is_passed(schema, breaking):
    assert unenforceable(schema) is None
    assert breaks(breaking, schema) and not grammar_accepts(schema, breaking)


def test_the_problem_says_where_it_is():
    schema = {"type": "object", "properties": {"tags": {"type": "array", "items": {"not": {"const": 1}}}}}
    assert unenforceable(schema, "lookup.parameters") == (
        "uses `not` at lookup.parameters.properties.tags.items, which the grammar cannot enforce"
    )


ODD = [  # shapes no valid schema has, in places the check reads: a finding or none, never an exception
    {"type": "object", "properties": {"a": {"type": "integer"}}, "required": [{}]},
    {"type": "object", "properties": [1, 2], "required": ["a"]},
    {"oneOf": [{"type": "object", "required": [{}]}, {"type": ["string", {}]}]},
    {"type": "object", "properties": {"a": True, "b": False}},
    {"type": {"x": 1}, "enum": [1]},
    {"type": "object", "additionalProperties": [1]},
    {"items": [True, {"type": "integer"}]},
    {"$ref": 5},
    {"enum": [{"a": [1]}], "required": [[1]]},
    [1, 2],
    None,
]


@pytest.mark.parametrize("schema", ODD)
def test_odd_shapes_are_read_without_an_exception(schema):
    # the check's last resort (an exception caught) names what it "cannot read": none of these reach it
    assert "cannot read" not in (unenforceable(schema) or "")


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "maxLength": 5},
        {"type": "string", "minLength": 2, "maxLength": 5},
        {
            "type": "object",
            "properties": {"s": {"anyOf": [{"type": "string", "minLength": 2, "maxLength": 5}]}},
        },
    ],
)
def test_a_length_bounded_string_is_given_to_the_grammar_without_raw_control_characters(schema):
    wrap = (lambda text: f'{{"s": {text}}}') if schema["type"] == "object" else (lambda text: text)
    tab = wrap('"a\tb"')  # a raw tab: no JSON parser reads it
    assert grammar_accepts(schema, tab)  # xgrammar's length rule lets it through
    given = for_grammar(schema)
    assert not grammar_accepts(given, tab)
    assert grammar_accepts(given, wrap('"ab"')) and grammar_accepts(given, wrap('"abcde"'))
    assert not grammar_accepts(given, wrap('"abcdef"'))


@pytest.mark.parametrize(
    ("schema", "allowed", "breaking"),
    [
        ({"type": "integer", "minimum": 0.5, "maximum": 3.5}, ["1", "3"], ["0", "4"]),
        ({"type": "integer", "exclusiveMinimum": -1.5, "exclusiveMaximum": 2.0}, ["-1", "1"], ["-2", "2"]),
        ({"type": "integer", "minimum": 3, "exclusiveMinimum": 0.5}, ["3"], ["2"]),  # the tighter holds
        ({"type": ["integer", "null"], "maximum": 2.5}, ["2", "null"], ["3"]),
        ({"type": ["integer", "number"], "minimum": 0.5}, ["0.7", "1"], ["0"]),  # as a number
        (
            {"type": "integer", "minimum": -1e20, "maximum": 10**30},
            ["-5", str(2**63 - 1)],
            [],
        ),  # past 64 bits
    ],
)
def test_an_integer_s_bounds_reach_the_grammar_as_whole_numbers_it_takes(schema, allowed, breaking):
    with pytest.raises(RuntimeError):  # xgrammar refuses them; JSON Schema does not
        grammar_accepts(schema, allowed[0])
    given = for_grammar(schema)
    assert all(grammar_accepts(given, text) and not breaks(text, schema) for text in allowed)
    assert all(not grammar_accepts(given, text) and breaks(text, schema) for text in breaking)


def test_unique_items_of_at_most_one_item_are_passed():
    schema = {"type": "array", "items": {"type": "integer"}, "uniqueItems": True, "maxItems": 1}
    assert unenforceable(schema) is None
    assert breaks("[1, 1]", schema) and not grammar_accepts(schema, "[1, 1]")  # maxItems holds it


def test_strict_normalized_closes_every_object_and_requires_every_property():
    item = {"type": "object", "properties": {"properties": {"type": "string"}, "n": {"type": "integer"}}}
    choice = {"anyOf": [{"properties": {"a": {"const": {"properties": {}}}}}, {"type": "null"}]}
    schema = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/item"}}, "choice": choice},
        "required": ["items"],
        "$defs": {"item": item},
    }
    out = strict_normalized(schema)
    assert out["required"] == ["items", "choice"] and out["additionalProperties"] is False
    assert out["$defs"]["item"] == item | {"required": ["properties", "n"], "additionalProperties": False}
    branch = out["properties"]["choice"]["anyOf"][0]
    assert branch["required"] == ["a"] and branch["properties"]["a"] == {"const": {"properties": {}}}  # data
    assert out["properties"]["items"] == schema["properties"]["items"]  # an array, and a $ref: untouched
    assert unenforceable(out) is None
    free = {"type": "object", "properties": {"k": {}}, "additionalProperties": {"type": "integer"}}
    assert strict_normalized(free) == free | {"required": ["k"]}  # says what other keys may be: kept
    assert schema["required"] == ["items"] and "additionalProperties" not in item  # the input unchanged
