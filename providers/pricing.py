"""What a model's usage costs in USD and in weighted tokens (the unit quotas count)."""

from dataclasses import dataclass


@dataclass(slots=True)
class Usage:
    """Tokens as the provider bills them. Cached tokens are part of `input`; reasoning
    tokens are part of `output`."""

    input: int = 0
    output: int = 0
    cached: int = 0
    reasoning: int = 0


@dataclass(frozen=True, slots=True)
class Price:
    """USD per token, and the quota weights of input and output tokens."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float = 0.0
    input_weight: float = 1.0
    output_weight: float = 1.0

    def cost(self, usage: Usage) -> float:
        uncached = max(usage.input - usage.cached, 0)
        return uncached * self.input + usage.cached * self.cached_input + usage.output * self.output

    def weighted(self, usage: Usage) -> int:
        return round(usage.input * self.input_weight + usage.output * self.output_weight)


FREE = Price()
