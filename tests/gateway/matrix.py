"""The pieces of the format matrix: each client SDK behind one small interface, and each
provider type with what its fake received, read in that provider's own format."""

import json
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai

from providers.models import Provider
from tests.factories import ProviderFactory
from tests.fakes.base import FakeServer
from tests.fakes.bedrock_upstream import FakeBedrock

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city"],
}
PIXEL = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@dataclass(frozen=True)
class Conversation:
    text: str = "What is the weather in Paris?"
    image: tuple[str, str] | None = None  # (media type, base64 data)
    # An earlier tool call and its result: (call id, tool name, arguments, result text).
    tool_round: tuple[str, str, dict[str, Any], str] | None = None
    tools: bool = False


@dataclass
class Answer:
    text: str = ""
    tool_calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    usage: tuple[int, int, int] = (0, 0, 0)  # input (cached included), output, cached


# --- clients ---------------------------------------------------------------------------


class ChatClient:
    """The openai SDK's Chat Completions."""

    name = "openai_chat"
    api_error = openai.APIStatusError

    def __init__(self, base: str, key: str) -> None:
        self.sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)

    def _messages(self, conv: Conversation) -> list[dict[str, Any]]:
        content: Any = conv.text
        if conv.image:
            url = f"data:{conv.image[0]};base64,{conv.image[1]}"
            content = [
                {"type": "text", "text": conv.text},
                {"type": "image_url", "image_url": {"url": url}},
            ]
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if conv.tool_round:
            call_id, name, arguments, result = conv.tool_round
            call = {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
            messages += [
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call_id, "content": result},
            ]
        return messages

    def _tools(self, conv: Conversation) -> Any:
        tool = {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather now",
                "parameters": WEATHER,
            },
        }
        return [tool] if conv.tools else openai.NOT_GIVEN

    def ask(self, model: str, conv: Conversation) -> Answer:
        done = self.sdk.chat.completions.create(
            model=model, messages=self._messages(conv), tools=self._tools(conv)
        )
        message = done.choices[0].message
        calls = [
            (c.id, c.function.name, json.loads(c.function.arguments))
            for c in message.tool_calls or []
        ]
        usage = done.usage
        assert usage is not None
        cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
        return Answer(
            message.content or "",
            calls,
            (usage.prompt_tokens, usage.completion_tokens, cached or 0),
        )

    def ask_stream(self, model: str, conv: Conversation) -> Answer:
        stream = self.sdk.chat.completions.create(
            model=model,
            messages=self._messages(conv),
            tools=self._tools(conv),
            stream=True,
            stream_options={"include_usage": True},
        )
        answer, calls = Answer(), {}
        for chunk in stream:
            if chunk.usage:
                details = chunk.usage.prompt_tokens_details
                answer.usage = (
                    chunk.usage.prompt_tokens,
                    chunk.usage.completion_tokens,
                    (details.cached_tokens if details else 0) or 0,
                )
            for choice in chunk.choices:
                answer.text += choice.delta.content or ""
                for call in choice.delta.tool_calls or []:
                    slot = calls.setdefault(call.index, ["", "", ""])
                    slot[0] = call.id or slot[0]
                    slot[1] = (call.function.name if call.function else None) or slot[1]
                    slot[2] += (call.function.arguments if call.function else None) or ""
        answer.tool_calls = [(i, n, json.loads(a)) for i, n, a in (calls[k] for k in sorted(calls))]
        return answer


