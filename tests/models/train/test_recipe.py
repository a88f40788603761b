"""`python -m models.train.recipe --smoke`: the GPU recipe's steps (config with the levers, the
tokenizers side by side, the LM, the eval) on the CPU at the tiny size; about 20 s."""

import json
import subprocess
import sys

from models.pipeline import load_pipeline


def test_the_recipe_leaves_a_checkpoint_and_its_eval_in_one_folder(tmp_path):
    out = tmp_path / "demo-gpu"
    done = subprocess.run(
        [sys.executable, "-m", "models.train.recipe", "--out", str(out), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"checkpoint and eval in {out}" in done.stdout

    config = json.loads((out / "config.json").read_text())  # the levers
    assert config["video_tokenizer"]["codebook_bits"] == 9
    assert config["audio_tokenizer"]["encoder_input"] == "spectrum"
    assert config["audio_tokenizer"]["harmonics"] == 4
    assert config["lm"]["text_pool_heads"] == 2
    pipeline = load_pipeline(str(out))  # a checkpoint the service can load
    assert pipeline.lm.config.vocab_size == 256 + 2**9 + 4 * 64

    rows = json.loads((out / "eval.json").read_text())
    assert {r["task"] for r in rows} == {"video tokenizer", "audio tokenizer", "text_to_video"}
    record = json.loads((out / "recipe.json").read_text())
    assert [s["name"] for s in record["steps"]] == ["tokenizers", "lm", "eval"]
    for stage in ("video_tokenizer", "audio_tokenizer", "lm"):
        lines = (out / "train" / f"{stage}.jsonl").read_text().splitlines()
        assert json.loads(lines[-1])["step"] == 2
