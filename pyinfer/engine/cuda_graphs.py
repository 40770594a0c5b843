"""CUDA graphs for decode steps: one graph per batch size of a ladder, replayed with static inputs.

A decode batch is padded up to the next captured size; padding rows write no KV (slot -1) and
attend to nothing (length 0). The graph covers the model, the LM head and the logits' argmax (all a
greedy step samples); other sampling runs after it.
"""

from __future__ import annotations

import logging
import time

import torch

from pyinfer.attention.metadata import AttentionMetadata
from pyinfer.kernels import MAX_SPLITS, triton_enabled
from pyinfer.models.llama import LlamaForCausalLM

log = logging.getLogger(__name__)


def batch_size_ladder(max_num_seqs: int) -> list[int]:
    sizes = [1, 2, 4, 8, *range(16, max_num_seqs + 1, 16)]
    return sorted({s for s in sizes if s < max_num_seqs} | {max_num_seqs})


def decode_splits(batch_size: int, num_kv_heads: int, num_sms: int) -> int:
    """Enough KV splits that the decode kernel fills the GPU."""
    return max(1, min(MAX_SPLITS, -(-2 * num_sms // (max(batch_size, 1) * num_kv_heads))))


class DecodeGraphs:
    def __init__(self, model: LlamaForCausalLM, max_num_seqs: int, max_blocks_per_seq: int, block_size: int):
        self.model = model
        self.block_size = block_size
        self.device = next(model.parameters()).device
        self.sizes = batch_size_ladder(max_num_seqs)
        n, dev = max_num_seqs, self.device
        # rows: input ids, positions, KV slots, sequence lengths; one copy fills them all
        self.vectors = torch.zeros(4, n, dtype=torch.long, device=dev)
        self.input_ids, self.positions, self.slot_mapping, self.seq_lens = self.vectors
        self.slot_mapping.fill_(-1)
        self.block_tables = torch.zeros(n, max_blocks_per_seq, dtype=torch.long, device=dev)
        self.num_sms = torch.cuda.get_device_properties(dev).multi_processor_count
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, torch.Tensor] = {}
        self.argmax: dict[int, torch.Tensor] = {}
        self._capture()

    def _meta(self, bs: int) -> AttentionMetadata:
        return AttentionMetadata(
            slot_mapping=self.slot_mapping[:bs],
            seq_lens=self.seq_lens[:bs],
            block_tables=self.block_tables[:bs],
            num_decodes=bs,
            query_lens=[1] * bs,
            seq_lens_host=[],
            block_size=self.block_size,
            decode_splits=decode_splits(bs, self.model.config.num_key_value_heads, self.num_sms),
        )

    def _forward(self, bs: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, residual = self.model(self.input_ids[:bs], self.positions[:bs], self._meta(bs))
        logits = self.model.compute_logits(x, residual)
        if not triton_enabled(logits):
            return logits, logits.argmax(dim=-1)
        from pyinfer.kernels.argmax import argmax  # torch's runs one row of a large vocabulary on one block

        return logits, argmax(logits)

    @torch.inference_mode()
    def _capture(self) -> None:
        start = time.perf_counter()
        free_before = torch.cuda.mem_get_info(self.device)[0]
        pool = torch.cuda.graph_pool_handle()
        for bs in reversed(self.sizes):  # largest first, so the smaller ones reuse its memory pool
            self._forward(bs)  # warm up: compile kernels, allocate workspaces
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.logits[bs], self.argmax[bs] = self._forward(bs)
            self.graphs[bs] = graph
        torch.cuda.synchronize(self.device)
        used = (free_before - torch.cuda.mem_get_info(self.device)[0]) / 2**20
        log.info(
            "captured %d CUDA graphs (batch sizes %s) in %.1fs, using %.0f MiB",
            len(self.sizes),
            self.sizes,
            time.perf_counter() - start,
            used,
        )

    def can_run(self, num_seqs: int, width: int) -> bool:
        return num_seqs <= self.sizes[-1] and width <= self.block_tables.shape[1]

    def run(self, vectors: torch.Tensor, block_tables: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Replays the smallest graph that fits the batch: vectors [4, num_seqs] holds its input ids,
        positions, slots and lengths. Returns logits [num_seqs, vocab] and their argmax."""
        n = vectors.shape[1]
        bs = next(s for s in self.sizes if s >= n)
        self.vectors[:, :n].copy_(vectors, non_blocking=True)
        if n < bs:
            self.slot_mapping[n:bs].fill_(-1)
            self.seq_lens[n:bs].zero_()
        self.block_tables[:n, : block_tables.shape[1]].copy_(block_tables, non_blocking=True)
        self.graphs[bs].replay()
        return self.logits[bs][:n], self.argmax[bs][:n]
