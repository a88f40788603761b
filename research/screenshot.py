"""Make docs/playground.png: the playground of a running server, showing a video it generated.

    videopoet serve &                      # or docker compose up
    python -m research.screenshot [--url http://127.0.0.1:8000] [--key KEY] [-o PNG]

Drives Debian's Chromium (/usr/bin/chromium, or --chromium PATH) with Playwright, as the
playground's test does.
"""

from __future__ import annotations

import argparse
import sys

from playwright.sync_api import sync_playwright

from research import DOCS

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", help="API key, when the server has keys")
    parser.add_argument("--task", default="text_to_video")
    parser.add_argument("--prompt", default="a red circle moves to the right")
    parser.add_argument("--seed", default="7")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the job")
    parser.add_argument("-o", "--output", default=str(DOCS / "playground.png"))
    args = parser.parse_args(argv)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(args.url + "/")
        page.wait_for_selector("body[data-ready=true]")
        if args.key:
            page.fill("#api-key", args.key)
            page.dispatch_event("#api-key", "change")
        page.select_option("#task", args.task)
        page.fill("#prompt", args.prompt)
        page.fill("#seed", args.seed)
        page.click("#submit")
        page.wait_for_selector("#status[data-status=completed]", timeout=args.timeout * 1000)
        page.wait_for_function(
            "() => { const v = document.getElementById('player');"
            " return v.readyState >= 2 && v.duration > 0; }"
        )
        # A frame from the middle of the clip, paused, so the picture is not a blur.
        page.evaluate(
            "() => { const v = document.getElementById('player'); v.pause();"
            " v.currentTime = v.duration / 2; }"
        )
        page.wait_for_timeout(500)
        page.screenshot(path=args.output, full_page=True)
        browser.close()
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
