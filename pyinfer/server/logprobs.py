"""Engine logprobs in OpenAI's two shapes: chat (`content` entries) and legacy completions (parallel lists)."""

from __future__ import annotations

from pyinfer.engine.messages import TokenLogprob
from pyinfer.server.protocol import ChatLogprobs, ChatTokenLogprob, CompletionLogprobs, TopLogprob
from pyinfer.tokenizer import Tokenizer


def chat_logprobs(tokenizer: Tokenizer, logprobs: list[TokenLogprob]) -> ChatLogprobs:
    def top(token_id: int, logprob: float) -> TopLogprob:
        return TopLogprob(
            token=tokenizer.token_text(token_id), logprob=logprob, bytes=list(tokenizer.token_bytes(token_id))
        )

    content = []
    for lp in logprobs:
        chosen = top(lp.token_id, lp.logprob)
        content.append(ChatTokenLogprob(**chosen.model_dump(), top_logprobs=[top(t, p) for t, p in lp.top]))
    return ChatLogprobs(content=content)


def completion_logprobs(
    tokenizer: Tokenizer, logprobs: list[TokenLogprob], offset: int
) -> CompletionLogprobs:
    """`offset`: where the first token's text starts in the choice's text."""
    out = CompletionLogprobs()
    for lp in logprobs:
        out.tokens.append(tokenizer.token_text(lp.token_id))
        out.token_logprobs.append(lp.logprob)
        out.top_logprobs.append({tokenizer.token_text(t): p for t, p in lp.top})
        out.text_offset.append(offset)
        # the characters the token begins: a character split over tokens counts at its first byte's
        offset += sum((b & 0xC0) != 0x80 for b in tokenizer.token_bytes(lp.token_id))
    return out
