"""Keys come from the environment or systemd credentials, and never reach a log line."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger
from podspool.daemon.credentials import install_log_masking, load_secrets, mask

KEY = "pplx-SECRETKEY1234567890"


def test_environment_wins_over_credentials(tmp_path: Path) -> None:
    (tmp_path / "perplexity_api_key").write_text("from-file-key\n")
    (tmp_path / "elevenlabs_api_key").write_text("  eleven-file-key  \n")
    env = {"PERPLEXITY_API_KEY": KEY, "CREDENTIALS_DIRECTORY": str(tmp_path), "OPENAI_API_KEY": ""}
    assert load_secrets(env) == {"perplexity": KEY, "elevenlabs": "eleven-file-key"}


def test_tavily_key_is_the_websearch_key() -> None:
    assert load_secrets({"TAVILY_API_KEY": "tvly-abc123"}) == {"websearch": "tvly-abc123"}


def test_no_keys_no_entries(tmp_path: Path) -> None:
    assert load_secrets({}, credentials_dir=tmp_path) == {}


def test_mask_keys_and_auth_headers() -> None:
    text = f"sent Authorization: Bearer {KEY} and key={KEY}; also Bearer other-token, xi-api-key: sk_zz9"
    out = mask(text, {"perplexity": KEY})
    assert KEY not in out and "other-token" not in out and "sk_zz9" not in out
    assert out.count("***") == 4


def test_auth_headers_are_masked_in_any_case_and_past_non_ascii_folding() -> None:
    # the ASCII fast path (credentials._AUTH_WORDS) must not skip what the case-insensitive patterns catch
    assert mask("auth: BeArEr abc123", {}) == "auth: BeArEr ***"
    assert mask("header XI-API-KEY: sk_live_1", {}) == "header XI-API-KEY: ***"
    assert mask("x\u0131-api-key: tok_9", {}) == "x\u0131-api-key: ***"  # dotless i matches i under (?i)
    assert mask("caf\u00e9 Bearer tok", {}) == "caf\u00e9 Bearer ***"
    assert mask("plain text about an api and a bear", {}) == "plain text about an api and a bear"


def test_short_values_are_not_treated_as_keys() -> None:
    assert mask("a b c", {"x": "a"}) == "a b c"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    sink = logger.add(buf, format="{message} | {extra}", diagnose=False, backtrace=False)
    yield buf
    logger.remove(sink)
    logger.configure(patcher=None)


def test_log_lines_and_exceptions_are_masked(captured: io.StringIO) -> None:
    install_log_masking(logger, {"perplexity": KEY})
    logger.bind(url=f"https://x/?key={KEY}").info("calling with Bearer {}", KEY)
    try:
        try:
            raise ValueError(f"bad key {KEY}")
        except ValueError as inner:
            raise RuntimeError(f"wrapped: {KEY}") from inner
    except RuntimeError:
        logger.exception("request failed")
    out = captured.getvalue()
    assert "request failed" in out and "ValueError: bad key ***" in out and "RuntimeError: wrapped: ***" in out
    assert KEY not in out
