"""The one Claude price table and the one cost function (requests, the grading estimate before paid
work, the `label_cost` benchmark and its figure all price through `cost_usd`).

USD per million tokens (input, output), from Anthropic's public price list (2026-11). Cache reads
cost 0.1x input, 5-minute cache writes 1.25x input; the Message Batches API halves everything. Model
ids and prices change: a model missing here is priced as unknown (None), never guessed.
"""

from __future__ import annotations

PRICES: dict[str, tuple[float, float]] = {
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-opus-4-5": (5.0, 25.0),
}
CACHE_READ, CACHE_WRITE, BATCH_DISCOUNT = 0.1, 1.25, 0.5
# A prompt prefix shorter than this is silently not cached (Anthropic's documented minimums; one
# public report saw Sonnet 4.6 cache only from 2048, so that is the figure used for it).
CACHE_MIN_TOKENS = {"claude-sonnet-4-6": 2048, "claude-sonnet-4-5": 1024, "claude-haiku-4-5": 4096, "claude-opus-4-5": 4096}
CHARS_PER_TOKEN = 4  # Claude's tokenizer is not public; estimates count ~4 characters a token


def cost_usd(model: str, input_tokens: int | float, output_tokens: int | float, cache_read_tokens: int | float = 0,
             cache_write_tokens: int | float = 0, batch: bool = False) -> float | None:
    """USD for these token counts on ``model`` (``input_tokens`` excludes cache reads and writes);
    None for a model not in `PRICES`."""
    if model not in PRICES:
        return None
    pin, pout = PRICES[model]
    usd = (input_tokens * pin + cache_read_tokens * pin * CACHE_READ + cache_write_tokens * pin * CACHE_WRITE + output_tokens * pout) / 1e6
    return usd * (BATCH_DISCOUNT if batch else 1.0)


def cacheable(model: str, prefix_tokens: int) -> bool:
    """Whether a prompt prefix of ``prefix_tokens`` is long enough for ``model``'s prompt cache."""
    return prefix_tokens >= CACHE_MIN_TOKENS.get(model, 4096)


def price_table() -> dict[str, dict[str, float]]:
    """USD per million tokens of every priced model, by kind of token (for reports)."""
    return {m: {"input": pin, "output": pout, "cache_read": pin * CACHE_READ, "cache_write_5m": pin * CACHE_WRITE,
                "batch_input": pin * BATCH_DISCOUNT, "batch_output": pout * BATCH_DISCOUNT} for m, (pin, pout) in PRICES.items()}
