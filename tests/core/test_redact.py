"""Secrets in URLs are masked wherever a URL is shown, returned or logged."""

from __future__ import annotations

import pytest

from core.redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:secret@db:6379/0", "redis://:***@db:6379/0"),
        ("redis://alice:secret@db/1", "redis://alice:***@db/1"),
        ("redis://secret@db", "redis://:***@db"),  # Redis reads a lone user part as a password
        ("rediss://db:6380/0?password=secret&ssl_cert_reqs=none", None),
        ("unix:///run/redis.sock?password=secret", "unix:///run/redis.sock?password=***"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
    ],
)
def test_redact_url_masks_passwords_and_keeps_the_rest(url: str, shown: str | None) -> None:
    out = redact_url(url)
    assert "secret" not in out
    if shown is not None:
        assert out == shown
    else:
        assert out.startswith("rediss://db:6380/0?") and "ssl_cert_reqs=none" in out


def test_redact_text_masks_every_url_in_a_message() -> None:
    text = "Error connecting to redis://:pw1@a:1/0 and 'https://u:pw2@b/x?token=pw3'."
    out = redact_text(text)
    assert not any(pw in out for pw in ("pw1", "pw2", "pw3"))
    assert out.startswith("Error connecting to redis://:***@a:1/0 and 'https://u:***@b/x?")
