"""What the service's code must never do, read from its source: unpickle (job payloads are
JSON, weights are safetensors), run a shell, or run a subprocess without a time limit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    p
    for folder in ("app", "cli", "core", "workers", "models", "research", "benchmarks")
    for p in (REPO / folder).rglob("*.py")
)
# subprocess calls that wait for the child: each needs timeout=.
WAITING_CALLS = frozenset({"run", "call", "check_call", "check_output"})


def _calls(path: Path) -> list[tuple[int, str, ast.Call]]:
    """(line, dotted name, call) for every call in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            found.append((node.lineno, name, node))
    return found


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(value: ast.expr | None) -> bool:
    return isinstance(value, ast.Constant) and value.value is True


def _problems(text: str, where_file: str) -> list[str]:
    """What a source text does that the service must not."""
    problems = []
    if "import pickle" in text or "from pickle" in text or "cloudpickle" in text:
        problems.append(f"{where_file} imports pickle")
    for node in ast.walk(ast.parse(text, filename=where_file)):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        where = f"{where_file}:{node.lineno}: {name}"
        if name in ("os.system", "os.popen") or name.startswith("os.exec"):
            problems.append(f"{where} runs a shell or replaces the process")
        shell = _keyword(node, "shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            problems.append(f"{where} with shell=")
        if name.startswith("subprocess.") and name.split(".")[-1] in WAITING_CALLS:
            if _keyword(node, "timeout") is None:
                problems.append(f"{where} without timeout=")
            if node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr)):
                problems.append(f"{where} with a command string, not an argument list")
        if name == "torch.load" and not _is_true(_keyword(node, "weights_only")):
            problems.append(f"{where} without weights_only=True (a full unpickler)")
        is_model = name.endswith("from_pretrained") and "tokenizer" not in name.lower()
        if is_model and not _is_true(_keyword(node, "use_safetensors")):
            problems.append(f"{where} without use_safetensors=True")
    return problems


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_pickle_no_shell_and_every_subprocess_has_a_timeout(path: Path) -> None:
    problems = _problems(path.read_text(), str(path.relative_to(REPO)))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "source",
    [
        "import pickle",
        "import os\nos.system('ls')",
        "import subprocess\nsubprocess.run(['ls'], shell=True, timeout=1)",
        "import subprocess\nsubprocess.run(['ls'])",
        "import torch\ntorch.load('w.pt')",
        "import torch\ntorch.load('w.pt', weights_only=False)",
        "AutoModel.from_pretrained(path)",
        "AutoModel.from_pretrained(path, use_safetensors=False)",
    ],
)
def test_the_check_catches_each_unsafe_call(source: str) -> None:
    assert _problems(source, "example.py")


def test_jobs_are_enqueued_and_read_with_the_json_serializer() -> None:
    for path in (p for p in SOURCES if "rq" in p.read_text()):
        for line, name, call in _calls(path):
            if name in ("Queue", "Job.fetch", "VideoWorker", "Worker", "SimpleWorker"):
                serializer = _keyword(call, "serializer")
                assert serializer is not None and ast.unparse(serializer) == "JSONSerializer", (
                    f"{path.relative_to(REPO)}:{line}: {name} without serializer=JSONSerializer"
                )
