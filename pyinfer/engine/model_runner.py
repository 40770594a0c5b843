"""ModelRunner: owns the model and the KV cache; turns a scheduled batch into tensors, runs it, samples."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pyinfer.attention.metadata import AttentionMetadata
from pyinfer.attention.torch_backend import TorchAttentionBackend
from pyinfer.config import MIN_MODEL_LEN, EngineConfig, SettingsError
from pyinfer.distributed import SINGLE, ParallelGroup
from pyinfer.distributed.step_channel import StepSender
from pyinfer.engine.cpu_decode import FusedCpuDecode
from pyinfer.engine.cuda_graphs import CudaGraphs, batch_size_ladder, graph_memory, pad_to, size_ladder
from pyinfer.engine.messages import TokenLogprob
from pyinfer.engine.model_setup import resolve_kv_cache_dtype
from pyinfer.engine.sampling_tensors import build_sampling_tensors
from pyinfer.engine.scheduler import SchedulerOutput
from pyinfer.engine.sequence import Sequence
from pyinfer.engine.step_plan import StepPlan, plan_step
from pyinfer.kernels import triton_enabled
from pyinfer.kernels.compile_ahead import compiling_ahead
from pyinfer.layers.embedding import LMHead
from pyinfer.layers.linear import LinearBase
from pyinfer.layers.sampler import Sampler, SamplerOutput
from pyinfer.models.llama import LlamaForCausalLM

log = logging.getLogger(__name__)

# On the GPU an eager step (prompts together, or beside decodes) runs with its token count padded up a
# ladder (size_ladder: powers of two below EAGER_TOKENS, then its multiples) and its sampled rows up the
# decode graphs' batch sizes. cuBLAS chooses a product's kernel on the host at the first call of each
# shape, and a fresh server's first loads would meet new counts on clients' time; with these few, each is
# chosen at start. Padding rows write no KV and attend to nothing; they add at most EAGER_TOKENS - 1 rows
# to a step's products, and below a few hundred rows those products are bound by reading the weights.
EAGER_TOKENS = 64
WARMED_TOKENS = 8192  # counts chosen at start up to here; past it a step's products dwarf a first choice


def patch_in_flight(
    input_ids: torch.Tensor, rows: torch.Tensor, sampled: torch.Tensor, sources: torch.Tensor
) -> None:
    """input_ids[rows] = sampled[sources], on the device: the tokens a step still in flight sampled.
    plan_step lists at most one row per sequence, in batch order, so when every input row
    is listed they are 0..n-1 and one gather writes them all."""
    if rows.numel() == input_ids.numel():
        torch.index_select(sampled, 0, sources, out=input_ids)
    else:
        input_ids[rows] = sampled[sources]


@dataclass
class StepInputs:
    input_ids: torch.Tensor
    positions: torch.Tensor
    meta: AttentionMetadata
    token_rows: torch.Tensor
    patch_rows: torch.Tensor  # input rows whose token is still in flight ...
    patch_sources: torch.Tensor  # ... at these rows of the previous step's sampled ids
    uploaded: torch.Tensor  # all of the above end to end, in the order cuda_graphs reads them


@dataclass
class InFlight:
    """A launched step: its sampling sequences, where their new token goes, and the sampled ids."""

    seqs: list[Sequence]
    positions: list[int]  # index in each sequence's token_ids of the token being sampled
    out: SamplerOutput | None
    host_ids: torch.Tensor | None
    done: torch.cuda.Event | None

    @property
    def token_ids(self) -> torch.Tensor | None:
        """The sampled ids on the device; None for a step in which nothing samples (a prefill chunk)."""
        return None if self.out is None else self.out.token_ids


class ModelRunner:
    def __init__(
        self,
        config: EngineConfig,
        model: LlamaForCausalLM,
        eos_token_ids: list[int],
        group: ParallelGroup = SINGLE,
        steps: StepSender | None = None,
    ):
        """group: the tensor-parallel group the model is a shard of; steps: on rank 0 of a group of
        several, the channel on which each step's plan reaches the other ranks."""
        self.config = config
        self.model = model
        self.group = group
        self.steps = steps
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        quantized = model.lm_head.quantized is not None  # int8 wherever any linear is quantized
        self.kv_dtype = resolve_kv_cache_dtype(config.kv_cache_dtype, self.dtype, self.device, quantized)
        self.block_size = config.block_size
        self.vocab_size = model.config.vocab_size
        self.eos_token_ids = eos_token_ids
        self.sampler = Sampler()
        self._staging = [torch.empty(0, dtype=torch.long)] * 2  # pinned host buffers for step inputs
        self._upload_flip = 0
        self._pinned_ids = [torch.empty(0, dtype=torch.long)] * 2  # pinned host buffers for sampled ids
        self._flip = 0
        self.backend = self._attention_backend()
        # the sizes eager steps are padded to: on the GPU with the Triton backend (None: not padded)
        self.token_sizes: list[int] | None = None
        self.row_sizes: list[int] | None = None
        if self.is_cuda and self.backend.name == "triton":
            self.token_sizes = size_ladder(config.max_num_batched_tokens, EAGER_TOKENS)
            self.row_sizes = batch_size_ladder(config.max_num_seqs)
        self.context_limit = self._context_limit()  # refused here, before the KV cache is sized
        sizing = time.perf_counter()
        self.num_blocks = self._num_kv_blocks()
        self._allocate_kv_cache(self.num_blocks)
        self._log_kv_cache(time.perf_counter() - sizing)
        self.max_model_len = self._served_length()
        self.fused_decode = FusedCpuDecode.for_model(model)
        self.graphs = None
        if self.uses_graphs:
            max_blocks = -(-self.max_model_len // self.block_size)
            max_chunk = min(config.max_num_batched_tokens, self.max_model_len)
            self.graphs = CudaGraphs(
                model, self.backend, config.max_num_seqs, max_chunk, max_blocks, self.block_size
            )
        if self.token_sizes is not None:
            self._choose_product_kernels()

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def _context_limit(self) -> int:
        """The longest context the config and the model allow, before the KV cache's size caps it:
        --max-model-len where given, refused past the model's positions as vLLM refuses it (a client
        would meet a silent cut as 400s), else the model's positions."""
        positions = self.model.config.max_position_embeddings
        asked = self.config.max_model_len
        if asked is not None and asked > positions:
            raise SettingsError(f"--max-model-len {asked} is more than the model's {positions} positions")
        return asked or positions

    def _served_length(self) -> int:
        """The longest context served: the context limit, which a --max-model-len given must find room
        for in the KV cache; else as much of it as the cache holds, said in the log where that is less."""
        capacity = self.num_blocks * self.block_size
        asked = self.config.max_model_len
        if capacity < (asked or MIN_MODEL_LEN):
            raise SettingsError(
                f"the KV cache holds {capacity} tokens, less than "
                + (f"--max-model-len {asked}" if asked else f"the shortest context served ({MIN_MODEL_LEN})")
                + f": raise {self._cache_size_flag} (or lower --max-model-len)"
            )
        if capacity < self.context_limit:  # only where --max-model-len is left out
            log.warning(
                "max_model_len %d: all the KV cache holds, under the model's %d positions (raise %s for more)",
                capacity,
                self.context_limit,
                self._cache_size_flag,
            )
        return min(self.context_limit, capacity)

    @property
    def _cache_size_flag(self) -> str:
        """The flag that sizes the KV cache here."""
        if self.config.num_kv_blocks:
            return "--num-kv-blocks"
        return "--gpu-memory-utilization" if self.is_cuda else "--kv-cache-memory-gb"

    @property
    def uses_graphs(self) -> bool:
        return self.is_cuda and not self.config.enforce_eager and self.backend.name == "triton"

    def _attention_backend(self):
        probe = torch.empty(0, device=self.device)
        attn = self.model.attention_layers()[0]  # this rank's heads
        if triton_enabled(probe):
            from pyinfer.attention.triton_backend import TritonAttentionBackend

            return TritonAttentionBackend(attn.num_kv_heads, self.device)
        return TorchAttentionBackend(attn.head_dim, self.device)

    # ---- KV cache -------------------------------------------------------------------------------
    def _block_bytes(self) -> int:
        """A block's bytes on this rank, which holds its own KV heads."""
        layers = self.model.attention_layers()
        per_token = 2 * len(layers) * layers[0].num_kv_heads * layers[0].head_dim * self.kv_dtype.itemsize
        return per_token * self.block_size

    def _num_kv_blocks(self) -> int:
        if self.config.num_kv_blocks:
            return self.config.num_kv_blocks
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._profile_run()
            free, total = torch.cuda.mem_get_info(self.device)
            used = total - free
            peak_extra = torch.cuda.max_memory_allocated(self.device) - torch.cuda.memory_allocated(
                self.device
            )
            budget = total * self.config.gpu_memory_utilization - used - peak_extra
            if self.uses_graphs:  # captured after the KV cache is allocated: leave room for them
                budget -= graph_memory(
                    self.config.max_num_seqs,
                    min(self.config.max_num_batched_tokens, self.context_limit),
                    self.vocab_size,
                    self.dtype.itemsize,
                    peak_extra / self.config.max_num_batched_tokens,
                )
        else:
            # --kv-cache-memory-gb is the size of the whole cache: each rank holds its heads' share
            budget = self.config.kv_cache_memory_gb * 2**30 / self.group.size
        # the scheduler's block ids must exist on every rank: the smallest rank's count
        num_blocks = self.group.min(int(budget // self._block_bytes()))
        if num_blocks < 1:
            raise SettingsError(f"no memory is left for the KV cache: raise {self._cache_size_flag}")
        return num_blocks

    def _profile_run(self) -> None:
        """One prefill at the full token budget in a throwaway cache, to learn the activations' peak memory."""
        n = self.config.max_num_batched_tokens
        num_blocks = -(-n // self.block_size)
        self._allocate_kv_cache(num_blocks)
        ids = torch.zeros(n, dtype=torch.long, device=self.device)
        meta = self.backend.build_metadata(
            slot_mapping=torch.arange(n, device=self.device),
            seq_lens=torch.tensor([n], device=self.device),
            block_tables=torch.arange(num_blocks, device=self.device)[None],
            num_decodes=0,
            query_lens=[n],
            seq_lens_host=[n],
            block_size=self.block_size,
            query_start_loc=torch.tensor([0, n], device=self.device),
            max_query_len=n,
        )
        # the token budget may pass the model's longest position: wrap the positions round
        positions = torch.arange(n, device=self.device) % self.model.config.max_position_embeddings
        rows = slice(-self.config.max_num_seqs, None)

        def prefill() -> None:
            x, residual = self.model(ids, positions, meta)
            self.model.compute_logits(x[rows], residual[rows])

        with torch.inference_mode():
            if self.backend.name == "triton":
                with compiling_ahead("the KV cache sizing's prefill"):
                    prefill()
            prefill()
        torch.cuda.synchronize(self.device)
        self._allocate_kv_cache(0)

    def _allocate_kv_cache(self, num_blocks: int) -> None:
        layers = self.model.attention_layers()
        shape = self.backend.kv_cache_shape(
            num_blocks, self.block_size, layers[0].num_kv_heads, layers[0].head_dim
        )
        for attn in layers:
            attn.kv_cache = torch.zeros(shape, dtype=self.kv_dtype, device=self.device)
            attn.backend = self.backend

    def _log_kv_cache(self, seconds: float) -> None:
        """Its size, and the time that sizing and allocating it took (on a GPU a prefill at the full token
        budget measures the activations' peak: Triton compiles its kernels then, on an empty cache)."""
        log.info(
            "KV cache: %d blocks of %d tokens in %s (%.2f GiB), sized and allocated in %.1fs",
            self.num_blocks,
            self.block_size,
            str(self.kv_dtype).removeprefix("torch."),
            self.num_blocks * self._block_bytes() / 2**30,
            seconds,
        )

    # ---- one step -----------------------------------------------------------------------------
    @torch.inference_mode()
    def launch(
        self,
        batch: SchedulerOutput,
        previous: InFlight | None = None,
        masks: Callable[[list[Sequence]], torch.Tensor | None] | None = None,
    ) -> InFlight:
        """Queues the batch on the device without waiting for it. Input tokens still in flight from
        `previous` (placeholders in token_ids) are taken from its sampled ids on the device.
        `masks`, given the sequences the step samples, returns their grammars' token bitmask on the host
        (or None): it runs once the forward pass is queued, so the host fills the masks (from
        `previous`'s tokens) while the device computes.
        In a group, the other ranks get the step's plan first and run the same forward on their shards;
        the ids sampled here reach them by broadcast."""
        plan, sample_seqs = plan_step(batch, self.block_size)
        if self.steps is not None:
            self.steps.send(plan.encode())
        forward = self._run(plan, previous.token_ids if previous is not None else None)
        st = None
        if forward is not None:  # built while the device runs the forward pass queued above
            st = build_sampling_tensors(sample_seqs, self.vocab_size, self.eos_token_ids, self.device)
        bitmask = masks(sample_seqs) if masks is not None else None
        if forward is None:
            return InFlight([], [], None, None, None)
        logits, argmax = forward
        if bitmask is not None:
            st.token_bitmask = bitmask.to(self.device, non_blocking=True)  # pinned on a GPU
        out = self.sampler(logits, st, argmax)
        self.group.broadcast(out.token_ids)
        host_ids = out.token_ids
        done = None
        if self.is_cuda:  # one device-to-host copy of the sampled ids, into pinned memory
            self._flip = 1 - self._flip
            n = out.token_ids.shape[0]
            if self._pinned_ids[self._flip].numel() < n:
                self._pinned_ids[self._flip] = torch.empty(max(n, 256), dtype=torch.long).pin_memory()
            host_ids = self._pinned_ids[self._flip][:n]
            host_ids.copy_(out.token_ids, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        return InFlight(sample_seqs, [s.num_tokens for s in sample_seqs], out, host_ids, done)

    @torch.inference_mode()
    def follow(self, plan: StepPlan, sampled: torch.Tensor | None) -> torch.Tensor | None:
        """A step on a rank other than 0: rank 0's plan run on this shard. `sampled` are the ids rank 0
        sampled in the previous step; returns this step's (None when it samples nothing)."""
        if self._run(plan, sampled) is None:
            return None
        return self.group.broadcast(torch.empty(plan.num_samples, dtype=torch.long, device=self.device))

    def _run(
        self, plan: StepPlan, sampled: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The forward pass of a plan: the logits of its sampled rows and their argmax where a graph
        took it, or None when no row samples."""
        inputs = self._inputs(plan)
        if inputs.patch_rows.numel():
            patch_in_flight(inputs.input_ids, inputs.patch_rows, sampled, inputs.patch_sources)
        meta = inputs.meta
        if not plan.num_samples:
            self._forward(inputs)
            return None
        if self.graphs is not None and plan.num_samples == meta.num_seqs:
            replayed = self.graphs.run(inputs.uploaded, meta)
            if replayed is not None:
                return replayed
        x, residual = self._forward(inputs)
        rows = inputs.token_rows
        n = rows.numel()
        if self.row_sizes is not None and (pad := pad_to(self.row_sizes, n) - n):
            rows = F.pad(rows, (0, pad))  # padding rows repeat row 0
        return self.model.compute_logits(x[rows], residual[rows])[:n], None

    def _forward(self, inputs: StepInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's forward pass (over the padded token count on the GPU: rows past the step's tokens
        are padding), or the CPU's fused decode where it applies."""
        fused = self.fused_decode
        if fused is not None and fused.applies(inputs.meta):
            return fused(inputs.input_ids, inputs.positions, inputs.meta)
        ids, positions = inputs.input_ids, inputs.positions
        if self.token_sizes is not None and (pad := pad_to(self.token_sizes, ids.numel()) - ids.numel()):
            ids, positions = F.pad(ids, (0, pad)), F.pad(positions, (0, pad))
        return self.model(ids, positions, inputs.meta)

    def _choose_product_kernels(self) -> None:
        """Every linear layer's product at every padded token count (up to WARMED_TOKENS), and the LM
        head's at every padded count of sampled rows, once, so that cuBLAS chooses their kernels now.
        Largest first: each smaller output then fits in the memory the larger one left cached."""
        assert self.token_sizes is not None and self.row_sizes is not None
        start = time.perf_counter()
        counts = [c for c in reversed(self.token_sizes) if c <= WARMED_TOKENS]
        inputs: dict[int, torch.Tensor] = {}  # one per width: row slices of it are laid out as a step's
        shapes = set()
        with torch.inference_mode():
            for module in self.model.modules():
                if not isinstance(module, LinearBase) or isinstance(module, LMHead) or module.weight is None:
                    continue
                if (module.weight.shape, module.weight.dtype) in shapes:
                    continue
                shapes.add((module.weight.shape, module.weight.dtype))
                width = module.weight.shape[1]
                if width not in inputs:
                    inputs[width] = torch.zeros(counts[0], width, dtype=self.dtype, device=self.device)
                for count in counts:
                    module.matmul(inputs[width][:count])
            rows = self.row_sizes[::-1]
            x = torch.zeros(rows[0], self.model.config.hidden_size, dtype=self.dtype, device=self.device)
            for count in rows:
                self.model.compute_logits(x[:count], x[:count])
        if self.is_cuda:  # the time the choices took, not their launches'
            torch.cuda.synchronize(self.device)
        log.info(
            "chose the kernels of %d product shapes and %d LM-head row counts in %.1fs",
            len(shapes) * len(counts),
            len(rows),
            time.perf_counter() - start,
        )

    @staticmethod
    def collect(step: InFlight) -> list[int]:
        """Waits for a launched step; returns its sampled token ids."""
        if step.done is not None:
            step.done.synchronize()
        return step.host_ids.tolist() if step.seqs else []

    def _inputs(self, plan: StepPlan) -> StepInputs:
        """The plan's tensors on the device, and the attention metadata of the step."""
        flat, parts = self._upload(plan.values, plan.sizes)
        ids, pos, slot_mapping, lens, starts, rows, flat_tables, patches, sources = parts
        meta = self.backend.build_metadata(
            slot_mapping=slot_mapping,
            seq_lens=lens,
            block_tables=flat_tables.view(len(plan.seq_lens), plan.width),
            num_decodes=plan.num_decodes,
            query_lens=plan.query_lens,
            seq_lens_host=plan.seq_lens,
            block_size=self.block_size,
            query_start_loc=starts,
            max_query_len=max(plan.query_lens),
        )
        return StepInputs(ids, pos, meta, rows, patches, sources, flat)

    def _upload(self, values: np.ndarray, sizes: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The plan's int64 values on the device: one staging copy through pinned memory, no sync.
        Returns the device copy of them all, end to end, and each list's view of it."""
        values = torch.from_numpy(values)
        if self.is_cuda:
            # Two pinned buffers in turn: the previous step's copy may still be queued behind its kernels.
            self._upload_flip = 1 - self._upload_flip
            if self._staging[self._upload_flip].numel() < values.numel():
                self._staging[self._upload_flip] = torch.empty(
                    2 * values.numel(), dtype=torch.long
                ).pin_memory()
            staging = self._staging[self._upload_flip][: values.numel()]
            staging.copy_(values)
            values = staging.to(self.device, non_blocking=True)
        return values, list(values.split(sizes))

    @staticmethod
    def logprobs(step: InFlight) -> list[TokenLogprob | None]:
        """Per sampling sequence: its token's logprob and top alternatives, when it asked for them."""
        out = step.out
        if out is None or out.logprobs is None:
            return [None] * len(step.seqs)
        token_ids = step.host_ids.tolist()  # out.token_ids may be a graph's output, rewritten since
        chosen = out.logprobs.tolist()
        top_ids = out.top_ids.tolist() if out.top_ids is not None else None
        top_lps = out.top_logprobs.tolist() if out.top_logprobs is not None else None
        results: list[TokenLogprob | None] = []
        for row, seq in enumerate(step.seqs):
            k = seq.params.logprobs
            if k is None:
                results.append(None)
                continue
            # a token the constraint or min_tokens forbids has probability 0 (-inf, which JSON cannot
            # carry): left out, so the list may be shorter than k
            pairs = zip(top_ids[row][:k], top_lps[row][:k], strict=True) if k and top_ids else ()
            top = [(token, lp) for token, lp in pairs if math.isfinite(lp)]
            results.append(TokenLogprob(token_ids[row], chosen[row], top))
        return results
