"""CUDA graphs: decode batches and single-prompt prefills, replayed with static inputs.

A step launched eagerly costs the host tens of microseconds per kernel: milliseconds for a model's
forward, more than the GPU needs for a batch-1 decode or a short prompt. A graph replays the whole
forward from one launch.

- Decode: one graph per batch size of a ladder; a batch is padded up to the next captured size.
  Padding rows write no KV (slot -1) and attend to nothing (length 0).
- Prefill: one graph per token count of a ladder, for a step that is one sequence's prompt chunk
  (after a cached prefix or not). The chunk is padded up to the next captured count; padding rows
  write no KV, the attention kernel reads the chunk's real length from the device, and only the last
  real row reaches the LM head.

Both read the step's inputs as the model runner uploads them, end to end: input ids, positions and
KV slots (one per token), then sequence lengths, query starts and the rows of the sampled tokens.
Each graph covers the model, the LM head and the logits' argmax (all a greedy step samples); other
sampling runs after it. All graphs share one memory pool: they run one at a time on one stream.
"""

from __future__ import annotations

import ctypes
import logging
import time
from bisect import bisect_left
from collections.abc import Callable

import torch

from pyinfer.attention.backend import AttentionBackend
from pyinfer.attention.metadata import AttentionMetadata
from pyinfer.engine.cuda_runtime import cuda_runtime
from pyinfer.kernels import triton_enabled
from pyinfer.kernels.compile_ahead import compiling_ahead
from pyinfer.models.llama import LlamaForCausalLM

log = logging.getLogger(__name__)

# Longest prompt chunk replayed from a graph. Past it a prefill's GPU time hides the host's launches.
MAX_PREFILL_GRAPH_TOKENS = 2048

Outputs = tuple[torch.Tensor, torch.Tensor]  # logits [rows, vocab] and their argmax [rows]


def size_ladder(limit: int, step: int) -> list[int]:
    """Sizes up to `limit`, its top: powers of two below `step`, then multiples of it."""
    sizes = [
        *(1 << i for i in range((step - 1).bit_length()) if 1 << i < step),
        *range(step, limit + 1, step),
    ]
    return sorted({s for s in sizes if s < limit} | {limit})


def pad_to(sizes: list[int], n: int) -> int:
    """The smallest of `sizes` (ascending) that holds n; n itself past the largest."""
    i = bisect_left(sizes, n)
    return sizes[i] if i < len(sizes) else n


def batch_size_ladder(max_num_seqs: int) -> list[int]:
    return size_ladder(max_num_seqs, 16)


def prefill_size_ladder(max_tokens: int) -> list[int]:
    """Token counts of the prefill graphs: padding wastes at most 127 tokens past 256."""
    sizes = [16, 32, 64, 128, 192, *range(256, max_tokens + 1, 128)]
    return sorted({s for s in sizes if s < max_tokens} | {max_tokens})


def graph_memory(
    max_num_seqs: int,
    max_prefill_tokens: int,
    vocab: int,
    logits_itemsize: int,
    activation_bytes_per_token: float,
) -> int:
    """Estimate of the memory CudaGraphs keeps: every graph's logits and argmax, and the activations of
    its largest forward (the smaller ones reuse them), for the KV budget to leave aside."""
    decode = batch_size_ladder(max_num_seqs)
    prefill = prefill_size_ladder(min(max_prefill_tokens, MAX_PREFILL_GRAPH_TOKENS))
    outputs = (sum(decode) + len(prefill)) * (vocab * logits_itemsize + 8)
    return int(outputs + activation_bytes_per_token * max(decode[-1], prefill[-1]))


def logits_and_argmax(model: LlamaForCausalLM, x: torch.Tensor, residual: torch.Tensor) -> Outputs:
    logits = model.compute_logits(x, residual)
    if not triton_enabled(logits):
        return logits, logits.argmax(dim=-1)
    from pyinfer.kernels.argmax import argmax  # torch's runs one row of a large vocabulary on one block

    return logits, argmax(logits)


def upload(graph: torch.cuda.CUDAGraph) -> None:
    """Puts an instantiated graph on the device now. CUDA otherwise does it at the graph's first launch,
    which would be on a client's step: each batch size's graph is first replayed when the load first
    reaches that size. Where it cannot, at that launch still."""
    runtime = cuda_runtime()
    if runtime is None:
        return
    stream = torch.cuda.current_stream().cuda_stream
    code = runtime.cudaGraphUpload(ctypes.c_void_p(graph.raw_cuda_graph_exec()), ctypes.c_void_p(stream))
    if code != 0:
        runtime.cudaGetLastError()  # left set, it would fail the next launch
        log.warning(
            "could not upload a CUDA graph (%s): it uploads at its first replay",
            torch.cuda.cudart().cudaGetErrorString(code),
        )


