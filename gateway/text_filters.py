"""Text filters on the answer's way to the client: what rewrites (or stops) the text a model
sends back, wherever a format carries it.

A filter sees each client-visible fragment of text once, in order, per block (a text block,
a thinking block, one tool call's argument JSON), and returns what the client gets in its
place; it may keep a tail back until the next fragment of the same block (or `flush`) and
may raise to stop a stream. Filters run as a `Chain`, each on what the one before it let
through. The chain is applied to:

- converted streams, on the canonical events between decoder and encoder (`CanonicalTexts`);
- same-format streams, on the client's own server-sent events (`rewriter`): the events of
  each ingress format that carry text are parsed, changed where a filter changed their
  text, and re-encoded; every other event passes as it came. Held text is sent before any
  other event of its block, and at the end;
- non-streamed answers and the events that carry whole texts (a Responses stream's `*.done`
  and `response.completed`), through `map_strings` and the `whole` method of the filters
  that have one (`WholeTextFilter`).

With no filters, none of this runs: the proxy passes events through as before.
"""

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol, runtime_checkable

import orjson

from gateway.formats import canonical as c
from thinkwatch.lib import sse


class TextFilter(Protocol):
    def feed(self, block: Hashable, text: str, json_text: bool) -> str:
        """What the client gets for `text`, the next fragment of `block` (`json_text`: a
        piece of tool-call argument JSON)."""
        ...

    def flush(self, block: Hashable) -> str:
        """What was held back of `block`: the block ends (or the stream does)."""
        ...


@runtime_checkable
class WholeTextFilter(TextFilter, Protocol):
    def whole(self, text: str, json_text: bool) -> str:
        """What the client gets for a text that arrives whole (a non-streamed answer's, or
        a stream event's that repeats the finished text)."""
        ...


Strings = Callable[[str, bool], str]


@runtime_checkable
class SelectiveFilter(Protocol):
    def idle(self, event: bytes) -> bool:
        """Whether this filter would leave every text of `event` (a raw stream event) as it
        is, and has nothing held back: then the event need not be parsed for it."""
        ...


class Chain:
    """Filters applied in order; remembers which blocks may have text held back."""

    __slots__ = ("_idle", "_open", "_wholes", "filters")

    def __init__(self, filters: Sequence[TextFilter]) -> None:
        self.filters = tuple(filters)
        self._wholes = tuple(f.whole for f in self.filters if isinstance(f, WholeTextFilter))
        self._open: dict[Hashable, bool] = {}  # block -> json_text, fed since its last flush
        selective = all(isinstance(f, SelectiveFilter) for f in self.filters)
        self._idle = tuple(f.idle for f in self.filters) if selective else None  # type: ignore[attr-defined]

    def idle(self, event: bytes) -> bool:
        """Whether no filter of the chain would change `event` or needs to see it."""
        return self._idle is not None and all(idle(event) for idle in self._idle)

    def feed(self, block: Hashable, text: str, json_text: bool) -> str:
        self._open[block] = json_text
        for text_filter in self.filters:
            if not text:
                break
            text = text_filter.feed(block, text, json_text)
        return text

    def flush(self, block: Hashable) -> str:
        json_text = self._open.pop(block, None)
        if json_text is None:
            return ""
        out = ""
        for text_filter in self.filters:
            out = (text_filter.feed(block, out, json_text) if out else "") + text_filter.flush(
                block
            )
        return out

    def pending(self) -> list[Hashable]:
        return list(self._open)

    @property
    def rewrites_whole(self) -> bool:
        return bool(self._wholes)

    def whole(self, text: str, json_text: bool) -> str:
        for rewrite in self._wholes:
            text = rewrite(text, json_text)
        return text


# --- whole texts: non-streamed answers ---------------------------------------------------


def map_strings(value: Any, strings: Strings) -> Any:
    """`value` (a client-facing JSON answer) with `strings` applied to every string in it
    (object keys excepted). Strings under `arguments` hold JSON text (OpenAI's tool calls),
    except inside an `input` object (Anthropic's tool-use arguments, plain values). Parts
    that did not change are shared with `value`, which is returned itself if nothing did."""
    return _mapped(value, strings, False, False, 0)


