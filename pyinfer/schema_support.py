"""Which parts of a JSON schema the grammar cannot enforce. xgrammar compiles such schemas without an
error but lets replies through that break them, so a constraint that uses them is refused instead
(a 400 naming the request's field). Torch-free; below the engine and the server."""

from __future__ import annotations

import json
import logging
from typing import Any

from pyinfer.sampling_params import SamplingParamsError

log = logging.getLogger(__name__)

NEVER_ENFORCED = frozenset(
    {
        "not",
        "if",
        "then",
        "else",
        "contains",
        "minContains",
        "maxContains",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "$dynamicRef",
        "$recursiveRef",
    }
)
COMBINATORS = ("$ref", "allOf", "anyOf", "oneOf")
# Keywords that constrain a value (annotations such as title or description, and unknown keywords, do
# not): beside a combinator the grammar follows the combinator alone and drops these.
ASSERTIONS = frozenset(
    {
        "type",
        "enum",
        "const",
        "multipleOf",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "maxProperties",
        "minProperties",
        "required",
        "properties",
        "patternProperties",
        "additionalProperties",
        "unevaluatedProperties",
        "propertyNames",
        "items",
        "prefixItems",
        "additionalItems",
        "unevaluatedItems",
    }
)
SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")
SUBSCHEMAS = (
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
    "items",
    "additionalItems",
    "unevaluatedItems",
)
SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
PRIMITIVES = frozenset({"object", "array", "string", "number", "boolean", "null"})


def check_enforceable(schema: Any, param: str, strict: bool, where: str = "schema") -> None:
    """A strict schema the grammar cannot wholly enforce is refused (naming the request's `param`); one
    not strict promises best effort, as at OpenAI: the grammar enforces the rest, and the log says what
    it leaves."""
    if problem := unenforceable(schema, where):
        if strict:
            raise SamplingParamsError(param, problem)
        log.info("%s %s; not strict: the rest is enforced", param, problem)


def unenforceable(schema: Any, where: str = "schema") -> str | None:
    """The first use in `schema` (named `where`) that the grammar cannot enforce, described with where it
    is; None if every keyword it uses is enforced."""
    try:
        return _find(schema, schema, where)
    except RecursionError:
        return f"nests {where} too deeply to check"


def _find(node: Any, root: Any, where: str) -> str | None:
    if not isinstance(node, dict):
        return None
    refused = sorted(NEVER_ENFORCED & node.keys()) + (
        ["uniqueItems"] if node.get("uniqueItems") is True else []
    )
    if refused:
        return f"uses `{refused[0]}` at {where}, which the grammar cannot enforce"
    ref = node.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#"):
        return f"has the external $ref {ref!r} at {where}; only references inside the schema (#...) resolve"
    lengths = sorted({"minLength", "maxLength"} & node.keys())
    if lengths and ("pattern" in node or "format" in node):
        shape = "pattern" if "pattern" in node else "format"
        return f"puts {_names(lengths)} beside `{shape}` at {where}; the grammar enforces the {shape} alone there"
    if "multipleOf" in node and node.get("type") != "integer":
        return f"uses `multipleOf` at {where} on a number that may have a fraction, which the grammar cannot enforce"
    combinators = [key for key in COMBINATORS if key in node]
    if combinators:
        beside = sorted((ASSERTIONS & node.keys()) | set(combinators[1:]))
        if beside:
            return (
                f"puts {_names(beside)} beside `{combinators[0]}` at {where}; the grammar follows "
                f"`{combinators[0]}` alone there (move them into its branches)"
            )
    if isinstance(node.get("allOf"), list) and len(node["allOf"]) > 1:
        return f"uses `allOf` with more than one schema at {where}, which the grammar cannot enforce"
    if isinstance(node.get("oneOf"), list) and not _disjoint(node["oneOf"], root):
        return (
            f"uses `oneOf` at {where} with branches that may overlap; the grammar enforces it as "
            "`anyOf` (use anyOf, or tell the branches apart by type or by a required const property)"
        )
    return _find_in_subschemas(node, root, where)


def _find_in_subschemas(node: dict, root: Any, where: str) -> str | None:
    for key in SUBSCHEMA_MAPS:
        if isinstance(node.get(key), dict):
            for name, sub in node[key].items():
                if found := _find(sub, root, f"{where}.{key}.{name}"):
                    return found
    for key in SUBSCHEMAS:
        if isinstance(node.get(key), dict) and (found := _find(node[key], root, f"{where}.{key}")):
            return found
    for key in SUBSCHEMA_LISTS:
        if isinstance(node.get(key), list):
            for i, sub in enumerate(node[key]):
                if found := _find(sub, root, f"{where}.{key}[{i}]"):
                    return found
    return None


def _names(keys: list[str]) -> str:
    return ", ".join(f"`{key}`" for key in keys)


def _disjoint(branches: list, root: Any) -> bool:
    """Whether no value can match two of `branches`: told apart by their types, or by a property each
    requires with a const or enum of values the others do not allow."""
    resolved = [_resolve(branch, root) for branch in branches]
    return all(
        _apart(resolved[i], resolved[j], root)
        for i in range(len(resolved))
        for j in range(i + 1, len(resolved))
    )


def _apart(a: Any, b: Any, root: Any) -> bool:
    if not isinstance(a, dict) or not isinstance(b, dict):
        return False
    types_a, types_b = _types(a), _types(b)
    if types_a is not None and types_b is not None and not types_a & types_b:
        return True
    values_a, values_b = _values(a), _values(b)
    if values_a is not None and values_b is not None and not values_a & values_b:
        return True
    if _requires_unknown(a, b) or _requires_unknown(b, a):
        return True
    shared = set(a.get("required") or ()) & set(b.get("required") or ())
    for name in shared:
        values_a = _values(_resolve((a.get("properties") or {}).get(name), root))
        values_b = _values(_resolve((b.get("properties") or {}).get(name), root))
        if values_a is not None and values_b is not None and not values_a & values_b:
            return True
    return False


def _requires_unknown(a: dict, b: dict) -> bool:
    """Whether `a` requires a property that `b` cannot have: one `b` does not define, where `b` allows
    no others (the grammar compiles schemas strictly: an object has only the properties it defines)."""
    if b.get("additionalProperties", False) is not False or "patternProperties" in b:
        return False
    return bool(set(a.get("required") or ()) - set(b.get("properties") or {}))


def _types(schema: dict) -> set[str] | None:
    declared = schema.get("type")
    types = {declared} if isinstance(declared, str) else set(declared) if isinstance(declared, list) else None
    if types is None or not types <= PRIMITIVES | {"integer"}:
        return None
    return {"number" if t == "integer" else t for t in types}  # an integer is also a number


def _values(schema: Any) -> set[str] | None:
    """The JSON texts of the values a const or enum allows; None if it allows others."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return {json.dumps(schema["const"], sort_keys=True)}
    if isinstance(schema.get("enum"), list):
        return {json.dumps(value, sort_keys=True) for value in schema["enum"]}
    return None


def _resolve(schema: Any, root: Any) -> Any:
    """A branch given as a reference inside the schema, looked up (one level); anything else as it is."""
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or part not in target:
            return schema
        target = target[part]
    return target
