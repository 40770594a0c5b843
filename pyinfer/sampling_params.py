"""SamplingParams: every generation knob, validated here with errors that name the parameter."""

from __future__ import annotations

import math

import msgspec

MAX_LOGPROBS = 20
STRUCTURED_KINDS = ("json", "regex", "choice", "grammar", "structural_tag")
# The most whitespace between two JSON tokens a bound may allow: far past any indentation, well inside
# xgrammar's 32-bit count.
MAX_JSON_WHITESPACE = 1024


MAX_N = 128  # choices a request may ask for, as at OpenAI: more would be a way to flood the engine


class StructuredOutput(msgspec.Struct, kw_only=True, frozen=True):
    """A constraint the output must satisfy, compiled to a grammar in the engine: `spec` is a JSON
    schema as JSON text (kind json), a regular expression (regex), a JSON list of strings (choice), an
    EBNF grammar (grammar) or xgrammar's structural tag as JSON (structural_tag: tool calls). `param`
    is the request field it came from, for error messages. `strict`: a JSON schema using what the grammar
    cannot enforce is refused; otherwise (OpenAI's formats without strict) the rest of it is enforced.
    `max_whitespace`: the whitespace characters JSON (a reply's or a tool call's arguments) may put
    between two of its tokens; None takes the engine's `max_json_whitespace`."""

    kind: str
    spec: str
    param: str = "response_format"
    strict: bool = True
    max_whitespace: int | None = None


class SamplingParams(msgspec.Struct, kw_only=True):
    n: int = 1
    max_tokens: int | None = 16  # None: until the context is full
    min_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: off
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] | None = None
    seed: int | None = None
    stop: list[str] = msgspec.field(default_factory=list)
    stop_token_ids: list[int] = msgspec.field(default_factory=list)
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    logprobs: int | None = None  # None: none; 0: the chosen token's; k: plus the top k
    skip_special_tokens: bool = True
    structured: StructuredOutput | None = None
    priority: int = 0  # under the priority scheduling policy: lower runs first

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.validate()

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5 or self.top_k == 1

    @property
    def has_penalties(self) -> bool:
        return self.presence_penalty != 0 or self.frequency_penalty != 0 or self.repetition_penalty != 1

    def validate(self) -> None:
        _check(1 <= self.n <= MAX_N, "n", f"must be between 1 and {MAX_N}, got {self.n}")
        if self.max_tokens is not None:
            _check(self.max_tokens >= 1, "max_tokens", f"must be at least 1, got {self.max_tokens}")
        _check(self.min_tokens >= 0, "min_tokens", f"must be non-negative, got {self.min_tokens}")
        if self.max_tokens is not None:
            _check(
                self.min_tokens <= self.max_tokens,
                "min_tokens",
                f"({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})",
            )
        _check(
            _finite(self.temperature) and self.temperature >= 0,
            "temperature",
            f"must be >= 0, got {self.temperature}",
        )
        _check(_finite(self.top_p) and 0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        _check(self.top_k >= -1, "top_k", f"must be -1, 0 (off) or positive, got {self.top_k}")
        _check(_finite(self.min_p) and 0 <= self.min_p <= 1, "min_p", f"must be in [0, 1], got {self.min_p}")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            _check(_finite(value) and -2 <= value <= 2, name, f"must be in [-2, 2], got {value}")
        _check(
            _finite(self.repetition_penalty) and self.repetition_penalty > 0,
            "repetition_penalty",
            f"must be > 0, got {self.repetition_penalty}",
        )
        for token, bias in (self.logit_bias or {}).items():
            _check(token >= 0, "logit_bias", f"token id {token} is negative")
            _check(_finite(bias) and -100 <= bias <= 100, "logit_bias", f"bias {bias} is outside [-100, 100]")
        if self.logprobs is not None:
            _check(
                0 <= self.logprobs <= MAX_LOGPROBS,
                "logprobs",
                f"must be in [0, {MAX_LOGPROBS}], got {self.logprobs}",
            )
        _check(all(t >= 0 for t in self.stop_token_ids), "stop_token_ids", "token ids must be non-negative")
        for name in ("max_tokens", "min_tokens", "top_k", "seed", "priority"):  # they cross to the engine
            value = getattr(self, name)
            _check(value is None or -(2**63) <= value < 2**63, name, "must fit in 64 bits")
        _check(
            all(t < 2**63 for t in [*self.stop_token_ids, *(self.logit_bias or {})]),
            "stop_token_ids" if any(t >= 2**63 for t in self.stop_token_ids) else "logit_bias",
            "token ids must fit in 64 bits",
        )
        _check(all(s for s in self.stop), "stop", "must not hold an empty string")
        if self.structured is not None:
            kind, param = self.structured.kind, self.structured.param
            _check(kind in STRUCTURED_KINDS, param, f"kind must be one of {STRUCTURED_KINDS}, got {kind!r}")
            whitespace = self.structured.max_whitespace
            _check(
                whitespace is None or 1 <= whitespace <= MAX_JSON_WHITESPACE,
                param,
                f"max_whitespace must be from 1 to {MAX_JSON_WHITESPACE}, got {whitespace}",
            )


def check_request(
    prompt_token_ids: list[int],
    params: SamplingParams,
    vocab_size: int,
    max_model_len: int,
    param: str = "prompt",
) -> None:
    """What a request must be for the model that serves it (the server checks it before a reply begins,
    the engine again for its own callers); `param` names the prompt as the API calls it."""
    if not prompt_token_ids:
        raise SamplingParamsError(param, "must not be empty")
    if min(prompt_token_ids) < 0 or max(prompt_token_ids) >= vocab_size:
        raise SamplingParamsError(param, f"has token ids outside the vocabulary [0, {vocab_size})")
    for token in params.logit_bias or {}:
        _check(
            token < vocab_size, "logit_bias", f"token id {token} is outside the vocabulary [0, {vocab_size})"
        )
    _check(
        all(t < vocab_size for t in params.stop_token_ids),
        "stop_token_ids",
        f"token ids must be below the vocabulary size {vocab_size}",
    )
    completion = params.max_tokens or 1
    if len(prompt_token_ids) + completion > max_model_len:
        prompt_fits = len(prompt_token_ids) < max_model_len  # else the prompt alone is too long
        raise SamplingParamsError(
            "max_tokens" if params.max_tokens and prompt_fits else param,
            f"too long: this model's maximum context length is {max_model_len} tokens, but "
            f"{len(prompt_token_ids)} prompt tokens + {completion} completion tokens were requested",
        )


class SamplingParamsError(ValueError):
    """An invalid sampling parameter; `param` names it."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param} {message}")
        self.param = param
        self.message = message

    def named(self, api_names: dict[str, str]) -> SamplingParamsError:
        """The same error under the name an API gives the parameter (engine name -> API name)."""
        return SamplingParamsError(api_names[self.param], self.message) if self.param in api_names else self


def _check(ok: bool, param: str, message: str) -> None:
    if not ok:
        raise SamplingParamsError(param, message)


def _finite(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)
