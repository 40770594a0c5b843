"""The base of every request model: strict about types (a string where a number belongs is a 400, as at
OpenAI), fields it does not know ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
