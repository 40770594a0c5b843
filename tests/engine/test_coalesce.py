"""The engine client joins outputs that waited together, per choice, in order, never across an end."""

from __future__ import annotations

import asyncio

from pyinfer.config import EngineConfig
from pyinfer.engine.core_client import AsyncEngineClient, coalesced
from pyinfer.engine.messages import SeqOutput, TokenLogprob
from pyinfer.sampling_params import SamplingParams


def out(index: int, *tokens: int, finish: str | None = None, logprobs: bool = False) -> SeqOutput:
    lps = [TokenLogprob(token_id=t, logprob=-1.0, top=[]) for t in tokens] if logprobs else None
    return SeqOutput(
        request_id="r", index=index, new_token_ids=list(tokens), finish_reason=finish, logprobs=lps
    )


def test_each_choice_s_waiting_outputs_join_in_order():
    joined = coalesced([out(0, 1), out(1, 7), out(0, 2), out(0, 3, finish="length"), out(1, 8)])
    assert [(o.index, o.new_token_ids, o.finish_reason) for o in joined] == [
        (0, [1, 2, 3], "length"),
        (1, [7, 8], None),
    ]


def test_nothing_joins_across_an_end_an_error_or_a_wake_up():
    error = RuntimeError("engine died")
    items = [out(0, 1, finish="stop"), out(0, 2), None, out(0, 3), error, out(0, 4)]
    joined = coalesced(items)
    assert [o.new_token_ids if isinstance(o, SeqOutput) else o for o in joined] == [
        [1],
        [2],
        None,
        [3],
        error,
        [4],
    ]


def test_logprobs_join_with_their_tokens():
    (joined,) = coalesced([out(0, 5, logprobs=True), out(0, 6, logprobs=True)])
    assert [lp.token_id for lp in joined.logprobs] == [5, 6]


def test_a_consumer_that_falls_behind_a_real_engine_gets_every_token_in_fewer_outputs():
    async def run() -> tuple[list[int], list[list[int]]]:
        client = AsyncEngineClient(EngineConfig(device="cpu", dtype="float32", num_kv_blocks=64))
        await client.start()
        try:
            await client.wait_ready()
            params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
            prompt = [1, 504, 3458, 282, 1342]
            steady = [o.new_token_ids async for o in client.generate("steady", prompt, params)]
            behind = []
            async for o in client.generate("behind", prompt, params):
                if not behind:
                    await asyncio.sleep(1.5)  # the engine runs on meanwhile: its outputs wait
                behind.append(o.new_token_ids)
            return [t for ids in steady for t in ids], behind
        finally:
            await client.shutdown()

    steady, behind = asyncio.run(run())
    assert [t for ids in behind for t in ids] == steady and len(steady) == 32
    assert len(behind) < 16  # the waiting outputs came joined