class ResponsesClient:
    """The openai SDK's Responses API."""

    name = "openai_responses"
    api_error = openai.APIStatusError

    def __init__(self, base: str, key: str) -> None:
        self.sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)

    def _input(self, conv: Conversation) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = [{"type": "input_text", "text": conv.text}]
        if conv.image:
            content.append(
                {"type": "input_image", "image_url": f"data:{conv.image[0]};base64,{conv.image[1]}"}
            )
        items: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if conv.tool_round:
            call_id, name, arguments, result = conv.tool_round
            items += [
                {
                    "type": "function_call",
                    "call_id": call_id,
                    "name": name,
                    "arguments": json.dumps(arguments),
                },
                {"type": "function_call_output", "call_id": call_id, "output": result},
            ]
        return items

    def _tools(self, conv: Conversation) -> Any:
        tool = {
            "type": "function",
            "name": "get_weather",
            "description": "Weather now",
            "parameters": WEATHER,
        }
        return [tool] if conv.tools else openai.NOT_GIVEN

    def _answer(self, response: Any) -> Answer:
        calls = [
            (i.call_id, i.name, json.loads(i.arguments))
            for i in response.output
            if i.type == "function_call"
        ]
        usage = response.usage
        return Answer(
            response.output_text,
            calls,
            (usage.input_tokens, usage.output_tokens, usage.input_tokens_details.cached_tokens),
        )

    def ask(self, model: str, conv: Conversation) -> Answer:
        return self._answer(
            self.sdk.responses.create(model=model, input=self._input(conv), tools=self._tools(conv))
        )

    def ask_stream(self, model: str, conv: Conversation) -> Answer:
        with self.sdk.responses.stream(
            model=model, input=self._input(conv), tools=self._tools(conv)
        ) as stream:
            for _ in stream:
                pass
            return self._answer(stream.get_final_response())


class MessagesClient:
    """The anthropic SDK's Messages API."""

    name = "anthropic_messages"
    api_error = anthropic.APIStatusError

    def __init__(self, base: str, key: str) -> None:
        self.sdk = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0, timeout=30)

    def _messages(self, conv: Conversation) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = [{"type": "text", "text": conv.text}]
        if conv.image:
            content.append(
                {
                    "type": "image",
                    "source": {
                        "type": "base64",
                        "media_type": conv.image[0],
                        "data": conv.image[1],
                    },
                }
            )
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if conv.tool_round:
            call_id, name, arguments, result = conv.tool_round
            messages += [
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": call_id, "name": name, "input": arguments}
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": call_id, "content": result}],
                },
            ]
        return messages

    def _tools(self, conv: Conversation) -> Any:
        tool = {"name": "get_weather", "description": "Weather now", "input_schema": WEATHER}
        return [tool] if conv.tools else anthropic.NOT_GIVEN

    def _answer(self, message: Any) -> Answer:
        text = "".join(b.text for b in message.content if b.type == "text")
        calls = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
        usage = message.usage
        cached = usage.cache_read_input_tokens or 0
        return Answer(text, calls, (usage.input_tokens + cached, usage.output_tokens, cached))

    def ask(self, model: str, conv: Conversation) -> Answer:
        return self._answer(
            self.sdk.messages.create(
                model=model, max_tokens=1024, messages=self._messages(conv), tools=self._tools(conv)
            )
        )

    def ask_stream(self, model: str, conv: Conversation) -> Answer:
        with self.sdk.messages.stream(
            model=model, max_tokens=1024, messages=self._messages(conv), tools=self._tools(conv)
        ) as stream:
            for _ in stream:
                pass
            return self._answer(stream.get_final_message())


CLIENTS = {c.name: c for c in (ChatClient, ResponsesClient, MessagesClient)}


# --- providers -------------------------------------------------------------------------


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if isinstance(b, dict))


