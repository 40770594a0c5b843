"""The bases of the request models: strict about types (a string where a number belongs is a 400, as at
OpenAI); a route's body refuses fields nobody here knows, as OpenAI does, and so do the parts that are
settings (stream_options, response_format), where a typo would otherwise do nothing; the parts that carry
conversation ignore them (clients send replies' objects back, with fields such as `refusal` or
`annotations`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"  # OpenAI's rule for the names of functions and response formats

# OpenAI's bounds: up to 16 pairs, keys of up to 64 characters, values of up to 512 (Responses keep them)
Metadata = Annotated[
    dict[Annotated[str, StringConstraints(max_length=64)], Annotated[str, StringConstraints(max_length=512)]],
    Field(max_length=16),
]
# OpenAI's range; the engine itself takes any from 0
Temperature = Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)]


UNSUPPORTED = "unsupported"  # the error type of a value understood but not served: reported before the rest


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class Settings(Request):
    """A part of a body that sets how the request is served: an unknown field in it is a 400."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class Body(Request):
    """A route's whole body: an unknown field is a 400 ("Unrecognized request argument supplied")."""

    model_config = ConfigDict(extra="forbid", strict=True)

    def refused_fields(
        self, refused: dict[str, str], also_no_op: dict[str, Any] | None = None
    ) -> tuple[str, str] | None:
        """(param, message) for the first of OpenAI's fields in `refused` (name: why) that this request
        sets to more than its no-op value (or the value `also_no_op` names for it); such fields are
        declared so that they are not unknown."""
        for name, why in refused.items():
            value = getattr(self, name)
            if not is_no_op(value) and value != (also_no_op or {}).get(name, None):
                return name, f"{name}: {why}"
        return None


def is_no_op(value: Any) -> bool:
    """Absent, false, an empty list or string. A 0 is a value, and so is {} (web_search_options: {} turns
    web search on at OpenAI)."""
    return value is None or value is False or (isinstance(value, list | str) and not value)
