"""What an installed videopoet-server holds: the wheel ships the demo checkpoint, and the
suite runs on the oldest rq that pyproject.toml allows."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "models" / "checkpoints" / "demo"


def _dependency(name: str) -> Requirement:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        if requirement.name == name:
            return requirement
    raise AssertionError(f"{name} is not a dependency")


def test_the_suite_runs_on_the_oldest_rq_allowed() -> None:
    # The worker extends rq's worker; the range pyproject.toml declares is the one tested.
    floors = [s.version for s in _dependency("rq").specifier if s.operator == ">="]
    assert floors, "rq needs a lower bound"
    installed = importlib.metadata.version("rq")
    assert installed == floors[0] or installed == floors[0] + ".0", (
        f"rq {installed} is installed, the declared floor is {floors[0]}: the Makefile pins "
        "the floor for the test environment"
    )
    assert installed in _dependency("rq").specifier


def test_the_wheel_ships_the_demo_checkpoint_and_serves_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("app", "cli", "core", "models", "research", "workers"):
        if (REPO / package).is_dir():
            shutil.copytree(REPO / package, src / package, ignore=ignore)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(wheels), str(src)],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("videopoet_server-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        sizes = {info.filename: info.file_size for info in archive.infolist()}
    for file in DEMO.iterdir():
        assert sizes.get(f"models/checkpoints/demo/{file.name}") == file.stat().st_size, file.name

    # Installed from the wheel, away from the source tree, the default model is the demo.
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
        + [str(wheel)],
        check=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("VIDEOPOET_MODEL", None)
    probe = (
        "from core.config import Settings; import models; print(Settings().model, models.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    model, location = out.stdout.split()
    assert model == "demo" and location.startswith(str(target)), out.stdout + out.stderr
    assert "not installed" not in out.stderr