@dataclass(frozen=True)
class ProviderCase:
    type: str
    upstream_model: str
    reports_reasoning: bool

    def provider(self, fake: FakeServer) -> Provider:
        fields: dict[str, Any] = {
            "name": f"{self.type}-provider",
            "type": self.type,
            "base_url": fake.url,
        }
        fields.update(_PROVIDER_FIELDS.get(self.type, {}))
        return ProviderFactory(**fields)

    def tool_names(self, body: dict[str, Any]) -> list[str]:
        return _TOOL_NAMES[_READERS[self.type][3]](body)

    def tool_calls(self, body: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
        return _READERS[self.type][0](body)

    def tool_results(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        return _READERS[self.type][1](body)

    def images(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        return _READERS[self.type][2](body)


_PROVIDER_FIELDS: dict[str, dict[str, Any]] = {
    "openai": {"api_key": "sk-upstream-secret"},
    "openai_compatible": {"api_key": ""},
    "azure_openai": {"api_key": "azure-secret", "api_version": "2024-10-21"},
    "anthropic": {"api_key": "sk-ant-upstream"},
    "gemini": {"api_key": "gemini-upstream"},
    "bedrock": {
        "api_key": FakeBedrock.SECRET_ACCESS_KEY,
        "region": FakeBedrock.REGION,
        "aws_access_key_id": FakeBedrock.ACCESS_KEY_ID,
    },
}


# OpenAI providers receive Chat Completions bodies, or Responses bodies passed through.


def _items(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [i for i in body["input"] if i.get("type") == kind]


def _openai_calls(body: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    if "input" in body:
        return [
            (i["call_id"], i["name"], json.loads(i["arguments"]))
            for i in _items(body, "function_call")
        ]
    return [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for m in body["messages"]
        for c in m.get("tool_calls") or []
    ]


def _openai_results(body: dict[str, Any]) -> list[tuple[str, str]]:
    if "input" in body:
        return [(i["call_id"], _text(i["output"])) for i in _items(body, "function_call_output")]
    return [
        (m["tool_call_id"], _text(m["content"])) for m in body["messages"] if m["role"] == "tool"
    ]


def _openai_images(body: dict[str, Any]) -> list[tuple[str, str]]:
    messages = body.get("messages") or body.get("input")
    parts = [p for m in messages if isinstance(m.get("content"), list) for p in m["content"]]
    urls = [
        p["image_url"]["url"] if p["type"] == "image_url" else p["image_url"]
        for p in parts
        if "image" in p["type"]
    ]
    return [(u[5:].split(";")[0], u.split(",", 1)[1]) for u in urls]


def _blocks(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [
        b
        for m in body["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == kind
    ]


def _anthropic_calls(body: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(b["id"], b["name"], b["input"]) for b in _blocks(body, "tool_use")]


def _anthropic_results(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(b["tool_use_id"], _text(b["content"])) for b in _blocks(body, "tool_result")]


def _anthropic_images(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(b["source"]["media_type"], b["source"]["data"]) for b in _blocks(body, "image")]


def _gemini_parts(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [p[key] for content in body["contents"] for p in content["parts"] if key in p]


def _bedrock_parts(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [b[key] for m in body["messages"] for b in m["content"] if key in b]


_TOOL_NAMES = {
    "openai": lambda body: [t.get("function", t)["name"] for t in body.get("tools") or []],
    "anthropic": lambda body: [t["name"] for t in body.get("tools") or []],
    "gemini": lambda body: [
        f["name"] for t in body.get("tools") or [] for f in t["functionDeclarations"]
    ],
    "bedrock": lambda body: [
        t["toolSpec"]["name"] for t in (body.get("toolConfig") or {}).get("tools") or []
    ],
}

_READERS: dict[str, tuple[Any, Any, Any, str]] = {
    "openai": (_openai_calls, _openai_results, _openai_images, "openai"),
    "openai_compatible": (_openai_calls, _openai_results, _openai_images, "openai"),
    "azure_openai": (_openai_calls, _openai_results, _openai_images, "openai"),
    "anthropic": (_anthropic_calls, _anthropic_results, _anthropic_images, "anthropic"),
    "gemini": (
        lambda body: [
            (c.get("id"), c["name"], c["args"]) for c in _gemini_parts(body, "functionCall")
        ],
        lambda body: [
            (r.get("id"), r["response"].get("result", ""))
            for r in _gemini_parts(body, "functionResponse")
        ],
        lambda body: [(d["mimeType"], d["data"]) for d in _gemini_parts(body, "inlineData")],
        "gemini",
    ),
    "bedrock": (
        lambda body: [
            (u["toolUseId"], u["name"], u["input"]) for u in _bedrock_parts(body, "toolUse")
        ],
        lambda body: [
            (r["toolUseId"], _text(r["content"])) for r in _bedrock_parts(body, "toolResult")
        ],
        lambda body: [
            (f"image/{i['format']}", i["source"]["bytes"]) for i in _bedrock_parts(body, "image")
        ],
        "bedrock",
    ),
}

PROVIDERS = {
    case.type: case
    for case in (
        ProviderCase("openai", "gpt-4o", True),
        ProviderCase("openai_compatible", "llama-3.1-8b", True),
        ProviderCase("azure_openai", "prod-gpt4o", True),
        ProviderCase("anthropic", "claude-sonnet-4-5", False),
        ProviderCase("gemini", "gemini-2.5-flash", True),
        ProviderCase("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", False),
    )
}
