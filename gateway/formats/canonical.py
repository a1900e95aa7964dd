"""The one representation every API format converts through.

A client's request is decoded from its format into a `Request`, encoded into the
provider's format; the provider's answer is decoded into a `Response` (or a sequence of
stream `Event`s) and encoded back into the client's format. Each format module knows only
its own wire format and this module.

Conventions:
- Tool results are parts of a user message (as in Anthropic's and Bedrock's APIs); formats
  that send them as separate messages (OpenAI's `role: tool`) split and join them.
- Tool-call ids pass through unchanged in both directions; a provider that has none
  (older Gemini answers) gets ids made up once and reused.
- Tool-call arguments are kept as the JSON text the model produced.
- Usage counts input tokens including cached ones, output tokens including reasoning.
"""

from dataclasses import dataclass, field
from typing import Any, Literal

from providers.pricing import Usage

Role = Literal["user", "assistant"]
StopReason = Literal["end", "max_tokens", "tool_use", "stop_sequence", "content_filter", "refusal"]


class Unsupported(Exception):
    """A request uses something the chosen provider (or format) cannot express."""

    def __init__(self, feature: str, where: str) -> None:
        super().__init__(f"{feature} is not supported by {where}.")
        self.feature = feature
        self.where = where


@dataclass(slots=True)
class Text:
    text: str
    cache: bool = False  # Anthropic's prompt-caching breakpoint on this block


@dataclass(slots=True)
class Image:
    media_type: str = ""  # e.g. image/png; empty for a URL whose type is unknown
    data: str = ""  # base64, when the image is inline
    url: str = ""  # when the image is given by address


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text
    signature: str = ""  # Gemini's thought signature on the call; comes back unchanged


@dataclass(slots=True)
class ToolResult:
    call_id: str
    name: str  # the called tool's name (Gemini matches results by name)
    content: list["Text | Image"]
    is_error: bool = False


@dataclass(slots=True)
class Thinking:
    text: str = ""
    signature: str = ""  # Anthropic/Bedrock signature; must come back unchanged
    redacted: str = ""  # Anthropic's redacted_thinking data


Part = Text | Image | ToolCall | ToolResult | Thinking


@dataclass(slots=True)
class Message:
    role: Role
    parts: list[Part]


@dataclass(slots=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


@dataclass(slots=True)
class ToolChoice:
    mode: Literal["auto", "none", "required", "tool"]
    name: str = ""  # with mode "tool"


@dataclass(slots=True)
class OutputFormat:
    kind: Literal["json_object", "json_schema"]
    name: str = ""
    schema: dict[str, Any] | None = None
    strict: bool | None = None


@dataclass(slots=True)
class Reasoning:
    effort: str = ""  # minimal / low / medium / high
    budget_tokens: int | None = None
    summary: bool = False  # the client wants the reasoning text back


@dataclass(slots=True)
class Request:
    model: str
    messages: list[Message]
    system: list[Text] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    output: OutputFormat | None = None
    reasoning: Reasoning | None = None
    user: str | None = None
    # Sampling parameters only some providers have (seed, presence/frequency penalty).
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Response:
    id: str
    model: str
    parts: list[Part]
    stop: StopReason = "end"
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)


# --- stream events ---------------------------------------------------------------------

BlockKind = Literal["text", "thinking", "tool_call"]


@dataclass(slots=True)
class Start:
    id: str
    model: str


@dataclass(slots=True)
class BlockStart:
    index: int
    kind: BlockKind
    call_id: str = ""  # tool calls
    name: str = ""  # tool calls


@dataclass(slots=True)
class Delta:
    """More text, thinking text, or tool-call argument JSON, for block `index`."""

    index: int
    text: str


@dataclass(slots=True)
class SignatureDelta:
    index: int
    signature: str


@dataclass(slots=True)
class BlockStop:
    index: int


@dataclass(slots=True)
class Stop:
    reason: StopReason
    sequence: str | None = None


@dataclass(slots=True)
class UsageReport:
    """The usage known so far; later reports replace earlier ones."""

    usage: Usage


Event = Start | BlockStart | Delta | SignatureDelta | BlockStop | Stop | UsageReport


def text_of(parts: list[Part]) -> str:
    return "".join(p.text for p in parts if isinstance(p, Text))


class Blocks:
    """Hands out stream block indexes in order and remembers which are open, for decoders
    whose provider numbers blocks its own way (or not at all)."""

    def __init__(self) -> None:
        self._index: dict[Any, int] = {}
        self._kind: dict[int, BlockKind] = {}
        self.open: list[int] = []

    def kind(self, index: int) -> BlockKind:
        return self._kind[index]

    def get(self, key: Any) -> int | None:
        return self._index.get(key)

    def start(self, key: Any, kind: BlockKind, call_id: str = "", name: str = "") -> list[Event]:
        """Open a block for `key`, closing the block before it (blocks never interleave)."""
        events: list[Event] = [BlockStop(i) for i in self.open]
        index = len(self._index)
        self._index[key] = index
        self._kind[index] = kind
        self.open = [index]
        return [*events, BlockStart(index, kind, call_id, name)]

    def delta(self, key: Any, kind: BlockKind, text: str) -> list[Event]:
        index = self._index.get(key)
        if index is None or index not in self.open:
            events = self.start(key, kind)
            return [*events, Delta(self._index[key], text)] if text else events
        return [Delta(index, text)] if text else []

    def close_all(self) -> list[Event]:
        events: list[Event] = [BlockStop(i) for i in self.open]
        self.open = []
        return events
