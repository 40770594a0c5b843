"""Engine logprobs in OpenAI's two shapes: chat (`content` entries) and legacy completions (parallel lists)."""

from __future__ import annotations

from pyinfer.engine.messages import TokenLogprob
from pyinfer.server.protocol import ChatLogprobs, ChatTokenLogprob, CompletionLogprobs, TopLogprob
from pyinfer.tokenizer import Tokenizer, shown_token


def chat_logprobs(tokenizer: Tokenizer, logprobs: list[TokenLogprob]) -> ChatLogprobs:
    def top(token_id: int, logprob: float) -> TopLogprob:
        token = tokenizer.token_bytes(token_id)
        return TopLogprob(token=shown_token(token), logprob=logprob, bytes=list(token))

    content = []
    for lp in logprobs:
        chosen = top(lp.token_id, lp.logprob)
        content.append(ChatTokenLogprob(**chosen.model_dump(), top_logprobs=[top(t, p) for t, p in lp.top]))
    return ChatLogprobs(content=content)


def completion_logprobs(
    tokenizer: Tokenizer, logprobs: list[TokenLogprob], offset: int, skip_special_tokens: bool
) -> tuple[CompletionLogprobs, int]:
    """The logprobs, with each token's `text_offset` counted on from `offset` (where the first token's
    text starts in the choice's text); and where the text after the last token starts."""
    out = CompletionLogprobs()
    for lp in logprobs:
        token = tokenizer.token_bytes(lp.token_id)
        shown = shown_token(token)
        out.tokens.append(shown)
        out.token_logprobs.append(lp.logprob)
        # the sampled token always among them, as OpenAI and vLLM give it: up to logprobs + 1 entries
        top = {tokenizer.token_text(t): p for t, p in lp.top}
        top.setdefault(shown, lp.logprob)
        out.top_logprobs.append(top)
        out.text_offset.append(offset)
        if not (skip_special_tokens and lp.token_id in tokenizer.special_ids):  # else not in the text
            # the characters the token begins: a character split over tokens counts at its first byte's
            offset += sum((b & 0xC0) != 0x80 for b in token)
    return out, offset
