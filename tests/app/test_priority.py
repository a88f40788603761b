"""`priority` on create (high, normal, low) and `queue_position` while queued, through the
official SDK: an API serving a model no worker serves, so what is queued stays queued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import ApiServer, Service, start_api

# A model whose queues no test worker reads: its jobs wait.
IDLE_MODEL = "demo"


@pytest.fixture(scope="module")
def idle_api(service_env: dict[str, str], logs: Path) -> Iterator[ApiServer]:
    server = start_api(service_env, logs, VIDEOPOET_MODEL=IDLE_MODEL)
    yield server
    server.stop()


def _create(client: openai.OpenAI, prompt: str, priority: str | None = None):
    extra = {"task": "text_to_image"}
    if priority is not None:
        extra["priority"] = priority
    return client.videos.create(prompt=prompt, extra_body=extra)


def test_queue_position_counts_higher_levels_first(api: Service, idle_api: ApiServer) -> None:
    client = api.openai(idle_api.url)
    normal = [_create(client, f"normal {i}") for i in range(3)]
    low = _create(client, "low", "low")
    high = _create(client, "high", "high")

    assert normal[0].model_extra["priority"] == "normal"  # the default
    assert low.model_extra["priority"] == "low" and high.model_extra["priority"] == "high"
    # as created: each behind what was there
    assert [v.model_extra["queue_position"] for v in normal] == [0, 1, 2]
    assert low.model_extra["queue_position"] == 3
    assert high.model_extra["queue_position"] == 0

    # as read now: the high job goes first, the low one last
    positions = {
        v.id: client.videos.retrieve(v.id).model_extra["queue_position"]
        for v in [*normal, low, high]
    }
    assert positions == {high.id: 0, normal[0].id: 1, normal[1].id: 2, normal[2].id: 3, low.id: 4}
    listed = {v.id: v.model_extra["queue_position"] for v in client.videos.list(limit=10)}
    assert listed == positions

    # a video that is not queued has none; those behind it move up
    cancelled = client.post(f"/videos/{normal[0].id}/cancel", cast_to=openai.types.Video)
    assert cancelled.status == "cancelled" and cancelled.model_extra["queue_position"] is None
    assert client.videos.retrieve(low.id).model_extra["queue_position"] == 3
    health = api.http.get(idle_api.url + "/readyz").json()
    assert health["queue_depth"] == 4  # every level counts


def test_a_wrong_priority_is_refused_naming_the_accepted_ones(
    api: Service, idle_api: ApiServer
) -> None:
    response = api.http.post(
        idle_api.url + "/v1/videos",
        json={"prompt": "x", "task": "text_to_image", "priority": "urgent"},
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == "priority"
    assert "'high', 'normal' or 'low'" in error["message"]
    # a form field is read the same way
    form = api.http.post(
        idle_api.url + "/v1/videos",
        data={"prompt": "x", "task": "text_to_image", "priority": "low"},
    )
    assert form.status_code == 200 and form.json()["priority"] == "low"
