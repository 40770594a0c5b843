"""Engine settings: one plain dataclass, validated once. Torch-free: the server process builds it too."""

from __future__ import annotations

from dataclasses import dataclass, replace

DTYPES = ("float32", "bfloat16", "float16")
QUANTIZATIONS = ("none", "int8", "int4")  # weight-only, on the CPU
# Batch limits where not set, by device: (max_num_seqs, max_num_batched_tokens). A GPU's decode step
# costs about the same for 1 or 256 sequences; a CPU's cores are busy far sooner.
BATCH_DEFAULTS = {"cuda": (256, 8192), "cpu": (64, 2048)}


@dataclass
class EngineConfig:
    model: str | None = None  # None: the embedded SmolLM2
    load_format: str = "auto"  # auto | hf | gguf | dummy
    tokenizer: str | None = None  # defaults to the model's own
    device: str | None = None  # cpu | cuda | cuda:N; None: cuda when available
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    quantization: str = "none"  # none | int8 (per channel) | int4 (groups of 32): weight-only, CPU only
    max_model_len: int | None = None
    max_num_seqs: int | None = None  # None: BATCH_DEFAULTS for the device
    max_num_batched_tokens: int | None = None  # token budget of one step (chunked prefill)
    block_size: int = 16
    num_kv_blocks: int | None = None  # fixed KV size in blocks (tests use tiny caches)
    kv_cache_memory_gb: float = 2.0  # KV budget on the CPU
    gpu_memory_utilization: float = 0.90  # share of GPU memory for weights, activations and KV
    enable_prefix_caching: bool = True
    enforce_eager: bool = False  # no CUDA graphs
    overlap_scheduling: bool = True  # on the GPU, prepare step N+1 while step N runs
    scheduling_policy: str = "fcfs"  # fcfs | priority (requests' `priority`, lower first; may preempt)
    seed: int = 0
    # KV-cache events for prefix-aware routers, in vLLM's format (engine/kv_events.py); None: off
    kv_events_endpoint: str | None = None  # ZMQ PUB address: tcp://*:5557 binds, tcp://host:port connects
    kv_events_replay_endpoint: str | None = None  # ZMQ ROUTER address that serves missed batches
    kv_events_topic: str = ""  # first frame of every message; llm-d reads kv@<pod>@<model> from it
    kv_events_buffer_steps: int = 10_000  # batches kept for replay
    kv_events_hwm: int = 100_000  # batches queued for a subscriber before new ones are dropped

    def __post_init__(self) -> None:
        if self.load_format not in ("auto", "hf", "gguf", "dummy"):
            raise ValueError(f"load_format must be auto, hf, gguf or dummy, not {self.load_format!r}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be auto or one of {sorted(DTYPES)}, not {self.dtype!r}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(
                f"quantization must be one of {', '.join(QUANTIZATIONS)}, not {self.quantization!r}"
            )
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.scheduling_policy not in ("fcfs", "priority"):
            raise ValueError(f"scheduling_policy must be fcfs or priority, not {self.scheduling_policy!r}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError("max_model_len must be at least 1")
        for name in ("kv_events_endpoint", "kv_events_replay_endpoint"):
            address = getattr(self, name)
            if address is not None and "://" not in address:
                raise ValueError(f"{name} must be a ZMQ address such as tcp://*:5557, not {address!r}")
        if self.kv_events_replay_endpoint and not self.kv_events_endpoint:
            raise ValueError("kv_events_replay_endpoint needs kv_events_endpoint")
        if self.kv_events_buffer_steps < 1 or self.kv_events_hwm < 0:
            raise ValueError("kv_events_buffer_steps must be at least 1 and kv_events_hwm at least 0")

    def for_device(self, device_type: str) -> EngineConfig:
        """This config with the batch limits it leaves unset filled in for the device."""
        seqs, tokens = BATCH_DEFAULTS.get(device_type, BATCH_DEFAULTS["cpu"])
        return replace(
            self,
            max_num_seqs=self.max_num_seqs or seqs,
            max_num_batched_tokens=self.max_num_batched_tokens or tokens,
        )
