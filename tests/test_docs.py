"""The documents against the code and the repository: the README's settings table lists every
setting once, the deploy guide's metrics list names every exported family, the README stays a
short reference with its picture, and every relative link in README.md and docs/*.md reaches
a file inside the repository."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

import app.metrics
import workers.metrics
from core.config import Settings
from tests.conftest import REPO

README_PATH = REPO / "README.md"
README = README_PATH.read_text()
DEPLOY = (REPO / "docs" / "deploy.md").read_text()
DOCUMENTS = [README_PATH, *sorted((REPO / "docs").glob("*.md"))]
MAX_README_LINES = 300
# Variables read outside Settings, and the module that reads each.
OTHER_VARIABLES = {"VIDEOPOET_FFMPEG": REPO / "models" / "media.py"}

FENCE = re.compile(r"^\s*```.*?^\s*```[^\n]*$", re.MULTILINE | re.DOTALL)
# [text](target) and ![alt](target), with an optional "title" after the target.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SKIPPED_SCHEMES = ("http://", "https://", "mailto:")


def section(text: str, title: str) -> str:
    """The text of a `## title` section of a document."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"no section {title!r}"
    return match.group(1)


def relative_links(text: str) -> list[str]:
    """The link and image targets of a markdown text outside code blocks, less web links."""
    targets = LINK.findall(FENCE.sub("", text))
    return [t for t in targets if not t.lower().startswith(SKIPPED_SCHEMES)]


def broken_links(document: Path, text: str, repo: Path = REPO) -> list[str]:
    """Each relative link of `document` that leaves `repo` or names no file, with why."""
    problems = []
    for target in relative_links(text):
        path = target.split("#", 1)[0]
        if not path:  # an anchor in the same document
            continue
        base = repo if path.startswith("/") else document.parent
        resolved = (base / path.lstrip("/")).resolve()
        if not resolved.is_relative_to(repo.resolve()):
            problems.append(f"{target}: outside the repository")
        elif not resolved.is_file():
            problems.append(f"{target}: no such file")
    return problems


def test_settings_table_lists_every_setting_once() -> None:
    rows = [
        line
        for line in section(README, "Settings").splitlines()
        if line.startswith("| `VIDEOPOET_")
    ]
    first_cells = "\n".join(row.split("|")[1] for row in rows)
    named = Counter(re.findall(r"`(VIDEOPOET_[A-Z0-9_]+)`", first_cells))
    expected = {"VIDEOPOET_" + name.upper() for name in Settings.model_fields}
    for name, reader in OTHER_VARIABLES.items():
        assert name in reader.read_text(), f"{name} is not read in {reader.relative_to(REPO)}"
        expected.add(name)
    assert not expected - named.keys(), f"missing from the README: {expected - named.keys()}"
    assert not named.keys() - expected, f"README lists unknown settings: {named.keys() - expected}"
    assert [n for n, c in named.items() if c > 1] == [], "settings listed twice"


def test_metrics_list_names_every_exported_family() -> None:
    listed = section(DEPLOY, "Health and metrics")
    families = {
        metric._name
        for module in (app.metrics, workers.metrics)
        for metric in vars(module).values()
        if isinstance(metric, MetricWrapperBase)
    }
    families |= {"videopoet_queue_depth", "videopoet_jobs_running", "videopoet_workers_live"}
    missing = {f for f in families if f not in listed}
    assert not missing, f"metrics missing from docs/deploy.md: {missing}"


def test_pictures_the_readme_shows_exist() -> None:
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert "docs/playground.png" in pictures
    for picture in pictures:
        path = REPO / picture
        assert path.is_file() and path.stat().st_size > 10_000, picture


def test_readme_is_a_short_reference() -> None:
    lines = len(README.splitlines())
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines (at most {MAX_README_LINES}): move detail to docs/"
    )
    first_block = re.search(r"```sh\n(.*?)```", README, re.DOTALL)
    assert first_block, "the README opens with no shell block"
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make run", "make test"], "the two commands come first"


def test_every_relative_link_reaches_a_file_in_the_repository() -> None:
    problems = [
        f"{document.relative_to(REPO)}: {problem}"
        for document in DOCUMENTS
        for problem in broken_links(document, document.read_text())
    ]
    assert not problems, "\n".join(problems)


def test_the_link_check_catches_what_it_should(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "here.md").write_text("x")
    document = tmp_path / "README.md"
    text = (
        "[ok](docs/here.md#part) [self](#top) [web](https://example.com/x.md) "
        "[mail](mailto:a@b.c) ![missing](docs/gone.png) [escape](../outside.md)\n"
        "```\n[in code](not/checked.md)\n```\n"
    )
    assert broken_links(document, text, repo=tmp_path) == [
        "docs/gone.png: no such file",
        "../outside.md: outside the repository",
    ]
