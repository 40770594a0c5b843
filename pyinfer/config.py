"""Engine settings: one plain dataclass, validated once. Torch-free: the server process builds it too."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field, replace

from pyinfer.args import add_config_arguments, config_from_args, option
from pyinfer.sampling_params import MAX_JSON_WHITESPACE

DTYPES = ("float32", "bfloat16", "float16")
LOAD_FORMATS = ("auto", "hf", "gguf", "dummy")
QUANTIZATIONS = ("none", "int8", "int4")  # weight-only, on the CPU
# Batch limits where not set, by device: (max_num_seqs, max_num_batched_tokens). A GPU's decode step
# costs about the same for 1 or 256 sequences; a CPU's cores are busy far sooner.
BATCH_DEFAULTS = {"cuda": (256, 8192), "cpu": (64, 2048)}
# The shortest context served: the warm-up's requests need it, and no chat fits in less.
MIN_MODEL_LEN = 32
# A start refused for its settings: the server's exit code, as for a bad flag; and the engine core's, which
# the server passes on as that (sysexits' EX_CONFIG: not argparse's 2, which a bad core command gives)
SETTINGS_REFUSED = 2
CORE_SETTINGS_REFUSED = 78


class SettingsError(ValueError):
    """Settings that cannot work with the model loaded (found once it is: its length, the KV cache)."""


@dataclass
class EngineConfig:
    """Each field with an `option` is a flag of every subcommand that runs a model (pyinfer/args.py)."""

    model: str | None = field(
        default=None,
        metadata=option(
            "Hugging Face folder, .gguf file, or a preset name with --load-format dummy (default: the "
            "embedded SmolLM2-135M-Instruct)",
            aliases=("MODEL_PATH",),
        ),
    )
    load_format: str = field(
        default="auto", metadata=option("how to read --model", aliases=("LOAD_FORMAT",), choices=LOAD_FORMATS)
    )
    tokenizer: str | None = field(
        default=None, metadata=option("a tokenizer folder (default: the model's own)", aliases=("TOKENIZER",))
    )
    device: str | None = field(
        default=None,
        metadata=option("cpu, cuda or cuda:N (default: cuda when available)", aliases=("DEVICE",)),
    )
    dtype: str = field(
        default="auto",
        metadata=option("activation and weight dtype", aliases=("DTYPE",), choices=("auto", *DTYPES)),
    )
    quantization: str = field(
        default="none",
        metadata=option(
            "weight-only, on the CPU: int8 (groups of 32 where our integer kernels run, else per output "
            "channel) or int4 (groups of 32) for every linear. A GGUF's Q4_0/Q4_1 linears stay 4-bit from "
            "the file's own blocks; int8/int4 quantize its linears stored in other types. Whenever a linear "
            "is quantized, the LM head is int8",
            choices=QUANTIZATIONS,
        ),
    )
    max_model_len: int | None = field(
        default=None,
        metadata=option(
            "context length served; more than the model's positions or the KV cache's tokens stops the "
            "start (default: the model's, as far as the KV cache holds)",
            aliases=("MAX_MODEL_LEN",),
        ),
    )
    max_num_seqs: int | None = field(  # None: BATCH_DEFAULTS for the device
        default=None,
        metadata=option(
            f"sequences in one batch (default {BATCH_DEFAULTS['cuda'][0]} on a GPU, "
            f"{BATCH_DEFAULTS['cpu'][0]} on the CPU)",
            aliases=("MAX_NUM_SEQS",),
        ),
    )
    max_num_batched_tokens: int | None = field(  # chunked prefill
        default=None,
        metadata=option(
            f"token budget of one step (default {BATCH_DEFAULTS['cuda'][1]} on a GPU, "
            f"{BATCH_DEFAULTS['cpu'][1]} on the CPU)",
            aliases=("MAX_NUM_BATCHED_TOKENS",),
        ),
    )
    tensor_parallel_size: int = field(
        default=1,
        metadata=option(
            "ranks of one host the model is split across (one process each; NCCL across GPUs, gloo on the CPU)"
        ),
    )
    block_size: int = 16
    num_kv_blocks: int | None = field(  # tests use tiny caches
        default=None,
        metadata=option("fixed KV cache size in blocks of 16 tokens", aliases=("NUM_KV_BLOCKS",)),
    )
    kv_cache_memory_gb: float = field(
        default=2.0, metadata=option("KV cache size on the CPU, in GB", aliases=("KV_CACHE_MEMORY_GB",))
    )
    kv_cache_dtype: str = field(
        default="auto",
        metadata=option(
            "KV cache dtype: auto is the model's, except float16 where quantized weights compute in float32 "
            "on the CPU with our C++ kernels (half the bytes a decode step reads, as llama.cpp keeps it). A "
            "GPU keeps the model's",
            aliases=("KV_CACHE_DTYPE",),
            choices=("auto", *DTYPES),
        ),
    )
    gpu_memory_utilization: float = field(  # for weights, activations and KV
        default=0.90, metadata=option("share of GPU memory to use", aliases=("GPU_MEMORY_UTILIZATION",))
    )
    enable_prefix_caching: bool = field(
        default=True,
        metadata=option("no prefix caching", negated="--no-prefix-caching", aliases=("NO_PREFIX_CACHING",)),
    )
    enforce_eager: bool = field(default=False, metadata=option("no CUDA graphs", aliases=("ENFORCE_EAGER",)))
    overlap_scheduling: bool = field(  # on the GPU, prepare step N+1 while step N runs
        default=True,
        metadata=option(
            "finish each GPU step before preparing the next", negated="--no-overlap", aliases=("NO_OVERLAP",)
        ),
    )
    grammar_workers: int | None = field(  # None: engine/structured_output.py's default for the device
        default=None,
        metadata=option(
            "processes that keep the grammars of constrained requests (structured output, tools) and "
            "fill their token masks in parallel; 0 keeps them in the engine's process (default: up to 4 "
            "on a GPU, a quarter of the host's cores; 0 on the CPU)",
            aliases=("GRAMMAR_WORKERS",),
        ),
    )
    max_json_whitespace: int = field(
        default=16,
        metadata=option(
            "whitespace characters constrained JSON (response formats, tool call arguments) may put "
            "between two of its tokens: enough for indentation, a bound on runs of spaces that loop to "
            "max_tokens; 1 keeps it compact (small models pad with whitespace)",
            aliases=("MAX_JSON_WHITESPACE",),
        ),
    )
    scheduling_policy: str = field(
        default="fcfs",
        metadata=option(
            "fcfs: first come, first served; priority: by each request's `priority` (lower first, then "
            "arrival), a waiting request preempting less urgent running ones",
            aliases=("SCHEDULING_POLICY",),
            choices=("fcfs", "priority"),
        ),
    )
    seed: int = field(default=0, metadata=option("seed of unseeded sampling", aliases=("SEED",)))
    # KV-cache events for prefix-aware routers, in vLLM's format (engine/kv_events.py); None: off
    kv_events_endpoint: str | None = field(
        default=None,
        metadata=option(
            "ZMQ address to publish the blocks the prefix cache stores and evicts on, in vLLM's format: "
            "tcp://*:5557 binds, tcp://host:5557 connects to a subscriber that binds (default: off)",
            aliases=("KV_EVENTS_ENDPOINT",),
        ),
    )
    kv_events_replay_endpoint: str | None = field(
        default=None,
        metadata=option(
            "ZMQ address (bound) where a subscriber asks for missed batches from a sequence number, "
            "e.g. tcp://*:5558",
            aliases=("KV_EVENTS_REPLAY_ENDPOINT",),
        ),
    )
    kv_events_topic: str = field(
        default="",
        metadata=option(
            "first frame of every KV-event message; llm-d's router reads kv@<pod>@<model>",
            aliases=("KV_EVENTS_TOPIC",),
        ),
    )
    kv_events_buffer_steps: int = field(
        default=10_000,
        metadata=option("KV-event batches kept for replay", aliases=("KV_EVENTS_BUFFER_STEPS",)),
    )
    kv_events_hwm: int = field(
        default=100_000,
        metadata=option(
            "KV-event batches queued for a subscriber before new ones are dropped, and counted",
            aliases=("KV_EVENTS_HWM",),
        ),
    )

    def __post_init__(self) -> None:
        if self.load_format not in LOAD_FORMATS:
            raise ValueError(f"load_format must be auto, hf, gguf or dummy, not {self.load_format!r}")
        for name in ("dtype", "kv_cache_dtype"):
            if (value := getattr(self, name)) != "auto" and value not in DTYPES:
                raise ValueError(f"{name} must be auto or one of {sorted(DTYPES)}, not {value!r}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(
                f"quantization must be one of {', '.join(QUANTIZATIONS)}, not {self.quantization!r}"
            )
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size", "tensor_parallel_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.grammar_workers is not None and self.grammar_workers < 0:
            raise ValueError("grammar_workers must be at least 0")
        if not 1 <= self.max_json_whitespace <= MAX_JSON_WHITESPACE:
            raise ValueError(f"max_json_whitespace must be from 1 to {MAX_JSON_WHITESPACE}")
        if self.scheduling_policy not in ("fcfs", "priority"):
            raise ValueError(f"scheduling_policy must be fcfs or priority, not {self.scheduling_policy!r}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        if self.max_model_len is not None and self.max_model_len < MIN_MODEL_LEN:
            raise ValueError(f"max_model_len must be at least {MIN_MODEL_LEN}")
        if self.device is not None and not re.fullmatch(r"cpu|cuda(:[0-9]+)?", self.device):
            raise ValueError(f"device must be cpu, cuda or cuda:N, not {self.device!r}")
        if self.num_kv_blocks is not None and self.num_kv_blocks < 1:
            raise ValueError("num_kv_blocks must be at least 1 (leave it out for a cache sized to memory)")
        if not self.kv_cache_memory_gb > 0:
            raise ValueError("kv_cache_memory_gb must be more than 0")
        for name in ("kv_events_endpoint", "kv_events_replay_endpoint"):
            address = getattr(self, name)
            if address is not None and "://" not in address:
                raise ValueError(f"{name} must be a ZMQ address such as tcp://*:5557, not {address!r}")
        if self.kv_events_replay_endpoint and not self.kv_events_endpoint:
            raise ValueError("kv_events_replay_endpoint needs kv_events_endpoint")
        if self.kv_events_buffer_steps < 1:
            raise ValueError("kv_events_buffer_steps must be at least 1")
        if self.kv_events_hwm < 0:
            raise ValueError("kv_events_hwm must be at least 0")

    def for_device(self, device_type: str) -> EngineConfig:
        """This config with the batch limits it leaves unset filled in for the device."""
        seqs, tokens = BATCH_DEFAULTS.get(device_type, BATCH_DEFAULTS["cpu"])
        return replace(
            self,
            max_num_seqs=self.max_num_seqs or seqs,
            max_num_batched_tokens=self.max_num_batched_tokens or tokens,
        )


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """EngineConfig's flags, shared by every subcommand that runs a model."""
    add_config_arguments(parser.add_argument_group("engine"), EngineConfig)


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    return config_from_args(EngineConfig, args)
