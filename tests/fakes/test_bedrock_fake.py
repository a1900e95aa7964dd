"""The Bedrock fake against boto3's own `bedrock-runtime` client: if botocore signs, parses
and decodes what the fake does, the fake speaks Bedrock's wire format."""

import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import boto3
import botocore.config
import httpx
import pytest
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from botocore.exceptions import ClientError

from tests.fakes.base import ToolCall, embedding
from tests.fakes.bedrock_upstream import FakeBedrock, event_message

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "Hello?"}]}]
WEATHER = ToolCall("tooluse_weather01", "get_weather", {"city": "Paris", "unit": "celsius"})
TIME = ToolCall("tooluse_time02", "get_time", {"timezone": "Europe/Paris", "format": 24})


@pytest.fixture(scope="session")
def fake_bedrock() -> Iterator[FakeBedrock]:
    fake = FakeBedrock().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(fake_bedrock: FakeBedrock) -> Iterator[FakeBedrock]:
    fake_bedrock.reset()
    yield fake_bedrock
    fake_bedrock.reset()


def make_client(fake: FakeBedrock, **overrides: Any) -> Any:
    settings: dict[str, Any] = {
        "region_name": FakeBedrock.REGION,
        "endpoint_url": fake.root,
        "aws_access_key_id": FakeBedrock.ACCESS_KEY_ID,
        "aws_secret_access_key": FakeBedrock.SECRET_ACCESS_KEY,
        # One attempt in all: botocore's "max_attempts" counts retries, so 1 would retry once.
        "config": botocore.config.Config(retries={"total_max_attempts": 1}),
        **overrides,
    }
    return boto3.client("bedrock-runtime", **settings)


@pytest.fixture
def bedrock(fake: FakeBedrock) -> Any:
    return make_client(fake)


