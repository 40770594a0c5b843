"""pyinfer serve | generate | chat | bench. Every flag can also be set by an environment variable."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

from pyinfer.config import BATCH_DEFAULTS, QUANTIZATIONS, EngineConfig


def env_default(env: str, default, cast=str):
    """The flag's default: the environment variable when set, else `default`."""
    value = os.environ.get(env)
    if value is None or value == "":
        return default
    if cast is bool:
        return value.lower() in ("1", "true", "yes", "on")
    return cast(value)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of EngineConfig, shared by every subcommand that runs a model."""
    d = EngineConfig()
    gpu, cpu = BATCH_DEFAULTS["cuda"], BATCH_DEFAULTS["cpu"]
    g = parser.add_argument_group("engine")
    g.add_argument(
        "--model",
        default=env_default("MODEL_PATH", None),
        help="Hugging Face folder, .gguf file, or a preset name with --load-format dummy "
        "(env MODEL_PATH; default: the embedded SmolLM2-135M-Instruct)",
    )
    g.add_argument(
        "--load-format",
        default=env_default("LOAD_FORMAT", d.load_format),
        choices=["auto", "hf", "gguf", "dummy"],
        help="env LOAD_FORMAT",
    )
    g.add_argument("--tokenizer", default=env_default("TOKENIZER", None), help="env TOKENIZER")
    g.add_argument(
        "--device",
        default=env_default("DEVICE", None),
        help="cpu, cuda or cuda:N (env DEVICE; default: cuda when available)",
    )
    g.add_argument(
        "--dtype",
        default=env_default("DTYPE", d.dtype),
        choices=["auto", "float32", "bfloat16", "float16"],
        help="env DTYPE",
    )
    g.add_argument(
        "--quantization",
        default=env_default("PYINFER_QUANTIZATION", d.quantization),
        choices=QUANTIZATIONS,
        help="weight-only, on the CPU: int8 (per output channel) or int4 (groups of 32) for every "
        "linear. A GGUF's Q4_0/Q4_1 linears stay 4-bit from the file's own blocks (with none: in bf16 "
        "only); int8/int4 quantize its linears stored in other types. Whenever a linear is quantized, "
        "the LM head is int8 per channel (env PYINFER_QUANTIZATION)",
    )
    g.add_argument(
        "--max-model-len",
        type=int,
        default=env_default("MAX_MODEL_LEN", None, int),
        help="context length limit (env MAX_MODEL_LEN)",
    )
    g.add_argument(
        "--max-num-seqs",
        type=int,
        default=env_default("MAX_NUM_SEQS", d.max_num_seqs, int),
        help=f"sequences in one batch; default {gpu[0]} on a GPU, {cpu[0]} on the CPU (env MAX_NUM_SEQS)",
    )
    g.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=env_default("MAX_NUM_BATCHED_TOKENS", d.max_num_batched_tokens, int),
        help=f"token budget of one step; default {gpu[1]} on a GPU, {cpu[1]} on the CPU "
        "(env MAX_NUM_BATCHED_TOKENS)",
    )
    g.add_argument(
        "--num-kv-blocks",
        type=int,
        default=env_default("NUM_KV_BLOCKS", None, int),
        help="fixed KV cache size in blocks of 16 tokens (env NUM_KV_BLOCKS)",
    )
    g.add_argument(
        "--kv-cache-memory-gb",
        type=float,
        default=env_default("KV_CACHE_MEMORY_GB", d.kv_cache_memory_gb, float),
        help="KV cache size on the CPU (env KV_CACHE_MEMORY_GB)",
    )
    g.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=env_default("GPU_MEMORY_UTILIZATION", d.gpu_memory_utilization, float),
        help="share of GPU memory to use (env GPU_MEMORY_UTILIZATION)",
    )
    g.add_argument(
        "--no-prefix-caching",
        action="store_true",
        default=env_default("NO_PREFIX_CACHING", False, bool),
        help="env NO_PREFIX_CACHING",
    )
    g.add_argument(
        "--enforce-eager",
        action="store_true",
        default=env_default("ENFORCE_EAGER", False, bool),
        help="no CUDA graphs (env ENFORCE_EAGER)",
    )
    g.add_argument(
        "--no-overlap",
        action="store_true",
        default=env_default("NO_OVERLAP", False, bool),
        help="finish each GPU step before preparing the next (env NO_OVERLAP)",
    )
    g.add_argument(
        "--scheduling-policy",
        default=env_default("SCHEDULING_POLICY", d.scheduling_policy),
        choices=["fcfs", "priority"],
        help="fcfs: first come, first served; priority: by each request's `priority` (lower first, then "
        "arrival), a waiting request preempting less urgent running ones (env SCHEDULING_POLICY)",
    )
    g.add_argument("--seed", type=int, default=env_default("SEED", d.seed, int), help="env SEED")
    k = parser.add_argument_group("KV-cache events (vLLM's format, for prefix-aware routers such as llm-d)")
    k.add_argument(
        "--kv-events-endpoint",
        default=env_default("KV_EVENTS_ENDPOINT", None),
        help="ZMQ address to publish the blocks the prefix cache stores and evicts on: tcp://*:5557 binds, "
        "tcp://host:5557 connects to a subscriber that binds (env KV_EVENTS_ENDPOINT; default: off)",
    )
    k.add_argument(
        "--kv-events-replay-endpoint",
        default=env_default("KV_EVENTS_REPLAY_ENDPOINT", None),
        help="ZMQ address (bound) where a subscriber asks for missed batches from a sequence number, "
        "e.g. tcp://*:5558 (env KV_EVENTS_REPLAY_ENDPOINT; default: none)",
    )
    k.add_argument(
        "--kv-events-topic",
        default=env_default("KV_EVENTS_TOPIC", d.kv_events_topic),
        help="first frame of every message; llm-d's router reads kv@<pod>@<model> (env KV_EVENTS_TOPIC)",
    )
    k.add_argument(
        "--kv-events-buffer-steps",
        type=int,
        default=env_default("KV_EVENTS_BUFFER_STEPS", d.kv_events_buffer_steps, int),
        help=f"batches kept for replay (env KV_EVENTS_BUFFER_STEPS; default {d.kv_events_buffer_steps})",
    )
    k.add_argument(
        "--kv-events-hwm",
        type=int,
        default=env_default("KV_EVENTS_HWM", d.kv_events_hwm, int),
        help="batches queued for a subscriber before new ones are dropped, and counted "
        f"(env KV_EVENTS_HWM; default {d.kv_events_hwm})",
    )


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    names = {f.name for f in fields(EngineConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["enable_prefix_caching"] = not args.no_prefix_caching
    values["overlap_scheduling"] = not args.no_overlap
    return EngineConfig(**values)


def add_generation_config_argument(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--generation-config",
        default=env_default("GENERATION_CONFIG", "auto"),
        help="defaults for the sampling fields a request leaves out: auto (the model's own: its "
        "generation_config.json, a GGUF's general.sampling keys, greedy for the embedded SmolLM2), none "
        "(OpenAI's: temperature 1, top_p 1) or a folder with a generation_config.json "
        "(env GENERATION_CONFIG)",
    )


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("sampling")
    g.add_argument(
        "--max-tokens", type=int, default=env_default("MAX_TOKENS", 256, int), help="env MAX_TOKENS"
    )
    g.add_argument("--temperature", type=float, default=None, help="default: the model's")
    g.add_argument("--top-p", type=float, default=None, help="default: the model's")
    g.add_argument("--top-k", type=int, default=None, help="default: the model's")
    g.add_argument("--seed-sampling", dest="sampling_seed", type=int, default=None, help="per-request seed")
    add_generation_config_argument(g)


def sampling_params_from_args(args: argparse.Namespace):
    """The flags given, over the model's sampling defaults."""
    from pyinfer.engine.sampling_params import SamplingParams
    from pyinfer.generation_config import generation_defaults, with_defaults
    from pyinfer.model_files import resolve_model

    defaults = generation_defaults(args.generation_config, *resolve_model(args.model, args.load_format))
    fields = with_defaults(
        defaults,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.sampling_seed,
    )
    return SamplingParams(**fields)