class GraphLadder:
    """Graphs of one forward at several sizes, captured largest first so the others reuse its memory."""

    def __init__(
        self, sizes: list[int], forward: Callable[[int], Outputs], pool: tuple[int, int], device: torch.device
    ):
        self.sizes = sizes
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, Outputs] = {}
        for size in reversed(sizes):
            forward(size)  # warm up: compile kernels, allocate workspaces
            torch.cuda.synchronize(device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[size] = forward(size)
            upload(graph)
            self.graphs[size] = graph

    def fits(self, size: int) -> bool:
        return size <= self.sizes[-1]

    def padded(self, size: int) -> int:
        return pad_to(self.sizes, size)

    def replay(self, size: int) -> Outputs:
        self.graphs[size].replay()
        return self.outputs[size]


class CudaGraphs:
    """The decode and prefill ladders, their static inputs, and the choice of graph for a step."""

    def __init__(
        self,
        model: LlamaForCausalLM,
        backend: AttentionBackend,
        max_num_seqs: int,
        max_prefill_tokens: int,
        max_blocks_per_seq: int,
        block_size: int,
    ):
        self.model = model
        self.backend = backend
        self.block_size = block_size
        dev = next(model.parameters()).device
        self.block_tables = torch.zeros(max_num_seqs, max_blocks_per_seq, dtype=torch.long, device=dev)
        # decode rows: input ids, positions, KV slots, sequence lengths; one copy fills them all
        self.decode_inputs = torch.zeros(4, max_num_seqs, dtype=torch.long, device=dev)
        self.decode_slots, self.decode_lens = self.decode_inputs[2], self.decode_inputs[3]
        self.decode_slots.fill_(-1)
        # prefill: input ids, positions, KV slots per token; then [seq len, 0, chunk length, last row]
        tokens = min(max_prefill_tokens, MAX_PREFILL_GRAPH_TOKENS)
        self.prefill_inputs = torch.zeros(3, tokens, dtype=torch.long, device=dev)
        self.prefill_slots = self.prefill_inputs[2]
        self.prefill_slots.fill_(-1)
        self.prefill_bounds = torch.zeros(4, dtype=torch.long, device=dev)

        start = time.perf_counter()
        if cuda_runtime() is None:
            log.info("CUDA runtime not found by its name: each graph uploads at its first replay")
        torch.cuda.empty_cache()  # capture empties the cache too: measure around what the graphs keep
        free_before = torch.cuda.mem_get_info(dev)[0]
        pool = torch.cuda.graph_pool_handle()
        prefill_sizes, decode_sizes = prefill_size_ladder(tokens), batch_size_ladder(max_num_seqs)
        with torch.inference_mode():
            with compiling_ahead("the CUDA graphs", for_capture=True):
                for size in reversed(prefill_sizes):  # largest first, as captured: workspaces grow once
                    self._prefill_forward(size)
                for size in reversed(decode_sizes):
                    self._decode_forward(size)
            self.prefill = GraphLadder(prefill_sizes, self._prefill_forward, pool, dev)
            self.decode = GraphLadder(decode_sizes, self._decode_forward, pool, dev)
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        log.info(
            "captured CUDA graphs in %.1fs, using %.0f MiB: decode batch sizes %s, prefill token counts %s",
            time.perf_counter() - start,
            (free_before - torch.cuda.mem_get_info(dev)[0]) / 2**20,
            self.decode.sizes,
            self.prefill.sizes,
        )

    def _decode_forward(self, bs: int) -> Outputs:
        ids, positions, slots, seq_lens = self.decode_inputs[:, :bs]
        meta = self.backend.build_metadata(
            slot_mapping=slots,
            seq_lens=seq_lens,
            block_tables=self.block_tables[:bs],
            num_decodes=bs,
            query_lens=[1] * bs,
            seq_lens_host=[],
            block_size=self.block_size,
        )
        return logits_and_argmax(self.model, *self.model(ids, positions, meta))

    def _prefill_forward(self, tokens: int) -> Outputs:
        ids, positions, slots = self.prefill_inputs[:, :tokens]
        meta = self.backend.build_metadata(
            slot_mapping=slots,
            seq_lens=self.prefill_bounds[0:1],
            block_tables=self.block_tables[:1],
            num_decodes=0,
            query_lens=[tokens],
            seq_lens_host=[],
            block_size=self.block_size,
            query_start_loc=self.prefill_bounds[1:3],
            max_query_len=tokens,
        )
        x, residual = self.model(ids, positions, meta)
        last = self.prefill_bounds[3:]
        return logits_and_argmax(self.model, x.index_select(0, last), residual.index_select(0, last))

    def run(self, inputs: torch.Tensor, meta: AttentionMetadata) -> Outputs | None:
        """Replays the graph for a step in which every sequence samples a token, from the step's
        uploaded inputs (laid out as the module's docstring says). Returns the logits and argmax of
        each sequence's last token, or None when no captured graph fits the step."""
        n, width = meta.num_seqs, meta.block_tables.shape[1]
        if width > self.block_tables.shape[1]:
            return None
        if meta.num_decodes == n and self.decode.fits(n):
            bs = self.decode.padded(n)
            self.decode_inputs[:, :n].copy_(inputs[: 4 * n].view(4, n))
            if n < bs:
                self.decode_slots[n:bs].fill_(-1)
                self.decode_lens[n:bs].zero_()
            self.block_tables[:n, :width].copy_(meta.block_tables)
            logits, argmax = self.decode.replay(bs)
            return logits[:n], argmax[:n]
        tokens = meta.query_lens[0]
        if n == 1 and meta.num_decodes == 0 and self.prefill.fits(tokens):
            padded = self.prefill.padded(tokens)
            self.prefill_inputs[:, :tokens].copy_(inputs[: 3 * tokens].view(3, tokens))
            self.prefill_bounds.copy_(inputs[3 * tokens : 3 * tokens + 4])
            if tokens < padded:
                self.prefill_slots[tokens:padded].fill_(-1)
            self.block_tables[:1, :width].copy_(meta.block_tables)
            return self.prefill.replay(padded)
        return None
