"""The engine core's requests that wait for their first output, counted by the link (API process) each
came in on. Every API process sheds load (--max-queued-requests/-tokens) against the whole queue: its
own waiting requests, which it counts exactly, plus those of the other links, which the core tells it."""

from __future__ import annotations


class LinkQueues:
    def __init__(self, num_links: int):
        self._waiting: dict[str, tuple[int, int]] = {}  # request id -> (link, prompt tokens)
        self._count = [0] * num_links
        self._tokens = [0] * num_links
        self._told = [(0, 0)] * num_links  # what each link last heard of the others

    def add(self, request_id: str, link: int, prompt_tokens: int) -> None:
        self._waiting[request_id] = (link, prompt_tokens)
        self._count[link] += 1
        self._tokens[link] += prompt_tokens

    def remove(self, request_id: str) -> None:
        """The request had its first output, or left: no longer waiting (nothing, if it was not)."""
        found = self._waiting.pop(request_id, None)
        if found is not None:
            link, tokens = found
            self._count[link] -= 1
            self._tokens[link] -= tokens

    def others(self, link: int) -> tuple[int, int]:
        """Requests of the other links that wait, and their prompt tokens; remembered as told."""
        self._told[link] = self._figure(link)
        return self._told[link]

    def changed(self, link: int) -> bool:
        """Whether the others' figure differs from what `link` last heard."""
        return self._told[link] != self._figure(link)

    def _figure(self, link: int) -> tuple[int, int]:
        return sum(self._count) - self._count[link], sum(self._tokens) - self._tokens[link]
