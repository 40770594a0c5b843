"""Which parts of a JSON schema the grammar cannot enforce. xgrammar compiles such schemas without an
error but lets replies through that break them, so a constraint that uses them is refused instead
(a 400 naming the request's field). Torch-free; below the engine and the server."""

from __future__ import annotations

import json
import logging
import math
from typing import Any
from urllib.parse import unquote

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
DATA_KEYS = ("const", "enum", "default", "examples")  # values, not schemas: never rewritten
# The formats xgrammar writes (it ignores others), and those of them whose value may be empty
KNOWN_FORMATS = frozenset(
    {
        "date-time",
        "date",
        "time",
        "duration",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "uri",
        "uri-reference",
        "uri-template",
        "uuid",
        "json-pointer",
        "relative-json-pointer",
    }
)
MAY_BE_EMPTY = frozenset({"uri-reference", "uri-template", "json-pointer"})
STEP_SPAN = 10_000  # bounds further apart than this, and xgrammar drops an integer's multipleOf
# Keywords beside which the grammar writes an object's keys freely (every key not in `properties`): it
# cannot keep such a key from coming twice, and a JSON parser keeps the last of the two
OPEN_KEYS = ("additionalProperties", "unevaluatedProperties", "patternProperties", "propertyNames")
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
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the integers xgrammar's bounds may name
# An integer's bound -> (the inclusive bound it becomes, the whole number it allows, the tighter of two
# such bounds, the 64-bit edge)
WHOLE_BOUNDS = {
    "minimum": ("minimum", math.ceil, max, INT64_MIN),
    "maximum": ("maximum", math.floor, min, INT64_MAX),
    "exclusiveMinimum": ("minimum", lambda x: math.floor(x) + 1, max, INT64_MIN),
    "exclusiveMaximum": ("maximum", lambda x: math.ceil(x) - 1, min, INT64_MAX),
}


def for_grammar(schema: Any) -> Any:
    """`schema` as the grammar is given it: a string bounded by its length alone gets the same bound as a
    `pattern` instead, which xgrammar writes without raw control characters (its length rule lets a tab
    through, which no JSON parser reads); an integer's bounds become whole numbers within 64 bits."""
    try:
        return _rewritten(schema)
    except RecursionError:  # nested too deeply to rewrite: xgrammar takes it as it is
        return schema


def _rewritten(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_rewritten(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: value if key in DATA_KEYS else _rewritten(value) for key, value in schema.items()}
    kinds = out.get("type")
    if isinstance(kinds, list) and "integer" in kinds and "number" in kinds:  # number holds every integer
        out["type"] = kinds = [kind for kind in kinds if kind != "integer"]
    if kinds == "integer" or (isinstance(kinds, list) and "integer" in kinds):
        out = _whole_bounds(out)
    lengths = {key: out.pop(key) for key in ("minLength", "maxLength") if isinstance(out.get(key), int)}
    if not lengths or "pattern" in out or out.get("format") in KNOWN_FORMATS or out.get("type") != "string":
        return {**out, **lengths}  # the check decides about lengths beside a pattern or format
    low, high = lengths.get("minLength", 0), lengths.get("maxLength", "")
    return {**out, "pattern": f"^.{{{low},{high}}}$"}


def strict_normalized(schema: Any) -> Any:
    """`schema` as OpenAI's strict mode takes it: every object's properties all required, and no keys
    beyond them where the object says nothing of others (the Responses API so reads a function's
    parameters given without `strict`)."""
    try:
        return _closed(schema)
    except RecursionError:  # nested too deeply to rewrite: enforced as written
        return schema


def _closed(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    out = dict(node)
    for key in SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: _closed(sub) for name, sub in out[key].items()}
    for key in SUBSCHEMAS:
        if isinstance(out.get(key), dict):
            out[key] = _closed(out[key])
    for key in SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_closed(sub) for sub in out[key]]
    kinds = out.get("type")
    if kinds == "object" or (isinstance(kinds, list) and "object" in kinds) or "properties" in out:
        if isinstance(out.get("properties"), dict):
            out["required"] = list(out["properties"])
        if not any(key in out for key in OPEN_KEYS):
            out["additionalProperties"] = False
    return out