def stream_by_type(response: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The ConverseStream events, grouped by event type in arrival order."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in response["stream"]:
        ((kind, payload),) = event.items()
        grouped[kind].append(payload)
    return grouped


def deltas(events: dict[str, list[dict[str, Any]]], kind: str) -> list[Any]:
    return list(filter(None, (d["delta"].get(kind) for d in events["contentBlockDelta"])))


def streamed_tool_uses(events: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Tool uses rebuilt from contentBlockStart plus the input fragments of their deltas."""
    fragments: dict[int, str] = defaultdict(str)
    for delta in events["contentBlockDelta"]:
        fragments[delta["contentBlockIndex"]] += delta["delta"].get("toolUse", {}).get("input", "")
    starts = {s["contentBlockIndex"]: s["start"]["toolUse"] for s in events["contentBlockStart"]}
    return [{**starts[index], "input": json.loads(fragments[index])} for index in sorted(starts)]


def converse_stream(bedrock: Any, model: str = MODEL) -> dict[str, list[dict[str, Any]]]:
    return stream_by_type(bedrock.converse_stream(modelId=model, messages=MESSAGES))


@pytest.mark.parametrize(("stop", "reason"), [("end", "end_turn"), ("max_tokens", "max_tokens")])
def test_it_answers_converse_with_the_scripted_text(
    fake: FakeBedrock, bedrock: Any, stop: str, reason: str
) -> None:
    fake.script(text="Bonjour tout le monde", stop=stop, prompt_tokens=21)

    answer = bedrock.converse(modelId=MODEL, messages=MESSAGES)

    assert answer["output"]["message"] == {
        "role": "assistant",
        "content": [{"text": "Bonjour tout le monde"}],
    }
    assert answer["stopReason"] == reason
    assert answer["usage"] == {
        "inputTokens": 21,
        "outputTokens": 4,
        "totalTokens": 25,
        "cacheReadInputTokens": 0,
        "cacheWriteInputTokens": 0,
    }
    assert answer["metrics"] == {"latencyMs": 12}
    assert fake.requests[0].body["messages"] == MESSAGES


def test_it_reports_cache_reads_in_the_usage(fake: FakeBedrock, bedrock: Any) -> None:
    fake.script(prompt_tokens=1030, cached_tokens=1000)

    usage = bedrock.converse(modelId=MODEL, messages=MESSAGES)["usage"]

    assert (usage["inputTokens"], usage["cacheReadInputTokens"]) == (30, 1000)
    assert usage["totalTokens"] == 30 + usage["outputTokens"] + 1000


def test_it_streams_the_same_text_as_converse(fake: FakeBedrock, bedrock: Any) -> None:
    whole = bedrock.converse(modelId=MODEL, messages=MESSAGES)

    events = converse_stream(bedrock)

    assert "".join(deltas(events, "text")) == whole["output"]["message"]["content"][0]["text"]
    assert len(deltas(events, "text")) == len(fake.script_now.words)
    assert events["messageStart"] == [{"role": "assistant"}]
    assert events["contentBlockStop"] == [{"contentBlockIndex": 0}]
    assert events["messageStop"] == [{"stopReason": "end_turn"}]
    assert events["metadata"] == [{"usage": whole["usage"], "metrics": {"latencyMs": 12}}]


@pytest.mark.parametrize("calls", [(WEATHER,), (WEATHER, TIME)], ids=["one", "parallel"])
def test_it_returns_tool_uses(fake: FakeBedrock, bedrock: Any, calls: tuple[ToolCall, ...]) -> None:
    fake.script(text="", tool_calls=calls)

    answer = bedrock.converse(modelId=MODEL, messages=MESSAGES)

    assert answer["output"]["message"]["content"] == [
        {"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.arguments}}
        for call in calls
    ]
    assert answer["stopReason"] == "tool_use"


@pytest.mark.parametrize("calls", [(WEATHER,), (WEATHER, TIME)], ids=["one", "parallel"])
def test_it_streams_tool_use_inputs_in_fragments(
    fake: FakeBedrock, bedrock: Any, calls: tuple[ToolCall, ...]
) -> None:
    fake.script(text="Let me check.", tool_calls=calls)

    events = converse_stream(bedrock)

    assert streamed_tool_uses(events) == [
        {"toolUseId": call.id, "name": call.name, "input": call.arguments} for call in calls
    ]
    assert len(deltas(events, "toolUse")) >= 2 * len(calls)
    assert [s["contentBlockIndex"] for s in events["contentBlockStart"]] == list(
        range(1, len(calls) + 1)
    )
    assert "".join(deltas(events, "text")) == "Let me check."
    assert events["messageStop"] == [{"stopReason": "tool_use"}]


def test_it_returns_reasoning_with_its_signature(fake: FakeBedrock, bedrock: Any) -> None:
    fake.script(thinking="The user greets me.", signature="sig-123", text="Hi!")

    content = bedrock.converse(modelId=MODEL, messages=MESSAGES)["output"]["message"]["content"]

    assert content == [
        {
            "reasoningContent": {
                "reasoningText": {"text": "The user greets me.", "signature": "sig-123"}
            }
        },
        {"text": "Hi!"},
    ]


def test_it_streams_reasoning_then_its_signature(fake: FakeBedrock, bedrock: Any) -> None:
    fake.script(thinking="The user greets me.", signature="sig-123", text="Hi!")

    events = converse_stream(bedrock)

    reasoning = deltas(events, "reasoningContent")
    assert "".join(r.get("text", "") for r in reasoning) == "The user greets me."
    assert reasoning[-1] == {"signature": "sig-123"}
    assert {d["contentBlockIndex"] for d in events["contentBlockDelta"][: len(reasoning)]} == {0}
    assert events["contentBlockStop"] == [{"contentBlockIndex": 0}, {"contentBlockIndex": 1}]
    assert "".join(deltas(events, "text")) == "Hi!"


@pytest.mark.parametrize(
    ("model", "request_body", "dims"),
    [
        ("amazon.titan-embed-text-v2:0", {"inputText": "hello there", "dimensions": 256}, 256),
        ("amazon.titan-embed-text-v1", {"inputText": "hello there"}, 8),
    ],
)
def test_it_embeds_with_titan(
    fake: FakeBedrock, bedrock: Any, model: str, request_body: dict[str, Any], dims: int
) -> None:
    fake.script(prompt_tokens=2)

    response = bedrock.invoke_model(modelId=model, body=json.dumps(request_body))
    answer = json.loads(response["body"].read())

    assert answer["embedding"] == embedding("hello there", dims)
    assert answer["inputTextTokenCount"] == 2
    assert response["contentType"] == "application/json"
    assert fake.model_ids == [model]


def test_it_embeds_with_cohere(fake: FakeBedrock, bedrock: Any) -> None:
    fake.script(embedding_dims=16)
    texts = ["first document", "second document"]

    response = bedrock.invoke_model(
        modelId="cohere.embed-english-v3",
        body=json.dumps({"texts": texts, "input_type": "search_document", "truncate": "END"}),
    )
    answer = json.loads(response["body"].read())

    assert answer["embeddings"] == [embedding(text, 16) for text in texts]
    assert answer["response_type"] == "embeddings_floats"
    assert answer["texts"] == texts
    assert answer["id"]


@pytest.mark.parametrize(
    ("model", "request_body"),
    [
        ("anthropic.claude-3-haiku-20240307-v1:0", {"inputText": "hello"}),
        ("amazon.titan-embed-text-v2:0", {"texts": ["hello"]}),
        ("cohere.embed-english-v3", {"texts": ["hello"]}),  # no input_type
    ],
)
def test_it_refuses_an_embedding_it_cannot_make(
    bedrock: Any, model: str, request_body: dict[str, Any]
) -> None:
    with pytest.raises(ClientError) as refused:
        bedrock.invoke_model(modelId=model, body=json.dumps(request_body))

    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize(
    "model",
    [
        "us.anthropic.claude-3-5-sonnet-20240620-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20240620-v1:0",
    ],
)
def test_it_decodes_inference_profile_model_ids(
    fake: FakeBedrock, bedrock: Any, model: str
) -> None:
    bedrock.converse(modelId=model, messages=MESSAGES)
    converse_stream(bedrock, model)

    assert fake.model_ids == [model, model]
    assert fake.signatures_ok == [True, True]


def test_it_verifies_every_signature_of_a_valid_client(fake: FakeBedrock, bedrock: Any) -> None:
    bedrock.converse(modelId=MODEL, messages=MESSAGES)
    converse_stream(bedrock)
    bedrock.invoke_model(modelId="amazon.titan-embed-text-v2:0", body='{"inputText": "x"}')

    assert fake.signatures_ok == [True, True, True]
    assert fake.session_tokens == [None, None, None]


def test_it_records_the_session_token(fake: FakeBedrock) -> None:
    bedrock = make_client(fake, aws_session_token="FwoGZXIvYXdzEFAKE")

    bedrock.converse(modelId=MODEL, messages=MESSAGES)

    assert fake.signatures_ok == [True]
    assert fake.session_tokens == ["FwoGZXIvYXdzEFAKE"]


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"aws_secret_access_key": "not-the-secret"}, "InvalidSignatureException"),
        ({"region_name": "eu-west-1"}, "InvalidSignatureException"),
        ({"aws_access_key_id": "AKIDSOMEONEELSE"}, "UnrecognizedClientException"),
    ],
    ids=["wrong-secret", "wrong-region", "unknown-key"],
)
def test_it_refuses_a_bad_signature(
    fake: FakeBedrock, overrides: dict[str, str], code: str
) -> None:
    bedrock = make_client(fake, **overrides)

    with pytest.raises(ClientError) as refused:
        bedrock.converse(modelId=MODEL, messages=MESSAGES)

    assert refused.value.response["Error"]["Code"] == code
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert fake.signatures_ok == [False]


def test_it_refuses_a_wrong_secret_with_bedrocks_message(fake: FakeBedrock) -> None:
    bedrock = make_client(fake, aws_secret_access_key="not-the-secret")

    with pytest.raises(ClientError) as refused:
        bedrock.converse_stream(modelId=MODEL, messages=MESSAGES)

    assert refused.value.response["Error"]["Message"].startswith(
        "The request signature we calculated does not match the signature you provided."
    )


def test_it_refuses_a_body_changed_after_signing(fake: FakeBedrock, bedrock: Any) -> None:
    def tamper(request: Any, **_: Any) -> None:
        request.body = request.body.replace(b"Hello?", b"Howdy?")

    bedrock.meta.events.register_last("before-send.bedrock-runtime.Converse", tamper)

    with pytest.raises(ClientError) as refused:
        bedrock.converse(modelId=MODEL, messages=MESSAGES)

    assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert fake.requests[0].body["messages"][0]["content"] == [{"text": "Howdy?"}]


def test_it_accepts_a_request_signed_outside_boto3(fake: FakeBedrock) -> None:
    url = f"{fake.root}/model/{quote(MODEL, safe='')}/converse"
    request = AWSRequest("POST", url, data=json.dumps({"messages": MESSAGES}).encode())
    request.headers["Content-Type"] = "application/json"
    credentials = Credentials(FakeBedrock.ACCESS_KEY_ID, FakeBedrock.SECRET_ACCESS_KEY)
    SigV4Auth(credentials, "bedrock", FakeBedrock.REGION).add_auth(request)

    response = httpx.post(url, content=request.body, headers=dict(request.headers.items()))

    assert response.status_code == 200
    assert fake.signatures_ok == [True]
    assert fake.model_ids == [MODEL]


def test_it_refuses_an_unsigned_request(fake: FakeBedrock) -> None:
    response = httpx.post(f"{fake.root}/model/{MODEL}/converse", json={"messages": MESSAGES})

    assert response.status_code == 403
    assert response.headers["x-amzn-ErrorType"] == "UnrecognizedClientException"
    assert response.json() == {"message": "The security token included in the request is invalid."}
    assert fake.signatures_ok == [False]


@pytest.mark.parametrize(
    ("authorization", "status"),
    [("Bearer bedrock-api-key-123", 200), ("Bearer another-key", 403), (None, 403)],
)
def test_it_takes_a_bedrock_api_key_when_scripted_to(
    fake: FakeBedrock, authorization: str | None, status: int
) -> None:
    fake.script(expected_key="bedrock-api-key-123")

    response = httpx.post(
        f"{fake.root}/model/{MODEL}/converse",
        json={"messages": MESSAGES},
        headers={"Authorization": authorization or ""},
    )

    assert response.status_code == status


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "ValidationException"),
        (429, "ThrottlingException"),
        (500, "InternalServerException"),
        (503, "ServiceUnavailableException"),
    ],
)
@pytest.mark.parametrize("operation", ["converse", "converse_stream"])
def test_it_answers_scripted_errors_as_bedrock_exceptions(
    fake: FakeBedrock, bedrock: Any, status: int, code: str, operation: str
) -> None:
    fake.script(status=status, error={"message": f"scripted {status}"})

    with pytest.raises(ClientError) as failed:
        getattr(bedrock, operation)(modelId=MODEL, messages=MESSAGES)

    assert failed.value.response["Error"] == {"Code": code, "Message": f"scripted {status}"}
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert fake.signatures_ok == [True]


def test_it_answers_canned_bytes(fake: FakeBedrock, bedrock: Any) -> None:
    fake.script(
        body=b'{"message": "The model returned an error."}',
        status=424,
        headers={"x-amzn-ErrorType": "ModelErrorException"},
    )

    with pytest.raises(ClientError) as failed:
        bedrock.converse(modelId=MODEL, messages=MESSAGES)

    assert failed.value.response["Error"]["Code"] == "ModelErrorException"


def test_it_cuts_a_stream_short(fake: FakeBedrock, bedrock: Any) -> None:
    fake.script(cut_after=3)
    response = bedrock.converse_stream(modelId=MODEL, messages=MESSAGES)

    with pytest.raises(urllib3.exceptions.ProtocolError):
        list(response["stream"])

    assert fake.cut_streams == 1


def test_it_encodes_event_stream_messages_botocore_decodes() -> None:
    payload = {"contentBlockIndex": 2, "delta": {"text": "héllo"}}
    buffer = EventStreamBuffer()
    buffer.add_data(event_message("contentBlockDelta", payload) * 2)

    messages = list(buffer)

    assert [m.headers for m in messages] == 2 * [
        {
            ":event-type": "contentBlockDelta",
            ":content-type": "application/json",
            ":message-type": "event",
        }
    ]
    assert [json.loads(m.payload) for m in messages] == [payload, payload]


def test_it_checksums_event_stream_messages() -> None:
    message = bytearray(event_message("messageStop", {"stopReason": "end_turn"}))
    message[-6] ^= 0xFF  # a payload byte
    buffer = EventStreamBuffer()
    buffer.add_data(bytes(message))

    with pytest.raises(ChecksumMismatch):
        next(buffer)


def test_it_streams_with_the_event_stream_content_type(fake: FakeBedrock, bedrock: Any) -> None:
    response = bedrock.converse_stream(modelId=MODEL, messages=MESSAGES)
    list(response["stream"])

    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["content-type"] == "application/vnd.amazon.eventstream"
