"""Settings defaults a user notices: which model is served when none is named."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from core import config
from models import card


def test_the_default_model_is_the_shipped_demo_checkpoint() -> None:
    assert config.default_model() == "demo"


def test_without_the_demo_checkpoint_the_fallback_is_loud(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(card, "CHECKPOINT_DIR", tmp_path)  # an install without the weights
    with caplog.at_level(logging.WARNING, logger="core.config"):
        assert config.default_model() == "tiny"
    assert "demo checkpoint is not installed" in caplog.text
    assert "VIDEOPOET_MODEL" in caplog.text