def _whole_bounds(schema: dict[str, Any]) -> dict[str, Any]:
    """An integer schema's bounds as xgrammar takes them: whole numbers (it refuses a fraction as invalid,
    which JSON Schema does not: a fraction becomes the whole number it allows) within 64 bits (it refuses
    more: a bound past them that allows all of them becomes their edge)."""
    out = dict(schema)
    for key, (inclusive, allowed, tighter, edge) in WHOLE_BOUNDS.items():
        bound = out.get(key)
        if isinstance(bound, bool) or not isinstance(bound, int | float) or not math.isfinite(bound):
            continue  # not a bound: the check and the grammar say so
        if isinstance(bound, int) and INT64_MIN <= bound <= INT64_MAX:
            continue  # taken as it is
        del out[key]
        value = tighter(allowed(bound), edge)
        out[inclusive] = tighter(value, out[inclusive]) if isinstance(out.get(inclusive), int) else value
    return out


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
        return _find(schema, schema, where, set())
    except RecursionError:
        return f"nests {where} too deeply to check"
    except (TypeError, AttributeError, ValueError) as e:  # a shape no JSON schema has, in a place not read
        return f"holds in {where} what this check cannot read ({e})"


def _find(node: Any, root: Any, where: str, followed: set[int]) -> str | None:
    """`followed`: the ids of the references' targets checked already (a recursive schema refers back)."""
    if not isinstance(node, dict):
        return None
    at_most_one = isinstance(node.get("maxItems"), int) and node["maxItems"] <= 1  # unique however written
    refused = sorted(NEVER_ENFORCED & node.keys()) + (
        ["uniqueItems"] if node.get("uniqueItems") is True and not at_most_one else []
    )
    if refused:
        return f"uses `{refused[0]}` at {where}, which the grammar cannot enforce"
    ref = node.get("$ref")
    if isinstance(ref, str) and (found := _find_behind(ref, root, where, followed)):
        return found
    if problem := _open_keys_problem(node, where) or _unwritten_required(node, where):
        return problem
    if problem := _string_problem(node, where) or _values_problem(node, where) or _step_problem(node, where):
        return problem
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
    return _find_in_subschemas(node, root, where, followed)


def _find_in_subschemas(node: dict, root: Any, where: str, followed: set[int]) -> str | None:
    for key in SUBSCHEMA_MAPS:
        if isinstance(node.get(key), dict):
            for name, sub in node[key].items():
                if found := _find(sub, root, f"{where}.{key}.{name}", followed):
                    return found
    for key in SUBSCHEMAS:
        if isinstance(node.get(key), dict) and (found := _find(node[key], root, f"{where}.{key}", followed)):
            return found
    for key in SUBSCHEMA_LISTS:
        if isinstance(node.get(key), list):
            for i, sub in enumerate(node[key]):
                if found := _find(sub, root, f"{where}.{key}[{i}]", followed):
                    return found
    return None


def _find_behind(ref: str, root: Any, where: str, followed: set[int]) -> str | None:
    """What the grammar cannot enforce in the target of `ref` (met at `where`), wherever in the schema it
    lies: under `$defs` or any other key (`#/components/schemas/...`)."""
    if not ref.startswith("#"):
        return f"has the external $ref {ref!r} at {where}; only references inside the schema (#...) resolve"
    if ref != "#" and not ref.startswith("#/"):
        return (
            f"has the $ref {ref!r} at {where}, a named anchor the grammar cannot follow; refer by JSON "
            "pointer (#/$defs/name)"
        )
    target = _pointed(root, ref)
    if target is None or id(target) in followed:  # none: xgrammar says it is missing
        return None
    followed.add(id(target))  # by what it names: one target has many spellings (#/$defs/a, #/%24defs/a)
    return _find(target, root, ref, followed)


def _open_keys_problem(node: dict, where: str) -> str | None:
    """Keys the grammar writes freely (beyond `properties`) may repeat one another or a defined one (written
    escaped, as `\\u0061` for `a`), and a JSON parser keeps the last: harmless in an object of free keys
    alone, unless it needs several. `propertyNames` the grammar does not hold every key to."""
    if "propertyNames" in node:
        return f"uses `propertyNames` at {where}, which the grammar does not hold every key to"
    opened = [key for key in OPEN_KEYS if _opens(node, key)]
    min_properties = node.get("minProperties")
    several = isinstance(min_properties, int) and min_properties >= 2
    if opened and (_properties(node) or several or "patternProperties" in opened):
        return (
            f"lets the object at {where} have keys its `properties` do not name ({_names(opened)}); the "
            "grammar cannot keep such a key from repeating another (set additionalProperties to false)"
        )
    return None