def cmd_serve(args: argparse.Namespace) -> None:
    from pyinfer.server.launch import serve_main  # the HTTP stack is imported only to serve

    serve_main(args)


def cmd_generate(args: argparse.Namespace) -> None:
    from pyinfer.engine.llm import LLM

    llm = LLM(**vars(engine_config_from_args(args)))
    params = sampling_params_from_args(args)
    prompt = [{"role": "user", "content": args.prompt}] if args.chat else args.prompt
    for piece in llm.stream(prompt, params):
        print(piece, end="", flush=True)
    print()


def cmd_chat(args: argparse.Namespace) -> None:
    from pyinfer.engine.llm import LLM

    llm = LLM(**vars(engine_config_from_args(args)))
    params = sampling_params_from_args(args)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    print("Chatting with the model. Empty line or Ctrl-D to quit, /reset to start over.", file=sys.stderr)
    while True:
        try:
            line = input("\n> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if not line.strip():
            return
        if line.strip() == "/reset":
            messages = messages[:1] if args.system else []
            continue
        messages.append({"role": "user", "content": line})
        reply = []
        try:
            for piece in llm.stream(messages, params):
                reply.append(piece)
                print(piece, end="", flush=True)
        except KeyboardInterrupt:
            pass
        print()
        messages.append({"role": "assistant", "content": "".join(reply)})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pyinfer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="OpenAI-compatible HTTP server with the web UI")
    add_engine_arguments(serve)
    from pyinfer.server.config import add_server_arguments

    add_server_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    gen = sub.add_parser("generate", help="complete one prompt and print the text as it comes")
    gen.add_argument("prompt")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    add_engine_arguments(gen)
    add_sampling_arguments(gen)
    gen.set_defaults(func=cmd_generate)

    chat = sub.add_parser("chat", help="interactive chat in the terminal")
    chat.add_argument("--system", default=None, help="system prompt")
    add_engine_arguments(chat)
    add_sampling_arguments(chat)
    chat.set_defaults(func=cmd_chat)

    from pyinfer.bench import add_bench_subcommands

    add_bench_subcommands(
        sub.add_parser("bench", help="benchmarks: latency, throughput, serve"), add_engine_arguments
    )

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
