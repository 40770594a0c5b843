"""LLMEngine: add_request / step / abort over the scheduler and the model runner."""

from __future__ import annotations

import logging
import time

import torch

from pyinfer.config import EngineConfig
from pyinfer.distributed import SINGLE, ParallelGroup
from pyinfer.distributed.step_channel import StepSender
from pyinfer.engine.block_manager import BlockManager
from pyinfer.engine.kv_events import KVEventPublisher
from pyinfer.engine.messages import SeqOutput
from pyinfer.engine.model_runner import InFlight, ModelRunner
from pyinfer.engine.model_setup import load_shard, resolve_device
from pyinfer.engine.scheduler import Scheduler, SchedulerOutput
from pyinfer.engine.sequence import Sequence
from pyinfer.engine.step_plan import PLACEHOLDER
from pyinfer.engine.structured_output import Compilation, Grammars, default_grammar_workers
from pyinfer.engine.tensor_parallel import TensorParallelWorkers
from pyinfer.layers.sampler import apply_token_bitmask
from pyinfer.model_files import resolve_model
from pyinfer.models.loader import load_config
from pyinfer.sampling_params import SamplingParams, SamplingParamsError, StructuredOutput, check_request

log = logging.getLogger(__name__)

GRAMMAR_WARM_UP_TIMEOUT_S = 120.0  # the grammar workers' start, past which the server is ready without them
WARM_UP_TOKENS = 4  # each warm-up request's: enough that later prompts meet odd and even numbers of decodes


