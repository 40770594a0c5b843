"""The OpenAPI document (/openapi.json, /docs) with the request bodies that `json_body` parses: FastAPI
does not see them, since the routes read their bodies themselves (strict types, OpenAI's errors)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute

REF = "#/components/schemas/{model}"


def install_openapi(app: FastAPI, routes: list[BaseRoute]) -> None:
    """Make app.openapi() add the body schema of each of `routes` (the app's), once, on first use."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = plain()
            bodies = _body_models(routes)
            _, defs = models_json_schema([(m, "validation") for m in set(bodies.values())], ref_template=REF)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            for (path, method), model in bodies.items():
                schema["paths"][path][method]["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
                }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _body_models(routes: list[BaseRoute]) -> dict[tuple[str, str], type[BaseModel]]:
    """(path, method) -> the model its body is parsed as."""
    bodies = {}
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        for dependency in route.dependant.dependencies:
            model = getattr(dependency.call, "body_model", None)
            if model is not None:
                bodies.update({(route.path, m.lower()): model for m in route.methods})
    return bodies
