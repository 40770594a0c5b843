"""JSON schemas the structured-output tests constrain replies to: nesting, bounded arrays, enums,
anyOf, $ref, bounded numbers, required and optional fields. Strings are bounded so that a reply at
temperature 1 ends well inside max_tokens."""

from __future__ import annotations


def closed(properties: dict, required: list[str] | None = None) -> dict:
    """An object with these properties and no others, all of them required unless `required` says."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def integer(low: int, high: int) -> dict:
    return {"type": "integer", "minimum": low, "maximum": high}


NAME = {"type": "string", "minLength": 1, "maxLength": 24}
POINT = closed({"x": integer(0, 99), "y": integer(0, 99)})

SCHEMAS: dict[str, dict] = {
    "flat": closed({"name": NAME, "age": integer(0, 120)}),
    "optional_fields": closed(
        {"title": NAME, "subtitle": NAME, "pages": integer(1, 999)}, required=["title"]
    ),
    "nested": closed(
        {"user": closed({"id": integer(1, 10000), "email": NAME}), "active": {"type": "boolean"}}
    ),
    "bounded_array": closed({"tags": {"type": "array", "items": NAME, "minItems": 2, "maxItems": 3}}),
    "enum": closed({"color": {"enum": ["red", "green", "blue"]}, "size": {"enum": ["S", "M", "L"]}}),
    "any_of": closed({"value": {"anyOf": [integer(-5, 5), {"type": "boolean"}]}}),
    "ref": {
        **closed({"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}}),
        "$defs": {"point": POINT},
    },
    "number_bounds": closed(
        {"score": {"type": "number", "minimum": 0, "maximum": 1}, "count": integer(10, 20)}
    ),
    "array_of_objects": closed(
        {
            "items": {
                "type": "array",
                "items": closed({"sku": NAME, "qty": integer(1, 9)}),
                "minItems": 1,
                "maxItems": 2,
            }
        }
    ),
    "string_enum_const": closed(
        {"kind": {"const": "event"}, "level": {"type": "string", "enum": ["low", "high"]}}
    ),
    "top_level_array": {"type": "array", "items": integer(0, 9), "minItems": 1, "maxItems": 4},
    "nullable": closed({"note": {"anyOf": [NAME, {"type": "null"}]}, "ok": {"type": "boolean"}}),
}
