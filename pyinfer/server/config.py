"""Server settings: one plain dataclass beside EngineConfig, and the `pyinfer serve` flags that fill it."""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from pyinfer.args import add_config_arguments, config_from_args, option
from pyinfer.generation_config import GENERATION_CONFIG_HELP
from pyinfer.server.tool_formats import PARSER_CHOICES


@dataclass
class ServerConfig:
    """Each field with an `option` is a flag of `pyinfer serve` (pyinfer/args.py)."""

    host: str = field(  # loopback unless asked: a server without keys is open to whoever reaches it
        default="127.0.0.1",
        metadata=option("address to listen on (0.0.0.0: every interface)", aliases=("HOST",)),
    )
    port: int = field(default=8000, metadata=option("port to listen on", aliases=("PORT",)))
    served_model_name: str | None = field(
        default=None,
        metadata=option(
            "the model's name in the API (default: the model file or folder name)",
            aliases=("SERVED_MODEL_NAME",),
        ),
    )
    max_tokens: int | None = field(
        default=None,
        metadata=option(
            "generation limit when a request sets none (default: the context limit)", aliases=("MAX_TOKENS",)
        ),
    )
    generation_config: str = field(
        default="auto", metadata=option(GENERATION_CONFIG_HELP, aliases=("GENERATION_CONFIG",))
    )
    tool_call_parser: str = field(
        default="auto",
        metadata=option(
            "how tools are given and calls read: auto (what the chat template implies), generic (our "
            "prompt, hermes calls, for any model), or a format",
            aliases=("TOOL_CALL_PARSER",),
            choices=PARSER_CHOICES,
        ),
    )
    cors_origins: list[str] = field(
        default_factory=list,
        metadata=option(
            "allowed browser origins, or * (default: none)", aliases=("CORS_ORIGINS",), repeated=True
        ),
    )
    log_level: str = field(
        default="info",
        metadata=option(
            "how much to log",
            aliases=("LOG_LEVEL",),
            choices=("debug", "info", "warning", "error"),
            parse=str.lower,
        ),
    )
    log_format: str = field(
        default="text",
        metadata=option(
            "text, or json: one object a line", aliases=("LOG_FORMAT",), choices=("text", "json")
        ),
    )
    log_prompts: bool = field(
        default=False,
        metadata=option(
            "write each request's prompt and output text into its access-log line; without it only their "
            "token counts are logged",
            aliases=("LOG_PROMPTS",),
        ),
    )
    api_server_count: int | None = field(  # None: default_api_server_count
        default=None,
        metadata=option(
            "HTTP server processes in front of the one engine core, all on the one port (default 2 when "
            "the engine runs on a GPU, whose streams one process cannot keep up with at saturation; 1 on "
            "the CPU, whose cores the engine needs). Stored Responses, rate limits and queue limits hold "
            "for the server as a whole",
            aliases=("API_SERVER_COUNT",),
        ),
    )
    drain_timeout: float = field(
        default=30.0,
        metadata=option(
            "seconds in-flight requests may take to finish on SIGTERM/SIGINT", aliases=("DRAIN_TIMEOUT",)
        ),
    )
    engine_hang_timeout: float | None = field(  # None: default_hang_timeout
        default=None,
        metadata=option(
            "seconds the engine may leave a question unanswered (it answers between steps) before /health "
            "and /ready answer 503, so that a liveness probe restarts a hung server; 0: never (default: 60 "
            "on a GPU, 600 on the CPU, where one step of a long prompt can take minutes)",
            aliases=("ENGINE_HANG_TIMEOUT",),
        ),
    )
    max_stored_responses: int = field(
        default=1000,
        metadata=option(
            "Responses API: stored responses kept, the oldest dropped first; 0 stores none",
            aliases=("MAX_STORED_RESPONSES",),
        ),
    )
    stored_response_ttl: float = field(
        default=3600.0,
        metadata=option("Responses API: seconds a stored response is kept", aliases=("STORED_RESPONSE_TTL",)),
    )
    api_keys: list[str] = field(
        default_factory=list,
        metadata=option(
            "a key clients must send as `Authorization: Bearer KEY`; repeat for more",
            aliases=("API_KEY",),
            repeated=True,
            flag="--api-key",
            guards=True,
        ),
    )
    api_key_file: str | None = field(
        default=None,
        metadata=option(
            "keys one a line, `key [name [requests-per-minute [tokens-per-minute]]]`; read again when it "
            "changes, so a removed key stops working without a restart",
            aliases=("API_KEY_FILE",),
            guards=True,
        ),
    )
    # what names keys given without a name: random for each run, shared by its API processes
    key_name_salt: str = field(default_factory=lambda: secrets.token_hex(16), compare=False, repr=False)
    protect_metrics: bool = field(
        default=False,
        metadata=option(
            "/metrics needs a key too (/health and /ready always stay open)", aliases=("PROTECT_METRICS",)
        ),
    )
    rate_limit_rpm: int | None = field(
        default=None,
        metadata=option(
            "generation requests a minute per API key (all callers together without keys); the key file's "
            "own limit wins (default: none)",
            aliases=("RATE_LIMIT_RPM",),
        ),
    )
    rate_limit_tpm: int | None = field(
        default=None,
        metadata=option(
            "tokens a minute per API key, counted as prompt + max_tokens and corrected when the reply ends "
            "(default: none)",
            aliases=("RATE_LIMIT_TPM",),
        ),
    )
    max_queued_requests: int | None = field(
        default=None,
        metadata=option(
            "requests that may wait for their first token; more are refused at once with a 503 and "
            "retry-after, before their prompt is tokenized (default: no bound)",
            aliases=("MAX_QUEUED_REQUESTS",),
        ),
    )
    max_queued_tokens: int | None = field(
        default=None,
        metadata=option(
            "prompt tokens that may wait for their first token; a request past it gets a 503 (default: no bound)",
            aliases=("MAX_QUEUED_TOKENS",),
        ),
    )
    max_request_body: int = field(
        default=16 * 2**20,
        metadata=option("largest request body in bytes; larger is a 413", aliases=("MAX_REQUEST_BODY",)),
    )
    read_timeout: float = field(
        default=60.0,
        metadata=option(
            "seconds a request's next bytes (of its line, headers or body) may take to arrive; past them it "
            "is answered 408 and its connection closed"
        ),
    )
    request_timeout: float | None = field(
        default=None,
        metadata=option(
            "seconds a generation may take from arrival; past them it is aborted in the engine (its KV "
            "blocks freed) and answered with a 504 (default: none)",
            aliases=("REQUEST_TIMEOUT",),
        ),
    )

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:  # the socket would take it modulo 65536, and bind another port
            raise ValueError(f"port must be between 0 and 65535, not {self.port}")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log_format must be text or json, not {self.log_format!r}")
        if self.tool_call_parser not in PARSER_CHOICES:
            raise ValueError(
                f"tool_call_parser must be one of {PARSER_CHOICES}, not {self.tool_call_parser!r}"
            )
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        for name in ("rate_limit_rpm", "rate_limit_tpm"):
            if (limit := getattr(self, name)) is not None and limit < 1:
                raise ValueError(f"{name} must be at least 1 a minute")
        if self.request_timeout is not None and self.request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        if self.read_timeout <= 0:
            raise ValueError("read_timeout must be positive")
        for name in ("max_queued_requests", "max_queued_tokens", "max_request_body"):
            if (value := getattr(self, name)) is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.api_server_count is not None and self.api_server_count < 1:
            raise ValueError("api_server_count must be at least 1")
        for name in ("drain_timeout", "engine_hang_timeout"):
            if (value := getattr(self, name)) is not None and value < 0:
                raise ValueError(f"{name} must not be negative")
        if self.max_stored_responses < 0:
            raise ValueError("max_stored_responses must not be negative")
        if self.stored_response_ttl <= 0:
            raise ValueError("stored_response_ttl must be positive")

    def core_args(self) -> tuple[str, ...]:
        """The engine core's flags from ours: its logging, and the queue's bounds, past which it sheds the
        least urgent waiting request for a more urgent one that was admitted."""
        args = ("--log-level", self.log_level, "--log-format", self.log_format)
        for flag, bound in (
            ("--max-queued-requests", self.max_queued_requests),
            ("--max-queued-tokens", self.max_queued_tokens),
        ):
            if bound is not None:
                args += (flag, str(bound))
        return args


