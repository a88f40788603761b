"""The web playground at `/`, end to end in headless Chromium (Debian's `chromium`, driven by
Playwright through `executable_path`; `playwright install` is never needed): choose a task,
upload where the task takes a file, submit, watch progress move over SSE, play the result in
the <video> element, browse and delete recent videos.

`python -m research.screenshot` makes the README's screenshot the same way, against a running server.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from core.store import VideoStatus
from tests.conftest import ApiServer, Service, start_api

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Generous for a loaded CI machine; a tiny-model job takes seconds.
JOB_TIMEOUT_MS = 120_000

if not Path(CHROMIUM).is_file() and shutil.which(CHROMIUM) is None:
    _reason = f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does), or set CHROMIUM"
    if os.environ.get("CI"):  # CI installs chromium (.ci/run): there its absence is a failure
        raise RuntimeError(_reason)
    pytest.skip(_reason, allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, service: Service) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.goto(service.url + "/")
    page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def watch_progress(page: Page) -> None:
    """Record every value the progress bar shows, in window.seenProgress."""
    page.evaluate(
        """() => {
        window.seenProgress = [];
        const bar = document.getElementById("progress");
        new MutationObserver(() => window.seenProgress.push(Number(bar.value)))
            .observe(bar, {attributes: true, attributeFilter: ["value"]});
    }"""
    )


def wait_playable(page: Page) -> dict:
    """Until the player shows the result (not a preview: "completed" can arrive while the last
    preview still plays, and the result then replaces it, which resets the <video>) and has
    decoded a frame of it; returns its readyState, duration and width, read in that same check."""
    handle = page.wait_for_function(
        "() => { const v = document.getElementById('player');"
        " const result = !('preview' in document.getElementById('media').dataset)"
        " && !document.getElementById('links').hidden;"
        " return result && v.readyState >= 2 && v.duration > 0"
        " && {readyState: v.readyState, duration: v.duration, width: v.videoWidth}; }",
        timeout=30_000,
    )
    return handle.json_value()


def test_text_to_video_shows_progress_and_plays_the_result(page: Page, service: Service) -> None:
    page.select_option("#task", "text_to_video")
    assert page.is_visible("#prompt")
    assert not page.is_visible("#video") and not page.is_visible("#image")
    # "[slow]": sampling steps take 0.1 s each (tests/workers/faulty_pipeline), long enough to
    # watch the bar move.
    page.fill("#prompt", "[slow] a red ball bounces")
    page.fill("#seed", "7")
    watch_progress(page)
    page.click("#submit")
    page.wait_for_selector("#status[data-status=completed]", timeout=JOB_TIMEOUT_MS)

    seen = page.evaluate("window.seenProgress")
    assert seen == sorted(seen), f"progress went back: {seen}"
    assert any(0 < p < 100 for p in seen), f"no progress between 0 and 100: {seen}"
    assert seen[-1] == 100
    assert page.text_content("#progress-text") == "100%"

    video = wait_playable(page)
    assert video["readyState"] >= 2 and video["duration"] > 0 and video["width"] > 0
    video_id = page.text_content("#job-id")
    record = service.record(video_id)
    assert record.status is VideoStatus.completed and record.spec.seed == 7
    # The new video heads the recent list.
    page.wait_for_selector(f"#jobs li[data-id='{video_id}'][data-status=completed]")
    assert page.get_attribute("#jobs li:first-child", "data-id") == video_id


def test_image_upload_then_browse_and_delete(page: Page, service: Service, image_png: Path) -> None:
    page.select_option("#task", "image_to_video")
    assert page.is_visible("#image") and not page.is_visible("#video")
    assert not page.is_visible("#audio")
    # Submitting without the image it needs says so, and creates nothing.
    page.click("#submit")
    assert "image" in page.text_content("#form-error")
    assert service.http.get("/v1/videos").json()["data"] == []

    page.set_input_files("#image", str(image_png))
    page.fill("#prompt", "it starts to move")
    page.click("#submit")
    page.wait_for_selector("#status[data-status=completed]", timeout=JOB_TIMEOUT_MS)
    assert wait_playable(page)["duration"] > 0
    video_id = page.text_content("#job-id")
    assert service.record(video_id).inputs.get("image")

    item = page.locator(f"#jobs li[data-id='{video_id}']")
    item.wait_for()
    page.wait_for_function(
        f"() => document.querySelector(\"#jobs li[data-id='{video_id}'] .thumb img\")"
        "?.naturalWidth > 0"
    )
    # Delete from the list: gone from the page, the API and the disk.
    item.locator("button.delete").click()
    item.wait_for(state="detached")
    assert page.is_visible("#result-empty")
    assert service.http.get(f"/v1/videos/{video_id}").status_code == 404
    assert not (service.artifact_dir / video_id).exists()


@pytest.fixture
def keyed_api(service: Service, logs: Path) -> Iterator[ApiServer]:
    """A second API on the same Redis and workers, with API keys set."""
    server = start_api(service.workers.env, logs, VIDEOPOET_API_KEYS=API_KEY)
    yield server
    server.stop()


API_KEY = "vp-playground-test-key"


def test_with_api_keys_the_page_asks_for_one_and_sends_it(
    browser: Browser, keyed_api: ApiServer, service: Service
) -> None:
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(keyed_api.url + "/")
        page.wait_for_selector("body[data-ready=true]")
        assert "needs an API key" in page.text_content("#jobs-empty")
        page.fill("#api-key", API_KEY)
        page.dispatch_event("#api-key", "change")
        page.select_option("#task", "text_to_image")
        page.fill("#prompt", "a blue square")
        page.click("#submit")
        # Progress, the still and its clip all come with the key (fetch, blobs).
        page.wait_for_selector("#status[data-status=completed]", timeout=JOB_TIMEOUT_MS)
        assert wait_playable(page)["duration"] > 0
        page.wait_for_function("() => document.getElementById('still').naturalWidth > 0")
        assert page.get_attribute("#jobs li:first-child", "data-id") == page.text_content("#job-id")
        # The key is remembered for the next visit.
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        assert page.input_value("#api-key") == API_KEY
        page.wait_for_selector("#jobs li")
    finally:
        context.close()


def test_playground_files_are_served_from_this_origin(service: Service) -> None:
    page = service.http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # Nothing loads from elsewhere: every src/href is a path on this server or a data URL,
    # and the page's Content-Security-Policy has the browser refuse anything else.
    for ref in ("https://", "http://", "//cdn"):
        assert ref not in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "media-src 'self' blob:" in policy
    for name, kind in (("playground.js", "javascript"), ("playground.css", "text/css")):
        response = service.http.get(f"/playground/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert service.http.get("/playground/..%2Fmain.py").status_code == 404
    config = service.http.get("/playground/config.json").json()
    assert config["model"] == "tiny" and config["size"] == "32x32"
    tasks = {t["name"]: t for t in config["tasks"]}
    assert tasks["image_to_video"]["required"] == ["image"]
    assert tasks["text_to_image"]["image_output"] is True
