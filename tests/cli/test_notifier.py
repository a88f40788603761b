"""`videopoet notifier` and `videopoet webhook-secret`: the notifier loads no torch, and
refuses to start without a secret in one line; the secret it is given is the form the SDK
takes."""

from __future__ import annotations

import os
import subprocess
import sys

from core.webhooks import parse_secret
from tests.conftest import REPO


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VIDEOPOET_")}
    return subprocess.run(
        [sys.executable, *args],
        env={**clean, "VIDEOPOET_MODEL": "tiny", "PYTHONPATH": str(REPO), **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_notifier_never_imports_torch() -> None:
    code = (
        "import sys, workers.notifier, cli.main; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr


def test_webhook_secret_prints_a_setting_line_and_the_notifier_needs_one() -> None:
    made = _run("-m", "cli.main", "webhook-secret")
    assert made.returncode == 0, made.stderr
    name, value = made.stdout.strip().split("=", 1)
    assert name == "VIDEOPOET_WEBHOOK_SECRET" and len(parse_secret(value)) == 32

    refused = _run("-m", "cli.main", "notifier")
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0
    assert "VIDEOPOET_WEBHOOK_SECRET" in refused.stderr

    bad = _run("-m", "cli.main", "notifier", VIDEOPOET_WEBHOOK_SECRET="whsec_c2VjcmV0")
    assert bad.returncode == 2 and "24 to 64 bytes" in bad.stderr
    assert "c2VjcmV0" not in bad.stderr  # the value is never printed