def default_api_server_count(device: str | None) -> int:
    """API processes where --api-server-count is not set: 2 for an engine on a GPU (more measured no
    better: bench/results/2026-12-05-h100-session11.md), else 1."""
    on_gpu = device.startswith("cuda") if device else cuda_device_visible()
    return 2 if on_gpu else 1


def default_hang_timeout(device: str) -> float:
    """Seconds a ready engine on `device` may leave a question unanswered before it counts as hung."""
    return 60.0 if device.startswith("cuda") else 600.0


def cuda_device_visible() -> bool:
    """Whether the engine's default device will be a GPU."""
    return cuda_device_count() > 0


def cuda_device_count() -> int:
    """The GPUs torch could use: none unless it is built for CUDA, else those the CUDA driver sees. Asked
    without importing torch, which the launcher never does; children are exec'd, so the driver's state
    here goes nowhere."""
    if not torch_built_for_cuda():
        return 0
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    return count.value if driver.cuInit(0) == 0 and driver.cuDeviceGetCount(ctypes.byref(count)) == 0 else 0


def torch_built_for_cuda() -> bool:
    """From torch/version.py's `cuda` line (None in a CPU build), read without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    version = Path(spec.submodule_search_locations[0]) / "version.py"
    found = (
        re.search(r"^cuda\b[^=]*=\s*(\S+)", version.read_text(), re.MULTILINE) if version.exists() else None
    )
    return found is not None and found.group(1) != "None"


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser.add_argument_group("server"), ServerConfig)


def server_config_from_args(args: argparse.Namespace) -> ServerConfig:
    return config_from_args(ServerConfig, args)
