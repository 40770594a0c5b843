"""The bases of the request models: strict about types (a string where a number belongs is a 400, as at
OpenAI); a route's body refuses fields nobody here knows, as OpenAI does, while the parts inside it ignore
them (clients send replies' objects back, with fields such as `refusal` or `annotations`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class Body(Request):
    """A route's whole body: an unknown field is a 400 ("Unrecognized request argument supplied")."""

    model_config = ConfigDict(extra="forbid", strict=True)

    def refused_fields(self, refused: dict[str, str]) -> tuple[str, str] | None:
        """(param, message) for the first of OpenAI's fields in `refused` (name: why) that this request
        sets to more than its no-op value; such fields are declared so that they are not unknown."""
        for name, why in refused.items():
            if getattr(self, name) not in NO_OP_VALUES:
                return name, why
        return None


NO_OP_VALUES: tuple[Any, ...] = (None, False, [], {})