def _mapped(value: Any, strings: Strings, json_text: bool, in_input: bool, depth: int) -> Any:
    if isinstance(value, str):
        changed = strings(value, json_text)
        return value if changed == value else changed
    if depth > 64:
        return value
    if isinstance(value, list):
        copy: list[Any] | None = None
        for at, item in enumerate(value):
            new = _mapped(item, strings, False, in_input, depth + 1)
            if new is not item:
                copy = copy if copy is not None else list(value)
                copy[at] = new
        return value if copy is None else copy
    if isinstance(value, dict):
        changed_dict: dict[str, Any] | None = None
        for key, item in value.items():
            inside = in_input or (key == "input" and isinstance(item, dict))
            new = _mapped(item, strings, key == "arguments" and not in_input, inside, depth + 1)
            if new is not item:
                changed_dict = changed_dict if changed_dict is not None else dict(value)
                changed_dict[key] = new
        return value if changed_dict is None else changed_dict
    return value


def answer_bytes(answer: Any, data: bytes, strings: Strings) -> bytes:
    """A non-streamed answer's bytes (`data`, parsed as `answer`) with `strings` applied;
    `data` itself when nothing changed."""
    mapped = map_strings(answer, strings)
    return data if mapped is answer else orjson.dumps(mapped)


# --- converted streams ------------------------------------------------------------------


class CanonicalTexts:
    """The chain on canonical stream events: every `Delta` (text, thinking, tool-call
    argument JSON) goes through it; a block's held text is sent before its signature or
    its end, and before the answer's stop."""

    __slots__ = ("_json", "chain")

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self._json: dict[int, bool] = {}  # block -> whether it holds tool-call argument JSON

    def events(self, events: list[c.Event]) -> list[c.Event]:
        out: list[c.Event] = []
        for event in events:
            if isinstance(event, c.Delta):
                text = self.chain.feed(event.index, event.text, self._json.get(event.index, False))
                if text:
                    out.append(event if text == event.text else c.Delta(event.index, text))
                continue
            if isinstance(event, c.BlockStart):
                self._json[event.index] = event.kind == "tool_call"
            elif isinstance(event, c.BlockStop | c.SignatureDelta):
                out += self._flushed(event.index)
            elif isinstance(event, c.Stop):
                out += self.close()
            out.append(event)
        return out

    def close(self) -> list[c.Event]:
        return [delta for block in self.chain.pending() for delta in self._flushed(block)]

    def _flushed(self, block: Hashable) -> list[c.Event]:
        text = self.chain.flush(block)
        return [c.Delta(block, text)] if text and isinstance(block, int) else []


# --- same-format streams ----------------------------------------------------------------

_EVENT_NAME = re.compile(rb"^event: ?(.*?)\r?$", re.MULTILINE)


def _data(event: bytes) -> dict[str, Any] | None:
    raw = sse.data_of(event)
    if not raw or raw[:1] != b"{":
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _encoded(event: bytes, data: dict[str, Any]) -> bytes:
    """`event` again, its data replaced by `data` (its event name kept)."""
    name = _EVENT_NAME.search(event)
    return sse.encode(orjson.dumps(data), name.group(1).decode() if name else None)


class Rewriter(ABC):
    """The chain on one ingress format's server-sent events."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain

    def rewrite(self, events: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for event in events:
            if self.chain.idle(event) and self._in_step():
                out.append(event)  # as it came, without parsing it
                continue
            data = _data(event)
            out += self._other(event) if data is None else self._event(event, data)
        return out

    def finish(self) -> list[bytes]:
        """Events for the text still held back when the stream ends."""
        return self._flushed(self.chain.pending())

    def _in_step(self) -> bool:
        """Whether an event may pass unparsed as far as the format's own bookkeeping goes."""
        return True

    @abstractmethod
    def _event(self, event: bytes, data: dict[str, Any]) -> list[bytes]:
        """What goes out for `event`, whose data is the JSON object `data`."""

    def _other(self, event: bytes) -> list[bytes]:
        return [event]

    def _flushed(self, blocks: Sequence[Hashable]) -> list[bytes]:
        """An event for each of `blocks` that had text held back."""
        out = []
        for block in blocks:
            text = self.chain.flush(block)
            if text:
                out.append(self._synthesized(block, text))
        return out

    @abstractmethod
    def _synthesized(self, block: Hashable, text: str) -> bytes:
        """An event of this format that carries `text`, held back, for `block`."""

    def _whole(self, event: bytes, data: dict[str, Any]) -> bytes:
        """`event` with the chain's whole-text rewriting applied to its strings."""
        if not self.chain.rewrites_whole:
            return event
        mapped = map_strings(data, self.chain.whole)
        return event if mapped is data else _encoded(event, mapped)


