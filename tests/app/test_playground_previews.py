"""The playground with live previews, in headless Chromium (as tests/app/test_playground.py):
its creates ask for previews, each `preview` event puts the frames made so far in the player,
and the result replaces them.

The page talks to an API serving a model no test worker serves, and this test plays the
worker: it claims the video, publishes previews with `publish_preview` and writes the outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from playwright.sync_api import Browser, Page

from core.store import VideoStatus
from models import media
from tests.app.test_playground import CHROMIUM_ARGS, browser  # noqa: F401 (fixture)
from tests.app.test_previews import _complete, _frames, idle_api  # noqa: F401 (fixture)
from tests.conftest import ApiServer, Service
from workers.previews import publish_preview

assert CHROMIUM_ARGS  # (the import above skips this module where there is no Chromium)


def _player(page: Page) -> dict:
    return page.evaluate(
        "() => { const v = document.getElementById('player');"
        " return {readyState: v.readyState, duration: v.duration}; }"
    )


def _wait_duration(page: Page, seconds: float) -> None:
    page.wait_for_function(
        "(s) => { const v = document.getElementById('player');"
        " return v.readyState >= 2 && Math.abs(v.duration - s) < 0.07; }",
        arg=seconds,
        timeout=30_000,
    )


def _write_outputs(folder: Path, frames: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    media.encode_video(folder / "video.mp4", frames, 8.0)
    media.write_thumbnail(folder / "thumbnail.webp", frames)
    media.write_spritesheet(folder / "spritesheet.jpg", frames)


def test_the_playground_shows_previews_then_the_result(
    browser: Browser,  # noqa: F811
    api: Service,
    idle_api: ApiServer,  # noqa: F811
) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(idle_api.url + "/")
        page.wait_for_selector("body[data-ready=true]", timeout=15_000)
        page.select_option("#task", "text_to_video")
        page.fill("#prompt", "a red ball bounces")
        page.click("#submit")
        page.wait_for_selector("#status[data-status=queued]")
        video_id = page.text_content("#job-id")
        assert video_id and api.record(video_id).preview is True

        # The worker claims it and publishes the first latent frame's picture, then more.
        assert api.store.update(video_id, status=VideoStatus.in_progress, attempts=1) == 1
        assert publish_preview(api.store, video_id, _frames(1), 8.0, 0, expect=1)
        page.wait_for_selector("#media[data-preview='0']", timeout=15_000)
        assert page.is_visible("#player") and not page.is_visible("#links")
        assert "the first 1 frame," in page.text_content("#preview-note")
        assert publish_preview(api.store, video_id, _frames(5), 8.0, 1, expect=1)
        page.wait_for_selector("#media[data-preview='1']", timeout=15_000)
        _wait_duration(page, 5 / 8)
        assert "the first 5 frames" in page.text_content("#preview-note")

        # The result takes the player's place, with its download links.
        _write_outputs(api.artifact_dir / video_id, _frames(9))
        _complete(api.store, video_id, preview_index=2, preview_frames=9)
        page.wait_for_selector("#status[data-status=completed]", timeout=15_000)
        page.wait_for_selector("#media:not([data-preview])", timeout=15_000)
        _wait_duration(page, 9 / 8)
        assert page.is_visible("#links") and not page.is_visible("#preview-note")
        assert _player(page)["readyState"] >= 2
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
