"""The incremental tool-call parser: a reply's text in, as it is generated, and out its content and its
tool calls in OpenAI's streamed shape (a call's first delta names it, its arguments follow in pieces).

One parser serves streamed and whole replies (a whole reply joins the deltas), so both agree at any
chunking. Markup never reaches the content: text that may still become a trigger is held back until
it is known not to be one, and the whitespace before a call is dropped. A call's arguments are
streamed as the model writes them, character for character, once its name is known.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pyinfer.detokenizer import WHITESPACE, longest_start_at_end
from pyinfer.server.tool_formats import ToolFormat

# What a reply may hold besides calls, as its grammar allows: nothing (tool_choice required or named),
# text until a call (auto), or JSON for the response format's schema instead of calls (auto with one)
BesidesCalls = Literal["nothing", "text", "json"]


@dataclass
class ToolCallDelta:
    index: int  # of the call in the reply
    id: str | None = None  # on a call's first delta, with its name
    name: str | None = None
    arguments: str = ""


@dataclass
class Parsed:
    """What a piece of text added to the reply."""

    content: str = ""
    calls: list[ToolCallDelta] = field(default_factory=list)

    def join(self, later: Parsed) -> None:
        self.content += later.content
        for delta in later.calls:
            if delta.name is None:
                self.add_arguments(delta.index, delta.arguments)
            else:
                self.calls.append(delta)

    def add_arguments(self, index: int, text: str) -> None:
        if not text:
            return
        if self.calls and self.calls[-1].index == index:
            self.calls[-1].arguments += text
        else:
            self.calls.append(ToolCallDelta(index, arguments=text))


class ToolCallParser:
    def __init__(
        self,
        fmt: ToolFormat,
        tool_names: set[str],
        on_failure: Callable[[], None] = lambda: None,
        besides_calls: BesidesCalls = "text",
    ):
        self.fmt = fmt
        self.tool_names = tool_names
        self.on_failure = on_failure  # told of call markup that did not parse as a call of a known tool
        self.besides_calls = besides_calls
        self.num_calls = 0
        self.triggers = tuple(t for t in (*fmt.triggers, fmt.object_trigger) if t)  # what opens calls
        self._held = ""  # content not yet emitted: a possible trigger's start, or whitespace before a call
        self._call: _CallReader | None = None
        self._after_call = False  # nothing but separators since the last call closed

    def feed(self, text: str) -> Parsed:
        out = Parsed()
        while text:
            if self._call is None:
                text = self._content(self._held + text, out)
                continue
            text = self._call.feed(text, out)
            if self._call.failed:
                self.on_failure()
                out.content += self._call.unparsed()
                self._after_call = False
            elif self._call.done:
                self._after_call = True
            if self._call.failed or self._call.done:
                self._call = None
        return out

    def finish(self) -> Parsed:
        """The end of the reply: held text (whitespace, and the start of a trigger) that became nothing
        else is content, unless the reply holds nothing but calls; but the separators after a last call
        are markup, and so is the start of a trigger once a call came (the next call, cut off). A call
        cut off (by max_tokens or a stop string) keeps what was streamed of it; cut off before its name,
        its markup is dropped, unless the reply may be JSON instead of calls and none came before it:
        then it may be that JSON."""
        out = Parsed()
        if self._call is not None:
            if self._call.num_named == 0 and self.besides_calls == "json" and self.num_calls == 0:
                out.content += self._call.unparsed()
        elif (
            self.besides_calls != "nothing"
            and not self._after_call
            and not (self.num_calls and self._held.strip(WHITESPACE))
        ):
            out.content += self._held
        self._held = ""
        self._call = None
        return out

    def _separators(self) -> str:
        return WHITESPACE + (self.fmt.separator if self._after_call else "")

    def _content(self, text: str, out: Parsed) -> str:
        """Emit content up to the first trigger and open a call there; returns the text after it.
        Whitespace that may come before a call, and the start of a possible trigger, are held."""
        if self._after_call:  # the separator between calls is markup, not content
            rest = text.lstrip(self._separators())
            if not rest:
                self._held = text
                return ""
            text = rest
        found = [(i, t) for t in self.triggers if (i := text.find(t)) >= 0]
        if found:
            at, trigger = min(found)
            before = text[:at].rstrip(WHITESPACE)
            self._emit(before, out)
            self._held = ""
            by_object = trigger == self.fmt.object_trigger
            self._call = _CallReader(self, text[len(before) : at], trigger, by_object)
            return text[at:] if by_object else text[at + len(trigger) :]
        keep = len(text) - longest_start_at_end(text, self.triggers)
        while keep > 0 and text[keep - 1] in WHITESPACE:
            keep -= 1
        self._emit(text[:keep], out)
        self._held = text[keep:]
        return ""

    def _emit(self, content: str, out: Parsed) -> None:
        if content:
            out.content += content
            self._after_call = False

    def new_call(self, name: str, out: Parsed) -> int:
        index = self.num_calls
        self.num_calls += 1
        out.calls.append(ToolCallDelta(index, id=self.fmt.call_id(), name=name))
        return index


class _CallReader:
    """The markup of one turn's calls after a trigger: the block's brackets, each call's wrapping and
    its JSON object; `done` once the markup closed, `failed` on text the format does not allow.
    Whitespace may come before any piece of markup."""

    def __init__(self, parser: ToolCallParser, lead: str, trigger: str, opened_by_object: bool):
        self.parser = parser
        self.fmt = parser.fmt
        # everything read, the whitespace before the trigger included, for content if it fails
        self.raw = lead if opened_by_object else lead + trigger
        self.num_named = 0
        self.done = self.failed = False
        self._failed_at = 0
        self._object_at = 0  # where in `raw` the current call object began
        self._object: _CallObject | None = None
        self._state = "object"  # literal | object | between (calls of a block) | done
        self._literal = ""  # markup still to read, in state literal
        self._literal_started = False
        self._then = ""  # the state after the literal
        opening = (
            "" if opened_by_object else (self.fmt.block_begin + self.fmt.call_begin).removeprefix(trigger)
        )
        self._expect_literal(opening.strip(WHITESPACE), "object")

    def feed(self, text: str, out: Parsed) -> str:
        """Read `text` until the markup ends or fails; returns what follows it."""
        for i, ch in enumerate(text):
            self.raw += ch
            if not self._step(ch, out):
                self.failed = True
                self._failed_at = len(self.raw) - 1
                return text[i + 1 :]
            if self.done:
                return text[i + 1 :]
        return ""

    def unparsed(self) -> str:
        """The text to give back as content: all of it before a call was named; else the call object
        that failed, whole (a call it named keeps what was streamed), or the markup from the failure."""
        if self.num_named == 0:
            return self.raw
        return self.raw[self._object_at if self._object is not None else self._failed_at :]

    def _step(self, ch: str, out: Parsed) -> bool:
        if self._object is not None:
            ok = self._object.feed(ch, out)
            if ok and self._object.done:
                self._object = None
                self._expect_literal(
                    self.fmt.call_end.strip(WHITESPACE), "between" if self.fmt.block_begin else "done"
                )
            return ok
        if self._state == "literal":
            if ch in WHITESPACE and not self._literal_started:
                return True
            if not self._literal.startswith(ch):
                return False
            self._literal, self._literal_started = self._literal[1:], True
            if not self._literal:
                self._enter(self._then)
            return True
        if ch in WHITESPACE:
            return True
        if self._state == "object":
            self._object, self._object_at = _CallObject(self), len(self.raw) - 1
            return self._object.feed(ch, out)
        if self._state == "between":
            if ch == self.fmt.separator.strip(WHITESPACE):
                self._expect_literal(self.fmt.call_begin.strip(WHITESPACE), "object")
                return True
            if self.fmt.block_end.startswith(ch):
                self._expect_literal(self.fmt.block_end[1:], "done")
                return True
        return False

    def _expect_literal(self, text: str, then: str) -> None:
        if text:
            self._state, self._literal, self._literal_started, self._then = "literal", text, False, then
        else:
            self._enter(then)

    def _enter(self, state: str) -> None:
        self._state = state
        self.done = state == "done"


class _CallObject:
    """One call's JSON object, read character by character: its name, and its arguments streamed."""

    def __init__(self, reader: _CallReader):
        self.reader = reader
        self.parser = reader.parser
        self.state = "open"  # open | key_start | key | colon | value_start | value | next | done
        self.key = ""
        self.value: _JsonValue | None = None  # the key's or the value's text being read
        self.index: int | None = None  # the call's, once named
        self.pending_arguments = ""  # arguments read before the name
        self.arguments_seen = False
        self.string_arguments = False  # arguments given as a JSON string holding the object

    @property
    def done(self) -> bool:
        return self.state == "done"

    def feed(self, ch: str, out: Parsed) -> bool:
        if self.state in ("key", "value"):
            assert self.value is not None
            consumed = self.value.feed(ch)
            if self.state == "key":
                if self.value.done:
                    try:
                        self.key = json.loads(self.value.text)
                    except ValueError:
                        return False
                    self.state = "colon"
                return True
            if consumed and self._is_arguments() and not self.string_arguments:
                self._arguments(ch, out)
            if not self.value.done:
                return True
            if not self._value_done(out):
                return False
            self.state = "next"
            return True if consumed else self.feed(ch, out)
        if ch in WHITESPACE:
            return True
        if self.state == "open":
            self.state = "key_start"
            return ch == "{"
        if self.state == "key_start":
            if ch == "}" and not self.key:  # {}
                return self._close(out)
            if ch != '"':
                return False
            self.state, self.value = "key", _JsonValue()
            return self.value.feed(ch)
        if self.state == "colon":
            self.state = "value_start"
            return ch == ":"
        if self.state == "value_start":
            self.state, self.value = "value", _JsonValue()
            if self._is_arguments():
                if self.arguments_seen:  # arguments twice (or both keys): not one call
                    return False
                self.arguments_seen = True
                self.string_arguments = ch == '"'
            return self.feed(ch, out)
        if self.state == "next":
            if ch == ",":
                self.state = "key_start"
                return True
            return ch == "}" and self._close(out)
        return False

    def _is_arguments(self) -> bool:
        return self.key in (self.parser.fmt.arguments_key, "arguments", "parameters")

    def _arguments(self, text: str, out: Parsed) -> None:
        if self.index is None:
            self.pending_arguments += text
        else:
            out.add_arguments(self.index, text)

    def _value_done(self, out: Parsed) -> bool:
        assert self.value is not None
        try:
            value = json.loads(self.value.text)
        except ValueError:
            return False
        if self.key == "name":
            if not isinstance(value, str) or value not in self.parser.tool_names or self.index is not None:
                return False
            self.index = self.parser.new_call(value, out)
            self.reader.num_named += 1
            out.add_arguments(self.index, self.pending_arguments)
        elif self._is_arguments() and self.string_arguments:
            if not isinstance(value, str):
                return False
            self._arguments(value, out)
        return True

    def _close(self, out: Parsed) -> bool:
        if self.index is None:
            return False
        if not self.arguments_seen:
            out.add_arguments(self.index, "{}")
        self.state = "done"
        return True


class _JsonValue:
    """The raw text of one JSON value, read character by character until it is complete."""

    def __init__(self) -> None:
        self.text = ""
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.done = False

    def feed(self, ch: str) -> bool:
        """Take `ch` if it belongs to the value; a scalar ends at the first character that does not
        (returned False: the caller reads it next)."""
        if not self.text:
            self.text = ch
            if ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth = 1
            return True
        first = self.text[0]
        if self.in_string:
            self.text += ch
            if self.escaped:
                self.escaped = False
            elif ch == "\\":
                self.escaped = True
            elif ch == '"':
                self.in_string = False
                self.done = self.depth == 0
            return True
        if first in "{[":
            self.text += ch
            if ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                self.done = self.depth == 0
            return True
        if ch.isalnum() or ch in "+-.":  # a number or true/false/null
            self.text += ch
            return True
        self.done = True
        return False
