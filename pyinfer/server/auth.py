"""API keys: who may call the API, and under which name their use is counted and logged.

Keys come from `--api-key` (any number of them) and `--api-key-file`: one key a line as
`key [name [requests-per-minute [tokens-per-minute]]]`, `#` starting a comment; a key without a name is
named by a fingerprint of itself (`key-` and 8 hex digits of its HMAC under a salt drawn for the run, so
that the name tells nothing of a weak key). The file is read again
whenever it changes, so that a key taken out of it stops working without a restart (a file that no
longer parses keeps the keys it last gave, and says why in the log). Keys are compared in constant
time, against every known key whatever matched.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from pyinfer.server.protocol import ErrorDetail, ErrorResponse

log = logging.getLogger(__name__)

OPEN_PATHS = ("/health", "/ready", "/version", "/", "/favicon.ico")  # /metrics too, unless protected


@dataclass(frozen=True)
class ApiKey:
    name: str  # what logs and metrics show: never the key itself
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


class ApiKeys:
    def __init__(self, keys: list[str], file: str | None = None, salt: str = ""):
        if len(set(keys)) != len(keys):
            raise ValueError("a key is given twice by --api-key (or PYINFER_API_KEY)")
        self._salt = salt
        self._given = {key: ApiKey(fingerprint(key, salt)) for key in keys}
        self._file = Path(file) if file else None
        self._file_keys: dict[str, ApiKey] = {}
        self._file_stamp: tuple[int, int, int] | None = None
        if self._file is not None:  # a bad file fails start-up
            try:
                text = self._file.read_text()
            except OSError as e:
                raise ValueError(f"--api-key-file (or PYINFER_API_KEY_FILE) {file}: {e.strerror}") from None
            self._file_keys = self._checked(parse_key_file(text, self._file, salt))
            self._file_stamp = self._stamp()

    @property
    def enabled(self) -> bool:
        return bool(self._given) or self._file is not None

    @property
    def count(self) -> int:
        """The keys that work now."""
        return len(self._given) + len(self._file_keys)

    def describe(self) -> str:
        given = f"{len(self._given)} given by flag or variable" if self._given else ""
        read = f"{len(self._file_keys)} from {self._file}" if self._file is not None else ""
        return ", ".join(part for part in (given, read) if part)

    def lookup(self, token: str) -> ApiKey | None:
        """The key `token` is, if it is one."""
        self._reload_if_changed()
        found = None
        for key, info in (*self._given.items(), *self._file_keys.items()):
            if hmac.compare_digest(key.encode(), token.encode()):
                found = info
        return found

    def _stamp(self) -> tuple[int, int, int] | None:
        """What tells a changed file: its modification time (ns), inode (a file replaced) and size."""
        try:
            st = os.stat(self._file)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_ino, st.st_size

    def _checked(self, file_keys: dict[str, ApiKey]) -> dict[str, ApiKey]:
        """The file's keys, if neither they nor their names are the flags' keys' (limits, stored
        Responses and logs go by name)."""
        if file_keys.keys() & self._given.keys():
            raise ValueError("a key in the file is given by --api-key too")
        clash = {k.name for k in file_keys.values()} & {k.name for k in self._given.values()}
        if clash:
            raise ValueError(f"key names {sorted(clash)} are taken by --api-key keys")
        return file_keys

    def _reload_if_changed(self) -> None:
        if self._file is None or (stamp := self._stamp()) == self._file_stamp:
            return
        self._file_stamp = stamp
        try:
            self._file_keys = self._checked(parse_key_file(self._file.read_text(), self._file, self._salt))
            log.info("API key file %s read again: %d keys", self._file, len(self._file_keys))
        except FileNotFoundError:
            self._file_keys = {}
            log.warning("API key file %s is gone: its keys no longer work", self._file)
        except (OSError, ValueError) as e:
            log.error("API key file %s not read again, its earlier keys kept: %s", self._file, e)


def parse_key_file(text: str, path: Path, salt: str = "") -> dict[str, ApiKey]:
    keys: dict[str, ApiKey] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = uncommented(line.split())
        if not fields:
            continue
        if any("#" in field for field in fields):  # a comment written without a space before it, perhaps
            log.warning("%s:%d: a `#` inside a field is part of it; a comment begins with ` #`", path, number)
        if len(fields) > 4:
            raise ValueError(f"{path}:{number}: expected `key [name [rpm [tpm]]]`, got {len(fields)} fields")
        try:
            limits = [int(f) for f in fields[2:]]
        except ValueError:
            raise ValueError(f"{path}:{number}: the limits must be whole numbers") from None
        if any(limit < 1 for limit in limits):
            raise ValueError(f"{path}:{number}: the limits must be at least 1")
        if fields[0] in keys:
            raise ValueError(f"{path}:{number}: this key is given on an earlier line too")
        name = fields[1] if len(fields) > 1 else fingerprint(fields[0], salt)
        if any(k.name == name for k in keys.values()):
            raise ValueError(
                f"{path}:{number}: the name {name!r} is given twice (limits and logs go by name)"
            )
        keys[fields[0]] = ApiKey(name, *limits)
    return keys


def uncommented(fields: list[str]) -> list[str]:
    """A key file line's fields before its comment, which begins with a field that begins with `#`: a `#`
    inside a key is the key's (cutting the key there would let its start in, and lose its name and limits)."""
    return list(itertools.takewhile(lambda field: not field.startswith("#"), fields))


def fingerprint(key: str, salt: str) -> str:
    """The name of a key given without one: from the key itself, so that it stays the key's whatever
    lines or flags come and go around it (stored Responses and rate limits belong to the name), salted so
    that it cannot confirm a guess of the key."""
    return "key-" + hmac.new(salt.encode(), key.encode(), hashlib.sha256).hexdigest()[:8]


class ApiKeyMiddleware:
    """With keys configured, the API's routes (and /metrics where protected) need
    `Authorization: Bearer <key>`; a missing or wrong key is a 401 in OpenAI's shape. The key is kept
    in the request's state, for its rate limits and (by name) the access log."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, protect_metrics: bool = False):
        self.app = app
        self.keys = keys
        self.protect_metrics = protect_metrics

    def _protected(self, path: str) -> bool:
        """Everything but the probes, the version and the web UI's own files (an allow-list: a route
        added later is protected unless it says otherwise)."""
        if path in OPEN_PATHS or path.startswith("/static/"):
            return False
        return path != "/metrics" or self.protect_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys.enabled or not self._protected(_route_path(scope)):
            await self.app(scope, receive, send)
            return
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        key = self.keys.lookup(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if key is None:
            await _refusal(bool(token.strip()))(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path the router matches: without the app's root path, where it is mounted under one."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _refusal(given: bool) -> JSONResponse:
    message = (
        "Incorrect API key provided."
        if given
        else "You didn't provide an API key. You need to provide your API key in an Authorization header "
        "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
    )
    detail = ErrorDetail(message=message, type="invalid_request_error", code="invalid_api_key")
    return JSONResponse(
        ErrorResponse(error=detail).model_dump(), status_code=401, headers={"WWW-Authenticate": "Bearer"}
    )