class LLMEngine:
    def __init__(self, config: EngineConfig):
        torch.manual_seed(config.seed)  # unseeded sampling is reproducible from one start to the next
        start = time.perf_counter()
        self.model_path, self.load_format = resolve_model(config.model, config.load_format)
        device = resolve_device(config.device)
        self.config = config = config.for_device(device.type)
        self.workers = None  # ranks 1.. of a tensor-parallel group
        group, steps = SINGLE, None
        if config.tensor_parallel_size > 1:
            self.workers = TensorParallelWorkers(config, self.model_path, self.load_format, device)
            group, steps, device = self.workers.group, self.workers.steps, self.workers.group.device
        self.device = device
        grammars = None
        try:
            self.model_config = load_config(self.model_path, self.load_format)
            # before the load, so that the grammar worker processes start beside it (seconds of CPU each)
            self.grammars = grammars = self.new_grammars(config.grammar_workers)
            self._set_up(config, device, group, steps, start)
        except BaseException:
            if self.workers is not None:
                self.workers.kill()
            if grammars is not None:
                try:
                    grammars.close()
                except Exception:  # the start's own error is the one to raise
                    log.exception("the grammars could not be closed after a failed start")
            raise

    def _set_up(
        self,
        config: EngineConfig,
        device: torch.device,
        group: ParallelGroup,
        steps: StepSender | None,
        start: float,
    ) -> None:
        """Everything after the group: the model (this rank's shard), its runner, and the scheduling."""
        model = load_shard(config, self.model_path, self.load_format, device, group)
        log.info(
            "loaded %s (%s) on %s in %s in %.1fs%s",
            self.model_path,
            self.load_format,
            device,
            next(model.parameters()).dtype,
            time.perf_counter() - start,
            f", tensor-parallel rank 0 of {group.size}" if group.size > 1 else "",
        )
        self.runner = ModelRunner(config, model, model.config.eos_token_ids, group, steps)
        self.max_model_len = self.runner.max_model_len
        # the next step launched before this one's ids reach the host: a GPU's, unless --no-overlap (on the
        # CPU each step completes before it returns, so it would gain nothing there)
        self.overlap = self.runner.is_cuda and config.overlap_scheduling
        self.block_manager = BlockManager(
            self.runner.num_blocks,
            config.block_size,
            config.enable_prefix_caching,
            kv_events=config.kv_events_endpoint is not None,
        )
        self.kv_event_publisher = KVEventPublisher.from_config(config)  # None unless configured
        self.scheduler = Scheduler(
            self.block_manager, config.max_num_seqs, config.max_num_batched_tokens, config.scheduling_policy
        )
        self._compiling: list[tuple[Compilation, list[Sequence]]] = []  # requests waiting for their grammar
        self._rejected: list[tuple[str, SamplingParamsError]] = []  # refused after add_request returned
        self.num_constrained_requests = 0
        self._requests: dict[str, list[Sequence]] = {}
        self.num_tokens_computed = 0  # tokens run through the model since start (prefix hits skip it)
        self._in_flight: InFlight | None = None  # the launched step whose tokens are not yet on the host

    def new_grammars(self, workers: int | None, max_rows: int | None = None) -> Grammars:
        """Grammars for this model's vocabulary in `workers` processes (None: the device's default), for
        masks of up to `max_rows` rows (default: a full batch)."""
        cfg = self.model_config
        return Grammars(
            (self.model_path, self.load_format, self.config.tokenizer),
            cfg.vocab_size,
            list(cfg.eos_token_ids),  # accepting one ends a grammar
            default_grammar_workers(self.device.type) if workers is None else workers,
            max_rows or self.config.max_num_seqs,
            pin=self.device.type == "cuda",
            max_json_whitespace=self.config.max_json_whitespace,
        )

    # ---- requests -------------------------------------------------------------------------------
    def add_request(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        sheddable: bool = True,  # whether a full queue may shed it (see shed_past)
    ) -> None:
        """Queue a request; raises ValueError (SamplingParamsError naming the field) on bad input."""
        if request_id in self._requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        self.validate(prompt_token_ids, params)
        if params.priority and self.config.scheduling_policy != "priority":
            raise SamplingParamsError(
                "priority", "needs the priority scheduling policy (--scheduling-policy priority)"
            )
        limit = self.max_model_len
        if params.max_tokens is not None:
            limit = min(limit, len(prompt_token_ids) + params.max_tokens)
        seqs = [
            Sequence(request_id, i, prompt_token_ids, params, limit, self._generator(params.seed, i))
            for i in range(params.n)
        ]
        seqs[0].siblings = seqs[1:]
        seqs[0].sheddable = sheddable
        self._requests[request_id] = seqs
        if params.structured is not None:  # scheduled once its grammar is compiled, off the step loop
            self._compiling.append((self.grammars.submit(params.structured, params.n), seqs))
            self.num_constrained_requests += 1
        else:
            self.scheduler.add(seqs[0])

    def validate(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        check_request(prompt_token_ids, params, self.model_config.vocab_size, self.max_model_len)

    def abort(self, request_id: str, index: int | None = None) -> None:
        """Stop a request (or only its choice `index`) and free its KV blocks."""
        if request_id not in self._requests:
            return
        self.scheduler.abort(request_id, index)
        if index is None:
            del self._requests[request_id]
        else:
            self._forget_if_done(request_id)

    def shed_past(self, max_requests: int | None, max_tokens: int | None) -> list[str]:
        """Requests that have not started, removed while more than `max_requests` of them wait or more than
        `max_tokens` of their prompt tokens, the least urgent first: a full queue makes room for a more
        urgent newcomer (the serving core's load shedding; see Scheduler.past_bounds)."""
        shed = [seq.request_id for seq in self.scheduler.past_bounds(max_requests, max_tokens)]
        for request_id in shed:
            self.abort(request_id)
        return shed

    def has_request(self, request_id: str) -> bool:
        """Whether the request is still here: not finished, aborted or refused."""
        return request_id in self._requests

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work() or self._in_flight is not None or bool(self._compiling)

    def pop_rejected(self) -> list[tuple[str, SamplingParamsError]]:
        """Requests refused since the last call, after add_request had taken them (a constraint that
        failed to compile), each with the error naming the request's field."""
        rejected, self._rejected = self._rejected, []
        return rejected

    def _admit_compiled(self) -> None:
        """Requests whose grammar is ready join the scheduler, each choice with its own matcher; when
        nothing else can run, wait a little for a grammar rather than spin."""
        idle = not self.scheduler.has_work() and self._in_flight is None
        self.grammars.poll(timeout=0.005 if idle else 0.0)
        compiling = []
        for compilation, seqs in self._compiling:
            request_id, future = seqs[0].request_id, compilation.future
            if self._requests.get(request_id) is not seqs:  # aborted while it compiled
                self.grammars.discard(compilation)
            elif not future.done():
                compiling.append((compilation, seqs))
            elif (error := future.exception()) is not None:
                self.grammars.discard(compilation)
                del self._requests[request_id]
                self._rejected.append((request_id, error))
            else:
                self.grammars.attach(compilation, seqs)
                self.scheduler.add(seqs[0])
        self._compiling = compiling

    def warm_up(self) -> None:
        """Throwaway requests through every path a client's steps take, so that nothing loads or compiles
        on a client's time (on the GPU Triton compiles each kernel variant at its first launch, and only
        CUDA graphs' steps run at capture): prompts prefilled alone (a graph) and together (eager),
        decodes alone (graphs) and beside a prefill, with an even and an odd number of them (eager), greedy
        rows and sampled ones with top-k/top-p/min-p, penalties and logprobs, and the grammars' token
        masks. Counters are reset after it."""
        start = time.perf_counter()
        sampled = SamplingParams(
            temperature=0.8,
            top_p=0.9,
            top_k=20,
            min_p=0.05,
            repetition_penalty=1.1,
            logprobs=2,
            max_tokens=WARM_UP_TOKENS,
            ignore_eos=True,
        )
        greedy = SamplingParams(temperature=0, max_tokens=WARM_UP_TOKENS, ignore_eos=True)
        waves = [[sampled], [sampled, greedy], [greedy], [sampled]]  # one prompt; then beside 1, 3, 2 decodes
        for wave, requests in enumerate(waves):
            for i, params in enumerate(requests):
                prompt = [1 + (wave * 7 + i + t) % 97 for t in range(8 + 5 * i)]  # no prefix in common
                self.add_request(f"warm-up-{wave}-{i}", prompt, params)
            self.step()
            self.step()
        while self.has_unfinished():
            self.step()
        self._warm_up_grammar_workers()
        vocab = self.model_config.vocab_size
        mask = torch.full((1, -(-vocab // 32)), -1, dtype=torch.int32, device=self.device)
        apply_token_bitmask(torch.zeros(1, vocab, device=self.device), mask)
        self.num_tokens_computed = self.num_constrained_requests = 0
        self.grammars.reset_compile_seconds()
        self.block_manager.prefix_queries = self.block_manager.prefix_hits = 0
        log.info("warmed up in %.1fs", time.perf_counter() - start)

    def _warm_up_grammar_workers(self) -> None:
        """A constrained request in each grammar worker process, so that their start (importing xgrammar,
        reading the vocabulary: seconds of CPU on each) ends before ready, not beside a client's first
        requests. In-process (the CPU's default) the vocabulary is read at the first constrained request
        instead: reading it here would add seconds to every start."""
        if not self.grammars.workers:
            return
        params = SamplingParams(
            temperature=0,
            max_tokens=WARM_UP_TOKENS,
            # any text: a grammar every vocabulary can follow (a JSON one needs tokens with braces)
            structured=StructuredOutput(kind="regex", spec=r"[\s\S]*"),
        )
        request_ids = [f"warm-up-grammar-{i}" for i in range(self.grammars.workers)]
        for i, request_id in enumerate(request_ids):  # each to the bank with the fewest: one in each
            self.add_request(request_id, [1 + i, 2, 3], params)
        deadline = time.monotonic() + GRAMMAR_WARM_UP_TIMEOUT_S
        while self.has_unfinished() and time.monotonic() < deadline:
            self.step()
        if self.has_unfinished():
            log.warning(
                "grammar workers not started in %.0fs: constrained requests wait", GRAMMAR_WARM_UP_TIMEOUT_S
            )
            for request_id in request_ids:
                self.abort(request_id)
            while self.has_unfinished():
                self.step()
        if rejected := self.pop_rejected():  # a model without a tokenizer: constrained requests are refused
            log.info("constrained decoding unavailable: %s", rejected[0][1])

    def _generator(self, seed: int | None, index: int) -> torch.Generator | None:
        if seed is None:
            return None
        # choice 0 of a seeded request equals the n=1 request with that seed
        seed = seed if index == 0 else hash((seed, index))
        return torch.Generator(device=self.device).manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)

    # ---- one step -------------------------------------------------------------------------------
    def step(self) -> list[SeqOutput]:
        """Launches the next batch, then returns the outputs of the batch launched before it.

        On a GPU the next batch is queued before the previous one's tokens reach the host, so that
        the GPU never waits for Python; on a CPU each step completes before it returns.
        """
        if self.workers is not None and self.workers.stopping:
            raise RuntimeError(
                "the tensor-parallel group was stopped by an earlier failure; start a new engine"
            )
        if self._compiling:
            self._admit_compiled()
        elif self.grammars.busy:  # a discarded compilation's reply: its bank's load and grammar go back
            self.grammars.poll()
        batch = self.scheduler.schedule()
        outputs: list[SeqOutput] = []
        previous, self._in_flight = self._in_flight, None
        if previous is not None and batch.seqs and any(s.params.has_penalties for s in batch.seqs):
            outputs = self._process(previous)  # penalties count every earlier token on the host
            previous = None
        taken: list[list[int]] = []  # `previous`'s ids, once taken for the grammars' masks
        early = False  # `previous` processed while worker processes fill this step's masks
        masks = None
        if any(s.grammar is not None for s in batch.seqs):
            early = previous is not None and self.grammars.workers > 0
            masks = lambda seqs: self._masks(batch, previous, seqs, taken, outputs if early else None)  # noqa: E731
        launched = self._launch(batch, previous, masks, advanced=early) if batch.seqs else None
        if previous is not None and not early:
            outputs += self._process(previous, taken[0] if taken else None)
        if launched is not None:
            if self.overlap:
                self._in_flight = launched
            else:
                outputs += self._process(launched)
        if self.kv_event_publisher is not None:  # the step's evictions and newly cached blocks, as one batch
            self.kv_event_publisher.publish(self.block_manager.take_kv_events())
        return outputs

    def _masks(
        self,
        batch: SchedulerOutput,
        previous: InFlight | None,
        seqs: list[Sequence],
        taken: list[list[int]],
        outputs: list[SeqOutput] | None,
    ) -> torch.Tensor | None:
        """The grammars' token masks of a step about to sample `seqs`, filled while the device runs its
        forward pass. A mask follows from the token before it, so `previous`'s tokens are taken first
        (into `taken`). Given `outputs`, `previous`'s outputs are made there while worker processes fill
        the masks; the step's tokens are counted computed first, as its launch would have."""
        if previous is not None:
            taken.append(self._take_tokens(previous))
        self.grammars.dispatch(seqs)
        if outputs is not None:
            self._advance(batch)
            outputs += self._process(previous, taken[0])
        return self.grammars.collect()

    def _launch(
        self, batch: SchedulerOutput, previous: InFlight | None, masks=None, advanced=False
    ) -> InFlight:
        try:
            step = self.runner.launch(batch, previous, masks)
        except BaseException:
            if self.workers is not None:  # the other ranks run this step's collectives without rank 0's
                log.error("a step failed on rank 0 after its plan was sent: the tensor-parallel group stops")
                self.workers.kill()
            raise
        if not advanced:
            self._advance(batch)
        for row, seq in enumerate(step.seqs):
            if not seq.is_finished:  # finished by the token taken before this step sampled
                seq.token_ids.append(PLACEHOLDER)  # becomes the sampled token once it reaches the host
                seq.pending_row = row
        return step

    def _advance(self, batch: SchedulerOutput) -> None:
        """A launched step's tokens count as computed (their KV is written in stream order)."""
        self.num_tokens_computed += batch.num_tokens
        for seq, n in zip(batch.seqs, batch.num_new_tokens, strict=True):
            seq.num_computed_tokens += n

    def _take_tokens(self, step: InFlight) -> list[int]:
        """Waits for a launched step's ids; each goes into its sequence's tokens and its grammar."""
        token_ids = self.runner.collect(step)
        for seq, pos, token in zip(step.seqs, step.positions, token_ids, strict=True):
            if seq.is_finished:  # aborted, or finished by its previous token, while this step ran
                continue
            seq.token_ids[pos] = token
            if seq.grammar is not None:
                self.grammars.accept(seq, token)
        return token_ids

    def _process(self, step: InFlight, token_ids: list[int] | None = None) -> list[SeqOutput]:
        """A launched step's outputs, its ids taken first unless `token_ids` says they were."""
        if token_ids is None:
            token_ids = self._take_tokens(step)
        logprobs = self.runner.logprobs(step)
        now = time.perf_counter()
        outputs = []
        for seq, pos, token, logprob in zip(step.seqs, step.positions, token_ids, logprobs, strict=True):
            if seq.is_finished:
                continue
            self.block_manager.register_full_blocks(seq, pos + 1)
            if seq.first_token_time is None:
                seq.first_token_time = now
                self.scheduler.release_siblings(seq)
            out = SeqOutput(
                request_id=seq.request_id,
                index=seq.index,
                new_token_ids=[token],
                logprobs=None if logprob is None else [logprob],
                num_prompt_tokens=seq.num_prompt_tokens,
                num_cached_tokens=seq.num_cached_tokens or 0,
                num_cache_written_tokens=seq.num_cache_written_tokens,
            )
            reason = self._finish_reason(seq, token, pos + 1)
            if reason is not None:
                del seq.token_ids[pos + 1 :]  # a token queued after this one is void
                self.scheduler.finish(seq, reason)
                out.finish_reason = reason
                out.stop_token_id = token if reason == "stop" else None
                out.metrics = seq.metrics(now)
                self._forget_if_done(seq.request_id)
            outputs.append(out)
        return outputs

    def _finish_reason(self, seq: Sequence, token: int, length: int) -> str | None:
        params = seq.params
        # a grammar ends on an end-of-sequence token (the masks allow one only where it may end)
        if (
            token in self.model_config.eos_token_ids and (not params.ignore_eos or seq.grammar is not None)
        ) or token in params.stop_token_ids:
            return "stop"
        if length >= seq.max_len:
            return "length"
        return None

    def _forget_if_done(self, request_id: str) -> None:
        if all(s.is_finished for s in self._requests.get(request_id, ())):
            self._requests.pop(request_id, None)

    def request_states(self) -> list[dict[str, object]]:
        """Every sequence in the engine: its state (waiting, prefill, decode) and token counts."""
        states = []
        for seq in (*self.scheduler.running, *self.scheduler.waiting):
            prefilling = seq.num_computed_tokens < seq.num_prompt_tokens or seq.num_uncomputed_tokens > 1
            state = "waiting" if not seq.block_table else ("prefill" if prefilling else "decode")
            states.append(
                {
                    "request_id": seq.request_id,
                    "index": seq.index,
                    "state": state,
                    "prompt_tokens": seq.num_prompt_tokens,
                    "computed_tokens": seq.num_computed_tokens,
                    "output_tokens": seq.num_output_tokens,
                    "cached_tokens": seq.num_cached_tokens or 0,
                    "age_ms": (time.perf_counter() - seq.arrival_time) * 1e3,
                }
            )
        return states

    def stats(self) -> dict[str, int | float]:
        bm = self.block_manager
        return {
            "num_requests_running": len(self.scheduler.running),
            "num_requests_waiting": len(self.scheduler.waiting),
            "kv_cache_usage": bm.usage,
            "kv_cache_blocks": bm.num_blocks,
            "prefix_cache_queries": bm.prefix_queries,
            "prefix_cache_hits": bm.prefix_hits,
            "num_preemptions": self.scheduler.num_preemptions,
            "num_tokens_computed": self.num_tokens_computed,
            "num_constrained_requests": self.num_constrained_requests,
            "grammar_compile_seconds": round(self.grammars.compile_seconds, 4),
            **(self.kv_event_publisher.stats() if self.kv_event_publisher else {}),
        }

    def close(self) -> None:
        """Closes the KV-event sockets and stops the other ranks of a group (the rest goes with the process)."""
        try:
            self.grammars.close()
        finally:
            if self.kv_event_publisher is not None:
                self.kv_event_publisher.close()
                self.kv_event_publisher = None
            if self.workers is not None:
                self.workers.stop()
                self.workers = None
