"""What differs between provider types, as data.

The gateway reads a spec instead of branching on the provider type: where requests go,
how the provider's secret is presented, and which model-id prefixes route to it when a
model is not registered.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    type: str
    label: str
    default_base_url: str  # empty: the admin must give one
    auth_header: str
    auth_scheme: str  # prefix before the secret in auth_header, e.g. "Bearer "
    chat_path: str
    default_prefixes: tuple[str, ...] = ()


SPECS: dict[str, ProviderSpec] = {
    spec.type: spec
    for spec in (
        ProviderSpec(
            type="openai",
            label="OpenAI",
            default_base_url="https://api.openai.com/v1",
            auth_header="Authorization",
            auth_scheme="Bearer ",
            chat_path="/chat/completions",
            default_prefixes=("gpt-", "o1-", "o3-", "o4-", "chatgpt-"),
        ),
        ProviderSpec(
            type="openai_compatible",
            label="OpenAI-compatible (Ollama, vLLM, TGI, llama.cpp, ...)",
            default_base_url="",
            auth_header="Authorization",
            auth_scheme="Bearer ",
            chat_path="/chat/completions",
        ),
    )
}

TYPE_CHOICES = [(spec.type, spec.label) for spec in SPECS.values()]
