"""Streamed plain-text chunks are spliced into a pre-encoded reply rather than built as models: the
bytes must be the models' own JSON for every text and finish reason."""

from __future__ import annotations

import pytest

from pyinfer.server.protocol import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionChunkWithUsage,
    ChatDelta,
    Completion,
    CompletionChoice,
    CompletionChunkWithUsage,
)
from pyinfer.server.routes import chat, completions
from pyinfer.server.routes.common import TextChunks, reply_head, sse

TEXTS = [
    " word",
    "",
    'quote " and back\\slash',
    "line\nbreak\ttab\r",
    "naïve 東京 🙂",
    "\x00\x01\x1f\x7f",
    "\u2028",
]


@pytest.mark.parametrize("chunk", [Completion, CompletionChunkWithUsage])  # with usage: "usage": null
@pytest.mark.parametrize("finish", [None, "stop", "length"])
@pytest.mark.parametrize("text", TEXTS)
def test_completion_text_chunks_are_the_models_json(text, finish, chunk):
    head = reply_head("cmpl", 'a "model"/name')
    plain = TextChunks(chunk(**head, choices=[]), completions._text_choice)
    model = chunk(**head, choices=[CompletionChoice(index=3, text=text, finish_reason=finish)])
    assert plain.event(3, text, finish) == sse(model).encode()


@pytest.mark.parametrize("chunk", [ChatCompletionChunk, ChatCompletionChunkWithUsage])
@pytest.mark.parametrize("finish", [None, "stop", "length"])
@pytest.mark.parametrize("text", TEXTS)
def test_chat_text_chunks_are_the_models_json(text, finish, chunk):
    head = reply_head("chatcmpl", "m")
    plain = TextChunks(chunk(**head, choices=[]), chat._text_choice)
    choice = ChatChunkChoice(index=1, delta=ChatDelta(content=text or None), finish_reason=finish)
    assert plain.event(1, text or None, finish) == sse(chunk(**head, choices=[choice])).encode()