def _string_problem(node: dict, where: str) -> str | None:
    """Beside a `format` the grammar knows, it enforces the format alone (a value of most formats is
    never empty, so `minLength` 1 holds anyway); beside a `pattern`, the pattern alone."""
    beside = sorted({"minLength", "maxLength", "pattern"} & node.keys())
    fmt = node.get("format")
    if fmt in KNOWN_FORMATS:
        min_length = node.get("minLength")
        if fmt not in MAY_BE_EMPTY and isinstance(min_length, int) and min_length <= 1:
            beside.remove("minLength")
        if beside:
            return f"puts {_names(beside)} beside `format` at {where}; the grammar enforces the format alone there"
    elif "pattern" in node and (lengths := [key for key in beside if key != "pattern"]):
        return f"puts {_names(lengths)} beside `pattern` at {where}; the grammar enforces the pattern alone there"
    return None


def _step_problem(node: dict, where: str) -> str | None:
    """`multipleOf` the grammar enforces on integers by a whole step, unbounded or between bounds less
    than STEP_SPAN apart."""
    if "multipleOf" not in node:
        return None
    step = node["multipleOf"]
    if node.get("type") != "integer" or not isinstance(step, int):
        return f"uses `multipleOf` at {where} with a step or on a number that may have a fraction, which the grammar cannot enforce"
    lower = next((node[key] for key in ("minimum", "exclusiveMinimum") if key in node), None)
    upper = next((node[key] for key in ("maximum", "exclusiveMaximum") if key in node), None)
    if (lower, upper) == (None, None):
        return None
    if lower is None or upper is None or not upper - lower < STEP_SPAN:
        return (
            f"puts `multipleOf` beside bounds at {where} that are not both there and less than {STEP_SPAN:,} "
            "apart; the grammar enforces the bounds alone there"
        )
    return None


def _opens(node: dict, key: str) -> bool:
    """Whether `key` lets the object at `node` have keys beyond its `properties`."""
    if key not in node:
        return False
    if key == "propertyNames":  # names the keys others let in; alone, the grammar lets any in
        return node.get("additionalProperties") is not False
    return node[key] not in (False, {}) if key == "patternProperties" else node[key] is not False


def _unwritten_required(node: dict, where: str) -> str | None:
    """A property `required` at `node` that its `properties` do not define: the grammar writes only the
    properties defined, so never that one."""
    if missing := sorted(_required(node) - _properties(node).keys()):
        return (
            f"requires `{missing[0]}` at {where}, which its `properties` do not define; the grammar writes "
            "only the properties defined"
        )
    return None


def _required(schema: dict) -> set[str]:
    names = schema.get("required")
    return {name for name in names if isinstance(name, str)} if isinstance(names, list) else set()


def _properties(schema: dict) -> dict[str, Any]:
    properties = schema.get("properties")
    return properties if isinstance(properties, dict) else {}


def _values_problem(node: dict, where: str) -> str | None:
    """A `const` or `enum` is all the grammar enforces where it stands: a keyword beside it that one of
    its values breaks (or that this check cannot read) is not enforced."""
    values = [node["const"]] if "const" in node else node.get("enum")
    if not isinstance(values, list):
        return None
    listed = "const" if "const" in node else "enum"
    for key in sorted((ASSERTIONS - {listed}) & node.keys()):
        for value in values:
            try:
                passes = _passes(value, key, node[key])
            except (TypeError, ValueError, ArithmeticError):
                passes = None
            if passes is None:
                return (
                    f"puts `{key}` beside `{listed}` at {where}; the grammar enforces the `{listed}` alone "
                    "there (list only the values allowed)"
                )
            if not passes:
                shown = json.dumps(value)
                shown = shown if len(shown) <= 40 else f"{shown[:37]}..."
                return (
                    f"allows {shown} in its `{listed}` at {where}, which its `{key}` refuses; "
                    f"the grammar enforces the `{listed}` alone there (list only the values allowed)"
                )
    return None


