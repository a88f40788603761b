"""The README against the code: every setting in its table once, every exported metric family in
its metrics list, and the pictures it shows exist."""

from __future__ import annotations

import re
from collections import Counter

from prometheus_client.metrics import MetricWrapperBase

import app.metrics
import workers.metrics
from core.config import Settings
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    """The text of a `## title` section."""
    match = re.search(
        rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.MULTILINE | re.DOTALL
    )
    assert match, f"the README has no section {title!r}"
    return match.group(1)


def test_settings_table_lists_every_setting_once() -> None:
    rows = [line for line in section("Settings").splitlines() if line.startswith("| `VIDEOPOET_")]
    first_cells = "\n".join(row.split("|")[1] for row in rows)
    named = Counter(re.findall(r"`(VIDEOPOET_[A-Z0-9_]+)`", first_cells))
    expected = {"VIDEOPOET_" + name.upper() for name in Settings.model_fields}
    assert not expected - named.keys(), f"missing from the README: {expected - named.keys()}"
    assert not named.keys() - expected, f"README lists unknown settings: {named.keys() - expected}"
    assert [n for n, c in named.items() if c > 1] == [], "settings listed twice"


def test_metrics_list_names_every_exported_family() -> None:
    listed = section("Health and metrics")
    families = {
        metric._name
        for module in (app.metrics, workers.metrics)
        for metric in vars(module).values()
        if isinstance(metric, MetricWrapperBase)
    }
    families |= {"videopoet_queue_depth", "videopoet_jobs_running", "videopoet_workers_live"}
    missing = {f for f in families if f not in listed}
    assert not missing, f"metrics missing from the README: {missing}"


def test_pictures_the_readme_shows_exist() -> None:
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert "docs/playground.png" in pictures
    for picture in pictures:
        path = REPO / picture
        assert path.is_file() and path.stat().st_size > 10_000, picture
