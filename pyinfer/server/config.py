"""Server settings: one plain dataclass beside EngineConfig."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8000
    served_model_name: str | None = None  # None: named after the model file or folder
    max_tokens: int | None = None  # generation limit when a request sets none; None: the context limit
    cors_origins: list[str] = field(default_factory=list)
    log_level: str = "info"
    log_format: str = "text"  # text | json
    drain_timeout: float = 30.0  # seconds in-flight requests may take to finish on shutdown
    max_stored_responses: int = 1000  # Responses API: how many stored responses are kept, newest first
    stored_response_ttl: float = 3600.0  # Responses API: seconds a stored response is kept

    def __post_init__(self) -> None:
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log_format must be text or json, not {self.log_format!r}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if self.drain_timeout < 0:
            raise ValueError("drain_timeout must not be negative")
        if self.max_stored_responses < 0:
            raise ValueError("max_stored_responses must not be negative")
        if self.stored_response_ttl <= 0:
            raise ValueError("stored_response_ttl must be positive")