def _passes(value: Any, key: str, arg: Any) -> bool | None:
    """Whether `value` passes the keyword `key: arg`; None for a keyword this check does not read (a
    `pattern` among them: a client's regex is never run here, where it could take any time)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    bounds = {
        "minimum": lambda: value >= arg,
        "maximum": lambda: value <= arg,
        "exclusiveMinimum": lambda: value > arg,
        "exclusiveMaximum": lambda: value < arg,
        "multipleOf": lambda: (
            value % arg == 0
            if isinstance(value, int) and isinstance(arg, int)
            else math.isclose(value / arg, round(value / arg), abs_tol=1e-9)
        ),
    }
    sizes = {
        "minLength": (str, lambda: len(value) >= arg),
        "maxLength": (str, lambda: len(value) <= arg),
        "minItems": (list, lambda: len(value) >= arg),
        "maxItems": (list, lambda: len(value) <= arg),
        "minProperties": (dict, lambda: len(value) >= arg),
        "maxProperties": (dict, lambda: len(value) <= arg),
        "required": (dict, lambda: all(name in value for name in arg)),
    }
    if key == "type":
        return any(_is_type(value, name) for name in ([arg] if isinstance(arg, str) else arg))
    if key in ("const", "enum"):
        allowed = [arg] if key == "const" else arg
        return _json_text(value) in {_json_text(a) for a in allowed}
    if key in bounds:
        if isinstance(arg, bool):  # draft 4's boolean exclusiveMinimum
            return None
        return not number or bounds[key]()
    if key in sizes:
        kind, test = sizes[key]
        return not isinstance(value, kind) or test()
    return None


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":  # 1.0 is one too
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    kinds = {"number": int | float, "string": str, "boolean": bool, "null": type(None), "object": dict}
    if name == "number":
        return isinstance(value, kinds["number"]) and not isinstance(value, bool)
    return isinstance(value, list) if name == "array" else isinstance(value, kinds.get(name, ()))


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
    if not {_frozen(types_a), _frozen(types_b)} <= {None, frozenset({"object"})}:
        return False  # both may be something else than an object: the rest tells objects apart only
    if _breaks(a, b) and _breaks(b, a):
        return True
    for name in _required(a) & _required(b):
        values_a = _values(_resolve(_properties(a).get(name), root))
        values_b = _values(_resolve(_properties(b).get(name), root))
        if values_a is not None and values_b is not None and not values_a & values_b:
            return True
    return False


def _frozen(types: set[str] | None) -> frozenset[str] | None:
    return None if types is None else frozenset(types)


def _breaks(a: dict, b: dict) -> bool:
    """Whether every object the grammar writes for `a` breaks `b`: `b` requires a property `a` does not
    define (the grammar writes only those, unless `a` is open to others), or `b` allows no property
    beyond its own and `a` requires one of another name."""
    if not any(_opens(a, key) for key in OPEN_KEYS) and _required(b) - _properties(a).keys():
        return True
    closed = b.get("additionalProperties") is False and not b.get("patternProperties")
    return closed and bool(_required(a) - _properties(b).keys())


def _types(schema: dict) -> set[str] | None:
    declared = schema.get("type")
    names = [declared] if isinstance(declared, str) else declared if isinstance(declared, list) else None
    if names is None or not all(isinstance(name, str) for name in names):
        return None
    types = set(names)
    if not types <= PRIMITIVES | {"integer"}:
        return None
    return {"number" if t == "integer" else t for t in types}  # an integer is also a number


def _values(schema: Any) -> set[str] | None:
    """The JSON texts of the values a const or enum allows; None if it allows others."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return {_json_text(schema["const"])}
    if isinstance(schema.get("enum"), list):
        return {_json_text(value) for value in schema["enum"]}
    return None


def _json_text(value: Any) -> str:
    """One text for equal JSON values: keys sorted, and 1.0 written as 1 (JSON Schema counts them equal)."""

    def whole(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {key: whole(item) for key, item in v.items()}
        return [whole(item) for item in v] if isinstance(v, list) else v

    return json.dumps(whole(value), sort_keys=True)


def _resolve(schema: Any, root: Any) -> Any:
    """A branch given as a reference inside the schema, looked up (one level); anything else as it is."""
    if not isinstance(schema, dict) or not isinstance(schema.get("$ref"), str):
        return schema
    target = _pointed(root, schema["$ref"])
    return schema if target is None else target


def _pointed(root: Any, ref: str) -> Any:
    """What the JSON pointer `ref` (`#` or `#/a/b`) names in `root`; None if it names nothing."""
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        return None
    target: Any = root
    for part in ref[2:].split("/"):
        part = unquote(part).replace("~1", "/").replace("~0", "~")  # a URI fragment, then a pointer
        if isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        elif isinstance(target, dict) and part in target:
            target = target[part]
        else:
            return None
    return target
