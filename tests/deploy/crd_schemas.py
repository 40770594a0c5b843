"""JSON schemas for the custom resources in deploy/kubernetes, which kubernetes-validate has no schema for.

Written from the fields each project documents in its Go API types, not copied from the CRDs: the
Gateway API Inference Extension's InferencePool (inference.networking.k8s.io/v1, api/v1/inferencepool_types.go)
and Gateway API's Gateway and HTTPRoute (gateway.networking.k8s.io/v1, apis/v1/*_types.go, v1.6). They keep
each object's required fields, enums, bounds and patterns, and refuse unknown fields where the whole object
is described, so a misspelt field fails here instead of being dropped by the API server's pruning.
"""

from __future__ import annotations

PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
NAME = {"type": "string", "minLength": 1, "maxLength": 253}
DNS_LABELS = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
GROUP = {"type": "string", "maxLength": 253, "pattern": r"^$|" + DNS_LABELS[1:]}
KIND = {
    "type": "string",
    "minLength": 1,
    "maxLength": 63,
    "pattern": r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$",
}
DURATION = {"type": "string", "pattern": r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"}


def _strict(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _resource(api_version: str, kind: str, spec: dict) -> dict:
    return _strict(
        {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": {"type": "object", "required": ["name"]},
            "spec": spec,
        },
        ("apiVersion", "kind", "metadata", "spec"),
    )


def _port_required_for_service(ref: dict) -> dict:
    """Both APIs' rule: a reference to a Service (the default kind, in the core group) names its port."""
    ref["if"] = {"properties": {"kind": {"const": "Service"}, "group": {"const": ""}}}
    ref["then"] = {"required": ["port"]}
    return ref


INFERENCE_POOL = _resource(
    "inference.networking.k8s.io/v1",
    "InferencePool",
    _strict(
        {
            "selector": _strict(
                {"matchLabels": {"type": "object", "minProperties": 1, "maxProperties": 64}},
                ("matchLabels",),
            ),
            "targetPorts": {
                "type": "array",
                "minItems": 1,
                "maxItems": 8,
                "uniqueItems": True,
                "items": _strict({"number": PORT}, ("number",)),
            },
            "appProtocol": {"enum": ["http", "kubernetes.io/h2c"]},
            "endpointPickerRef": _port_required_for_service(
                _strict(
                    {
                        "group": GROUP,
                        "kind": KIND,
                        "name": NAME,
                        "port": _strict({"number": PORT}, ("number",)),
                        "failureMode": {"enum": ["FailOpen", "FailClose"]},
                    },
                    ("name",),
                )
            ),
        },
        ("selector", "targetPorts"),
    ),
)

LISTENER = _strict(
    {
        "name": {"type": "string", "maxLength": 253, "pattern": DNS_LABELS},
        "hostname": {"type": "string"},
        "port": PORT,
        "protocol": {"type": "string", "minLength": 1, "maxLength": 255},
        "tls": {"type": "object"},
        "allowedRoutes": {"type": "object"},
    },
    ("name", "port", "protocol"),
)

GATEWAY = _resource(
    "gateway.networking.k8s.io/v1",
    "Gateway",
    _strict(
        {
            "gatewayClassName": NAME,
            "listeners": {"type": "array", "minItems": 1, "maxItems": 64, "items": LISTENER},
            "addresses": {"type": "array", "maxItems": 16},
            "infrastructure": {"type": "object"},
            "allowedListeners": {"type": "object"},
            "tls": {"type": "object"},
            "defaultScope": {"type": "string"},
        },
        ("gatewayClassName", "listeners"),
    ),
)

BACKEND_REF = _port_required_for_service(
    _strict(
        {
            "group": GROUP,
            "kind": KIND,
            "name": NAME,
            "namespace": {"type": "string"},
            "port": PORT,
            "weight": {"type": "integer", "minimum": 0, "maximum": 1000000},
            "filters": {"type": "array"},
        },
        ("name",),
    )
)

PATH_MATCH = _strict(
    {
        "type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
        "value": {"type": "string", "maxLength": 1024, "pattern": "^/"},
    }
)

RULE = _strict(
    {
        "name": {"type": "string"},
        "matches": {
            "type": "array",
            "maxItems": 64,
            "items": _strict(
                {
                    "path": PATH_MATCH,
                    "headers": {"type": "array"},
                    "queryParams": {"type": "array"},
                    "method": {},
                }
            ),
        },
        "filters": {"type": "array", "maxItems": 16},
        "backendRefs": {"type": "array", "maxItems": 16, "items": BACKEND_REF},
        "timeouts": _strict({"request": DURATION, "backendRequest": DURATION}),
        "retry": {"type": "object"},
        "sessionPersistence": {"type": "object"},
    }
)

PARENT_REF = _strict(
    {
        "group": GROUP,
        "kind": KIND,
        "namespace": {"type": "string"},
        "name": NAME,
        "sectionName": {"type": "string"},
        "port": PORT,
    },
    ("name",),
)

HTTP_ROUTE = _resource(
    "gateway.networking.k8s.io/v1",
    "HTTPRoute",
    _strict(
        {
            "parentRefs": {"type": "array", "maxItems": 32, "items": PARENT_REF},
            "hostnames": {"type": "array", "maxItems": 16},
            "rules": {"type": "array", "minItems": 1, "maxItems": 16, "items": RULE},
        }
    ),
)

SCHEMAS = {
    ("inference.networking.k8s.io/v1", "InferencePool"): INFERENCE_POOL,
    ("gateway.networking.k8s.io/v1", "Gateway"): GATEWAY,
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): HTTP_ROUTE,
}
