"""Server settings: one plain dataclass beside EngineConfig, and the `pyinfer serve` flags that fill it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from pyinfer.cli import add_generation_config_argument, env_default
from pyinfer.server.tool_formats import PARSER_CHOICES


@dataclass
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8000
    served_model_name: str | None = None  # None: named after the model file or folder
    max_tokens: int | None = None  # generation limit when a request sets none; None: the context limit
    generation_config: str = "auto"  # sampling defaults: auto (the model's), none (OpenAI's) or a folder
    tool_call_parser: str = "auto"  # the tool-call format: auto (the chat template's), generic or a format
    cors_origins: list[str] = field(default_factory=list)
    log_level: str = "info"
    log_format: str = "text"  # text | json
    log_prompts: bool = False  # the access log carries prompt and output text (never, by default)
    drain_timeout: float = 30.0  # seconds in-flight requests may take to finish on shutdown
    max_stored_responses: int = 1000  # Responses API: how many stored responses are kept, newest first
    stored_response_ttl: float = 3600.0  # Responses API: seconds a stored response is kept
    api_keys: list[str] = field(default_factory=list)  # with any key (or a key file), the API needs one
    api_key_file: str | None = None  # `key [name [rpm [tpm]]]` a line, read again when it changes
    protect_metrics: bool = False  # /metrics needs a key too
    rate_limit_rpm: int | None = None  # requests a minute per key (or for all, without keys); None: no limit
    rate_limit_tpm: int | None = None  # tokens a minute: prompt + max_tokens, corrected at the end
    max_queued_requests: int | None = None  # requests waiting for their first token; beyond: a 503
    max_queued_tokens: int | None = None  # their prompt tokens
    max_request_body: int = 16 * 2**20  # bytes; a larger body is a 413
    request_timeout: float | None = None  # seconds a generation may take; past them it is aborted (504)

    def __post_init__(self) -> None:
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log_format must be text or json, not {self.log_format!r}")
        if self.tool_call_parser not in PARSER_CHOICES:
            raise ValueError(
                f"tool_call_parser must be one of {PARSER_CHOICES}, not {self.tool_call_parser!r}"
            )
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        for limit in (self.rate_limit_rpm, self.rate_limit_tpm):
            if limit is not None and limit < 1:
                raise ValueError("rate limits must be at least 1 a minute")
        if self.request_timeout is not None and self.request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        for name in ("max_queued_requests", "max_queued_tokens", "max_request_body"):
            if (value := getattr(self, name)) is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.drain_timeout < 0:
            raise ValueError("drain_timeout must not be negative")
        if self.max_stored_responses < 0:
            raise ValueError("max_stored_responses must not be negative")
        if self.stored_response_ttl <= 0:
            raise ValueError("stored_response_ttl must be positive")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    d = ServerConfig()
    g = parser.add_argument_group("server")
    g.add_argument("--host", default=env_default("HOST", d.host), help="env HOST")
    g.add_argument("--port", type=int, default=env_default("PORT", d.port, int), help="env PORT")
    g.add_argument(
        "--served-model-name",
        default=env_default("SERVED_MODEL_NAME", None),
        help="the model's name in the API (env SERVED_MODEL_NAME; default: the model file or folder name)",
    )
    g.add_argument(
        "--max-tokens",
        type=int,
        default=env_default("MAX_TOKENS", None, int),
        help="generation limit when a request sets none (env MAX_TOKENS; default: the context limit)",
    )
    add_generation_config_argument(g)
    g.add_argument(
        "--tool-call-parser",
        default=env_default("TOOL_CALL_PARSER", d.tool_call_parser),
        choices=PARSER_CHOICES,
        help="how tools are given and calls read: auto (what the chat template implies), generic (our "
        "prompt, hermes calls, for any model), or a format (env TOOL_CALL_PARSER)",
    )
    g.add_argument(
        "--cors-origins",
        default=env_default("CORS_ORIGINS", ""),
        help="comma-separated allowed origins, or * (env CORS_ORIGINS; default: none)",
    )
    g.add_argument(
        "--log-level",
        default=env_default("LOG_LEVEL", d.log_level),
        choices=["debug", "info", "warning", "error"],
        type=str.lower,
        help="env LOG_LEVEL",
    )
    g.add_argument(
        "--log-format",
        default=env_default("LOG_FORMAT", d.log_format),
        choices=["text", "json"],
        help="env LOG_FORMAT",
    )
    g.add_argument(
        "--log-prompts",
        action="store_true",
        default=env_default("LOG_PROMPTS", d.log_prompts, bool),
        help="write each request's prompt and output text into its access-log line; without it only "
        "their token counts are logged (env LOG_PROMPTS)",
    )
    g.add_argument(
        "--drain-timeout",
        type=float,
        default=env_default("DRAIN_TIMEOUT", d.drain_timeout, float),
        help="seconds in-flight requests may take to finish on SIGTERM/SIGINT (env DRAIN_TIMEOUT)",
    )
    g.add_argument(
        "--max-stored-responses",
        type=int,
        default=env_default("MAX_STORED_RESPONSES", d.max_stored_responses, int),
        help="Responses API: stored responses kept in memory, the oldest dropped first; 0 stores none "
        "(env MAX_STORED_RESPONSES)",
    )
    g.add_argument(
        "--stored-response-ttl",
        type=float,
        default=env_default("STORED_RESPONSE_TTL", d.stored_response_ttl, float),
        help="Responses API: seconds a stored response is kept (env STORED_RESPONSE_TTL)",
    )
    add_auth_arguments(g)
    g.add_argument(
        "--max-queued-requests",
        type=int,
        default=env_default("MAX_QUEUED_REQUESTS", None, int),
        help="requests that may wait for their first token; more are refused at once with a 503 and "
        "retry-after, before their prompt is tokenized (env MAX_QUEUED_REQUESTS; default: no bound)",
    )
    g.add_argument(
        "--max-queued-tokens",
        type=int,
        default=env_default("MAX_QUEUED_TOKENS", None, int),
        help="prompt tokens that may wait for their first token; a request past it gets a 503 "
        "(env MAX_QUEUED_TOKENS; default: no bound)",
    )
    g.add_argument(
        "--request-timeout",
        type=float,
        default=env_default("REQUEST_TIMEOUT", None, float),
        help="seconds a generation may take from arrival; past them it is aborted in the engine (its KV "
        "blocks freed) and answered with a 504 (env REQUEST_TIMEOUT; default: none)",
    )
    g.add_argument(
        "--max-request-body",
        type=int,
        default=env_default("MAX_REQUEST_BODY", d.max_request_body, int),
        help="largest request body in bytes; larger is a 413 (env MAX_REQUEST_BODY)",
    )


def add_auth_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--api-key",
        action="append",
        default=None,
        help="a key clients must send as `Authorization: Bearer KEY`; repeat for more (env API_KEY, "
        "comma-separated)",
    )
    g.add_argument(
        "--api-key-file",
        default=env_default("API_KEY_FILE", None),
        help="keys one a line, `key [name [requests-per-minute [tokens-per-minute]]]`; read again when it "
        "changes, so a removed key stops working without a restart (env API_KEY_FILE)",
    )
    g.add_argument(
        "--protect-metrics",
        action="store_true",
        default=env_default("PROTECT_METRICS", False, bool),
        help="/metrics needs a key too (env PROTECT_METRICS; /health and /ready always stay open)",
    )
    g.add_argument(
        "--rate-limit-rpm",
        type=int,
        default=env_default("RATE_LIMIT_RPM", None, int),
        help="generation requests a minute per API key (all callers together without keys); the key file's "
        "own limit wins (env RATE_LIMIT_RPM; default: none)",
    )
    g.add_argument(
        "--rate-limit-tpm",
        type=int,
        default=env_default("RATE_LIMIT_TPM", None, int),
        help="tokens a minute per API key, counted as prompt + max_tokens and corrected when the reply ends "
        "(env RATE_LIMIT_TPM; default: none)",
    )


def server_config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        served_model_name=args.served_model_name,
        max_tokens=args.max_tokens,
        generation_config=args.generation_config,
        tool_call_parser=args.tool_call_parser,
        cors_origins=[o.strip() for o in args.cors_origins.split(",") if o.strip()],
        log_level=args.log_level,
        log_format=args.log_format,
        log_prompts=args.log_prompts,
        drain_timeout=args.drain_timeout,
        max_stored_responses=args.max_stored_responses,
        stored_response_ttl=args.stored_response_ttl,
        api_keys=args.api_key or [k.strip() for k in env_default("API_KEY", "").split(",") if k.strip()],
        api_key_file=args.api_key_file,
        protect_metrics=args.protect_metrics,
        rate_limit_rpm=args.rate_limit_rpm,
        rate_limit_tpm=args.rate_limit_tpm,
        max_queued_requests=args.max_queued_requests,
        max_queued_tokens=args.max_queued_tokens,
        max_request_body=args.max_request_body,
        request_timeout=args.request_timeout,
    )