# OpenAI Chat: `choices[].delta` carries content (and refusal, reasoning) and tool-call
# argument pieces; a block is (choice, field) or (choice, "tool", tool-call index).
_CHAT_FIELDS = ("content", "refusal", "reasoning_content", "reasoning")


class ChatRewriter(Rewriter):
    def __init__(self, chain: Chain) -> None:
        super().__init__(chain)
        self._envelope: dict[str, Any] = {}  # the last chunk's fields besides its choices

    def _other(self, event: bytes) -> list[bytes]:
        if sse.data_of(event).strip() == b"[DONE]":
            return [*self.finish(), event]
        return [event]

    def _event(self, event: bytes, data: dict[str, Any]) -> list[bytes]:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            return [event]  # the usage chunk, an error
        self._envelope = {key: value for key, value in data.items() if key != "choices"}
        changed = False
        for choice in choices:
            if isinstance(choice, dict):
                changed = self._choice(choice) or changed
        return [_encoded(event, data) if changed else event]

    def _choice(self, choice: dict[str, Any]) -> bool:
        number = choice.get("index", 0)
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        changed = False
        for name in _CHAT_FIELDS:
            value = delta.get(name)
            if isinstance(value, str) and value:
                block: tuple[Any, ...] = (number, name)
                text = self.chain.feed(block, value, False)
                if text != value:
                    delta[name], changed = text, True
        for call in delta.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            pieces = function.get("arguments") if isinstance(function, dict) else None
            if isinstance(pieces, str) and pieces:
                block = (number, "tool", call.get("index", 0))
                text = self.chain.feed(block, pieces, True)
                if text != pieces:
                    function["arguments"], changed = text, True  # type: ignore[index]
        if not choice.get("finish_reason"):
            return changed
        # The choice's end: what its blocks held goes out with it (blocks may interleave,
        # parallel tool calls, so only the end decides).
        for held in self.chain.pending():
            if not isinstance(held, tuple) or held[0] != number:
                continue
            text = self.chain.flush(held)
            if text:
                _add(delta, held, text)
                choice["delta"], changed = delta, True
        return changed

    def _synthesized(self, block: Hashable, text: str) -> bytes:
        assert isinstance(block, tuple)
        delta: dict[str, Any] = {}
        _add(delta, block, text)
        choice = {"index": block[0], "delta": delta, "logprobs": None, "finish_reason": None}
        return sse.encode(orjson.dumps({**self._envelope, "choices": [choice]}))


def _add(delta: dict[str, Any], block: tuple[Any, ...], text: str) -> None:
    """Put held `text` of `block` into a chat chunk's `delta`, after what it carries."""
    if block[1] == "tool":
        calls = delta.get("tool_calls")
        delta["tool_calls"] = [
            *(calls if isinstance(calls, list) else ()),
            {"index": block[2], "function": {"arguments": text}},
        ]
    else:
        delta[block[1]] = (delta.get(block[1]) or "") + text


# Anthropic Messages: `content_block_delta` events carry text, thinking and tool-input JSON
# pieces; a block is the content block's index.
_MESSAGES_DELTAS = {
    "text_delta": ("text", False),
    "thinking_delta": ("thinking", False),
    "input_json_delta": ("partial_json", True),
}


