"""Every research module imports by its package name and answers --help, in-process and as
`python -m research.NAME`; the doc tools write into docs/ by default."""

import importlib
import pkgutil
import subprocess
import sys

import pytest

import research
from tests.conftest import REPO

NAMES = sorted(m.name for m in pkgutil.iter_modules(research.__path__))


def test_every_probe_and_doc_tool_is_here():
    assert NAMES == sorted(
        ["audio_code_probe", "caption_probe", "condition_probe", "contact_sheet", "control_probe",
         "phrasing_probe", "placement_probe", "scale_probe", "screenshot", "sr_text_probe",
         "token_probe",
         "vocab_probe", "word_probe"]
    )  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_help(name, capsys):
    module = importlib.import_module(f"research.{name}")
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


def test_runs_as_a_module_and_writes_pictures_into_docs():
    out = subprocess.run(
        [sys.executable, "-m", "research.word_probe", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert out.startswith("usage:") and "--model" in out
    assert research.DOCS == REPO / "docs" and (research.DOCS / "demo_sheet.png").is_file()
