"""msgspec structs that cross between the server and the engine-core process (and the offline API)."""

from __future__ import annotations

import msgspec

from pyinfer.sampling_params import SamplingParams

# How often the engine core retries connecting to an API process's link that is not bound yet (one
# started after the core): the longest its ready message can take to arrive there.
RECONNECT_MS = 100


class EngineRequest(msgspec.Struct, tag="add", kw_only=True):
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    sheddable: bool = True  # False: one of several prompts of a reply, which is served or refused whole


class AbortRequest(msgspec.Struct, tag="abort"):
    """Stop requests: those of the link it comes on, or (`anywhere`: a Responses cancel) another link's."""

    request_ids: list[str]
    anywhere: bool = False


class TokenLogprob(msgspec.Struct, array_like=True):
    """One sampled token's log-probability and the top alternatives (token id, logprob)."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]


class RequestMetrics(msgspec.Struct, kw_only=True):
    """Engine-side timings of one sequence, in milliseconds."""

    queue_ms: float
    prefill_ms: float
    decode_ms: float
    time_to_first_token_ms: float
    decode_iterations: int
    num_preemptions: int = 0


class SeqOutput(msgspec.Struct, kw_only=True):
    """What one step produced for one sequence (choice `index` of request `request_id`)."""

    request_id: str
    index: int
    new_token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None  # stop | length | abort | error
    stop_token_id: int | None = None  # the token that ended it, for finish_reason stop
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    num_cache_written_tokens: int = 0  # prompt tokens it made findable in the prefix cache
    metrics: RequestMetrics | None = None  # on the final output only
    error: str | None = None


# ---- server -> engine core, besides EngineRequest and AbortRequest ---------------------------------
class AbortChoice(msgspec.Struct, tag="abort_choice"):
    """Stop one choice of a request (its stop string was found in the server)."""

    request_id: str
    index: int


class StatsRequest(msgspec.Struct, tag="stats_request"):
    pass


class Shutdown(msgspec.Struct, tag="shutdown"):
    pass


# ---- engine core -> server -------------------------------------------------------------------------
class EngineReady(msgspec.Struct, tag="ready", kw_only=True):
    """Sent once the model is loaded: what the server needs to know about it."""

    model_path: str
    load_format: str
    device: str
    max_model_len: int
    vocab_size: int
    eos_token_ids: list[int]
    block_size: int
    num_kv_blocks: int
    stats: dict[str, int | float]  # the counters at ready: what a scrape shows until the core answers one


class StepOutputs(msgspec.Struct, tag="outputs"):
    """All outputs of one engine step for one link."""

    outputs: list[SeqOutput]


class Aborted(msgspec.Struct, tag="aborted"):
    """A request of this link that another link aborted (a Responses cancel that reached another API
    process): it ends as this link's own abort would have ended it."""

    request_id: str


class Rejected(msgspec.Struct, tag="rejected", kw_only=True):
    """A request the engine refused (add_request raised; `param` names the bad field, if known), or shed
    from a full queue before it started (`shed`: the server is overloaded, not the request at fault)."""

    request_id: str
    message: str
    param: str | None = None
    shed: bool = False


class RequestState(msgspec.Struct, kw_only=True):
    """One sequence in the engine, for the dashboard's live queue."""

    request_id: str
    index: int
    state: str  # waiting | prefill | decode
    prompt_tokens: int
    computed_tokens: int
    output_tokens: int
    cached_tokens: int
    age_ms: float


class EngineStats(msgspec.Struct, tag="stats"):
    stats: dict[str, int | float]  # int too: msgspec would decode a count as 512.0
    requests: list[RequestState] = []


ToCore = EngineRequest | AbortRequest | AbortChoice | StatsRequest | Shutdown
FromCore = EngineReady | StepOutputs | Aborted | Rejected | EngineStats