class MessagesRewriter(Rewriter):
    def __init__(self, chain: Chain) -> None:
        super().__init__(chain)
        self._kinds: dict[Hashable, str] = {}  # block -> its delta type

    def _event(self, event: bytes, data: dict[str, Any]) -> list[bytes]:
        kind, index = data.get("type"), data.get("index")
        if kind == "content_block_delta":
            delta = data.get("delta")
            carried = (
                _MESSAGES_DELTAS.get(str(delta.get("type"))) if isinstance(delta, dict) else None
            )
            if carried is None or not isinstance(delta, dict):  # a signature: the text is done
                return [*self._flushed([index]), event]
            name, json_text = carried
            value = delta.get(name)
            if not isinstance(value, str):
                return [event]
            self._kinds[index] = delta["type"]
            text = self.chain.feed(index, value, json_text)
            if text == value:
                return [event]
            delta[name] = text
            return [_encoded(event, data)]
        if kind == "content_block_stop":
            return [*self._flushed([index]), event]
        if kind in ("content_block_start", "message_start"):
            return [self._whole(event, data)]
        if kind == "ping":
            return [event]
        return [*self.finish(), event]  # message_delta, message_stop, error

    def _synthesized(self, block: Hashable, text: str) -> bytes:
        kind = self._kinds.get(block, "text_delta")
        field = _MESSAGES_DELTAS[kind][0]
        data = {"type": "content_block_delta", "index": block, "delta": {"type": kind, field: text}}
        return sse.encode(orjson.dumps(data), "content_block_delta")


# OpenAI Responses: `*.delta` events carry pieces of output text, refusals, reasoning and
# function-call arguments; a block is (event type, item, content or summary index). Every
# event is numbered: an event added for held text takes the next number, and the events
# after it are renumbered.
_RESPONSES_DELTAS = {
    "response.output_text.delta": False,
    "response.refusal.delta": False,
    "response.reasoning_text.delta": False,
    "response.reasoning_summary_text.delta": False,
    "response.function_call_arguments.delta": True,
}


class ResponsesRewriter(Rewriter):
    def __init__(self, chain: Chain) -> None:
        super().__init__(chain)
        self._last: dict[Hashable, dict[str, Any]] = {}  # block -> its last delta event
        self._added = 0  # events added so far (later numbers move up by as much)
        self._next = 0  # the number the next added event takes

    def _event(self, event: bytes, data: dict[str, Any]) -> list[bytes]:
        kind = data.get("type")
        number = data.get("sequence_number")
        if isinstance(number, int):
            self._next = number + self._added
        json_text = _RESPONSES_DELTAS.get(kind) if isinstance(kind, str) else None
        if json_text is not None and isinstance(data.get("delta"), str):
            block = (
                kind,
                data.get("item_id"),
                data.get("content_index", data.get("summary_index")),
            )
            self._last[block] = data
            value = data["delta"]
            text = self.chain.feed(block, value, json_text)
            if text != value:
                data = {**data, "delta": text}
            return [self._numbered(event, data, text != value)]
        item = data.get("item_id")
        held = [
            block
            for block in self.chain.pending()
            if item is None or (isinstance(block, tuple) and block[1] == item)
        ]
        out = self._flushed(held)
        mapped = map_strings(data, self.chain.whole) if self.chain.rewrites_whole else data
        return [*out, self._numbered(event, mapped, mapped is not data)]

    def _in_step(self) -> bool:
        return not self._added  # once an event was added, every later one is renumbered

    def _numbered(self, event: bytes, data: dict[str, Any], changed: bool) -> bytes:
        if self._added and isinstance(data.get("sequence_number"), int):
            data = {**data, "sequence_number": data["sequence_number"] + self._added}
            changed = True
        self._next += 1
        return _encoded(event, data) if changed else event

    def _synthesized(self, block: Hashable, text: str) -> bytes:
        data = {**self._last[block], "delta": text, "sequence_number": self._next}
        self._next += 1
        self._added += 1
        return sse.encode(orjson.dumps(data), str(data["type"]))


_REWRITERS: dict[str, type[Rewriter]] = {
    "openai_chat": ChatRewriter,
    "anthropic_messages": MessagesRewriter,
    "openai_responses": ResponsesRewriter,
}


def rewriter(ingress: str, filters: Sequence[TextFilter]) -> Rewriter:
    """The chain of `filters` on the server-sent events of the ingress format `ingress`."""
    return _REWRITERS[ingress](Chain(filters))
