"""A create's `webhook_url`: refused with 422 when it reaches a loopback, private, link-local
or reserved address (VIDEOPOET_WEBHOOK_ALLOW_PRIVATE unset), when it is no http(s) URL, and
when this server sends no webhooks at all. Nothing is queued for a refused request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.webhooks import new_secret
from tests.conftest import ApiServer, Service, start_api


@pytest.fixture(scope="module")
def strict_api(service_env: dict[str, str], logs: Path) -> Iterator[ApiServer]:
    """Webhooks on, private addresses not allowed (the default)."""
    env = {k: v for k, v in service_env.items() if k != "VIDEOPOET_WEBHOOK_ALLOW_PRIVATE"}
    server = start_api(env, logs, VIDEOPOET_WEBHOOK_SECRET=new_secret())
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:8080/hook", "(127.0.0.1)"),
        ("http://localhost/hook", "loopback, private, link-local or reserved"),
        ("https://10.0.0.7/hook", "(10.0.0.7)"),
        ("http://192.168.1.20/hook", "(192.168.1.20)"),
        ("http://169.254.169.254/latest/meta-data/", "(169.254.169.254)"),
        ("http://[::1]:9000/hook", "(::1)"),
        ("http://[::ffff:10.0.0.1]/hook", "VIDEOPOET_WEBHOOK_ALLOW_PRIVATE=1"),
        ("http://0.0.0.0/hook", "(0.0.0.0)"),
        ("ftp://example.com/hook", "must be an http:// or https:// URL"),
        ("not a url", "white space"),
    ],
)
def test_a_webhook_url_that_reaches_a_private_address_gets_422(
    api: Service, strict_api: ApiServer, url: str, says: str
) -> None:
    response = api.http.post(
        strict_api.url + "/v1/videos",
        json={"prompt": "x", "task": "text_to_image", "webhook_url": url},
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == "webhook_url" and error["code"] == "invalid_webhook_url"
    assert says in error["message"]
    assert api.redis.zcard("videopoet:videos") == 0  # nothing was made


def test_a_webhook_url_is_refused_where_webhooks_are_off(api: Service) -> None:
    response = api.http.post(
        "/v1/videos",
        json={"prompt": "x", "task": "text_to_image", "webhook_url": "https://example.com/h"},
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "webhooks_disabled" and "VIDEOPOET_WEBHOOK_SECRET" in error["message"]
