import torch
from safetensors.torch import load_file, save_file

from models.train.token_cache import token_digest
from tests.models.train.runs import copy_tokenized, train_run


def test_a_larger_clips_tokenizes_only_the_clips_it_adds(tmp_path, tokenized):
    """--clips 9 on a folder whose cache holds 6 clips adds clips 6 to 8: the cache then holds
    what one run with --clips 9 from nothing tokenizes, and the first 6 are kept as they were."""
    grown = copy_tokenized(tokenized, tmp_path / "grown", with_cache=False)
    fresh = copy_tokenized(tokenized, tmp_path / "fresh", with_cache=False)
    train_run("lm", grown, "--steps", "1", "--batch", "2", "--clips", "6")
    old = torch.load(grown / "train" / "lm_data.pt", weights_only=True)
    train_run("lm", grown, "--steps", "2", "--batch", "2", "--clips", "9", "--resume")
    train_run("lm", fresh, "--steps", "1", "--batch", "2", "--clips", "9")

    a = torch.load(grown / "train" / "lm_data.pt", weights_only=True)
    b = torch.load(fresh / "train" / "lm_data.pt", weights_only=True)
    assert len(old["video"]) == 6 and len(a["video"]) == len(b["video"]) == 9
    for k in ("video", "control", "audio"):
        assert torch.equal(a[k][:6], old[k])
        assert torch.equal(a[k], b[k])

    def states(d):  # each clip's caption states, trimmed to its length
        return [d["text"][c, : d["text_len"][c]] for c in d["caption"]]

    for x, y in zip(states(a), states(b), strict=True):
        torch.testing.assert_close(x, y)
    assert a["tokenizers"] == b["tokenizers"] == old["tokenizers"]

    # other clips
    train_run(
        "lm", grown, "--steps", "3", "--batch", "2", "--clips", "4", "--seed", "1", "--resume"
    )
    other = torch.load(grown / "train" / "lm_data.pt", weights_only=True)
    assert len(other["video"]) == 4 and other["source"] != a["source"]
    assert not torch.equal(other["video"], a["video"][:4])


def test_token_digest_follows_the_codes_not_the_decoder(tmp_path, tokenized):
    """The LM's cached clips stay valid when only a tokenizer's decoder changes (a
    --decoder-only run), and are tokenized again when its encoder or codebooks change."""
    for name in ("video_tokenizer", "audio_tokenizer"):
        tensors = load_file(str(tokenized / f"{name}.safetensors"))
        digest = token_digest(tokenized / f"{name}.safetensors")
        for part, same in (("decoder.", True), ("encoder.", False), ("quantizer.", False)):
            key = next(
                (k for k in tensors if k.startswith(part) and tensors[k].is_floating_point()),
                None,
            )
            if key is None:  # the tiny video quantizer has no float tensors
                continue
            changed = dict(tensors, **{key: tensors[key] + 0.01})
            save_file(changed, str(tmp_path / "t.safetensors"))
            assert (token_digest(tmp_path / "t.safetensors") == digest) is same, (name, key)
