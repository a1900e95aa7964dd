"""What differs between provider types, as data.

The gateway reads a spec instead of branching on the provider type: which wire format the
provider speaks, where each operation goes, how the provider's secret is presented, which
settings it needs, and which model-id prefixes route to it when a model is not registered.
"""

from dataclasses import dataclass, field
from typing import Literal

Format = Literal["openai_chat", "anthropic", "gemini", "bedrock"]
Operation = Literal["chat", "chat_stream", "responses", "embeddings", "count_tokens"]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    type: str
    label: str
    format: Format
    default_base_url: str  # "{region}" is filled from the provider's region; "" = required
    # Path per operation; "{model}" is the upstream model (Azure: the deployment).
    paths: dict[str, str]
    auth_header: str = ""  # empty: requests are SigV4-signed instead
    auth_scheme: str = ""  # text before the secret, e.g. "Bearer "
    static_headers: dict[str, str] = field(default_factory=dict)
    query: str = ""  # appended to every URL; "{api_version}" is filled in
    default_prefixes: tuple[str, ...] = ()
    secret_required: bool = True
    needs: tuple[str, ...] = ()  # provider fields that must be set
    max_tokens_field: str = "max_tokens"
    # Chat Completions parameters this dialect accepts beyond the common ones.
    chat_extras: frozenset[str] = frozenset()
    embedding_dialect: str = ""  # "" = no embeddings API


OPENAI_PATHS = {
    "chat": "/chat/completions",
    "chat_stream": "/chat/completions",
    "responses": "/responses",
    "embeddings": "/embeddings",
}

SPECS: dict[str, ProviderSpec] = {
    spec.type: spec
    for spec in (
        ProviderSpec(
            type="openai",
            label="OpenAI",
            format="openai_chat",
            default_base_url="https://api.openai.com/v1",
            paths=OPENAI_PATHS,
            auth_header="Authorization",
            auth_scheme="Bearer ",
            default_prefixes=("gpt-", "o1-", "o3-", "o4-", "chatgpt-"),
            max_tokens_field="max_completion_tokens",
            chat_extras=frozenset(
                {"seed", "presence_penalty", "frequency_penalty", "reasoning_effort"}
            ),
            embedding_dialect="openai",
        ),
        ProviderSpec(
            type="openai_compatible",
            label="OpenAI-compatible (Ollama, vLLM, TGI, llama.cpp, ...)",
            format="openai_chat",
            default_base_url="",
            paths={k: v for k, v in OPENAI_PATHS.items() if k != "responses"},
            auth_header="Authorization",
            auth_scheme="Bearer ",
            secret_required=False,
            chat_extras=frozenset({"seed", "presence_penalty", "frequency_penalty", "top_k"}),
            embedding_dialect="openai",
        ),
        ProviderSpec(
            type="azure_openai",
            label="Azure OpenAI",
            format="openai_chat",
            default_base_url="",  # https://<resource>.openai.azure.com
            paths={
                "chat": "/openai/deployments/{model}/chat/completions",
                "chat_stream": "/openai/deployments/{model}/chat/completions",
                "embeddings": "/openai/deployments/{model}/embeddings",
            },
            auth_header="api-key",
            query="?api-version={api_version}",
            needs=("api_version",),
            max_tokens_field="max_completion_tokens",
            chat_extras=frozenset(
                {"seed", "presence_penalty", "frequency_penalty", "reasoning_effort"}
            ),
            embedding_dialect="openai",
        ),
        ProviderSpec(
            type="anthropic",
            label="Anthropic",
            format="anthropic",
            default_base_url="https://api.anthropic.com",
            paths={
                "chat": "/v1/messages",
                "chat_stream": "/v1/messages",
                "count_tokens": "/v1/messages/count_tokens",
            },
            auth_header="x-api-key",
            static_headers={"anthropic-version": "2023-06-01"},
            default_prefixes=("claude-",),
        ),
        ProviderSpec(
            type="gemini",
            label="Google Gemini",
            format="gemini",
            default_base_url="https://generativelanguage.googleapis.com",
            paths={
                "chat": "/v1beta/models/{model}:generateContent",
                "chat_stream": "/v1beta/models/{model}:streamGenerateContent?alt=sse",
                "embeddings": "/v1beta/models/{model}:batchEmbedContents",
                "count_tokens": "/v1beta/models/{model}:countTokens",
            },
            auth_header="x-goog-api-key",
            default_prefixes=("gemini-",),
            embedding_dialect="gemini",
        ),
        ProviderSpec(
            type="bedrock",
            label="AWS Bedrock",
            format="bedrock",
            default_base_url="https://bedrock-runtime.{region}.amazonaws.com",
            paths={
                "chat": "/model/{model}/converse",
                "chat_stream": "/model/{model}/converse-stream",
                "embeddings": "/model/{model}/invoke",
            },
            needs=("region", "aws_access_key_id"),
            embedding_dialect="bedrock",
        ),
    )
}

TYPE_CHOICES = [(spec.type, spec.label) for spec in SPECS.values()]
