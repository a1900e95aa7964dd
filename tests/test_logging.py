"""What the HTTP clients log: their per-request INFO lines carry full URLs, and outbound
URLs may hold credentials (webhook tokens, MCP upstream URLs with a key in the query)."""

import logging

import pytest


@pytest.mark.parametrize("name", ["httpx", "httpx2"])
def test_http_clients_log_nothing_below_warnings(name: str) -> None:
    assert not logging.getLogger(name).isEnabledFor(logging.INFO)
