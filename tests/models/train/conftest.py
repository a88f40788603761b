import pytest

from tests.models.train.runs import train_run


@pytest.fixture(scope="session")
def tokenized(tmp_path_factory):
    """A tiny run folder with both tokenizers trained a step, an LM trained a step and its token
    cache of 6 clips. Shared: tests copy what they change."""
    out = tmp_path_factory.mktemp("run")
    train_run("video-tokenizer", out, "--steps", "1", "--batch", "1")
    train_run("audio-tokenizer", out, "--steps", "1", "--batch", "1")
    train_run("lm", out, "--steps", "1", "--batch", "2", "--clips", "6")
    return out
