"""Does an LM use each task's input? Print how much its loss rises with another clip's input.

    python docs/condition_probe.py [--model demo] [--n 16] [--others 5] [--threads 1]

For n Shapes-AV training clips, each conditioned task's output (the clip's own tokens) is
scored by the LM's cross-entropy twice over: with the clip's own input (caption, first frame,
first frames, stylize control, video or soundtrack), then with the input of each of `others`
other clips. An LM that reads its input finds the own one the best fit: its loss rises with
the others', and the own input ranks first among the 1 + others candidates far more often than
chance (1 / (1 + others)). A rise of about 0 and a rank near chance mean the LM ignores that
input and generates from the rest. For text_to_video the caption is swapped; the `motion only`
row swaps the caption's motion words alone (for every other motion), which is where the demo
LM reads nothing.

Only the input changes: the scored tokens, and the text of tasks that are not text_to_video,
stay the clip's own (no text is dropped).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import shapes_av as av
from models.conditioning import fit_length, fit_samples, resize_frames, stylize_control
from models.pipeline import load_pipeline
from models.spec import Task
from models.train import _lm_batch, token_losses
from models.video_tokenizer import VideoTokenizer

# task -> the part of a clip's tokens that is its input ("video:K": the first K latent frames)
INPUTS = {
    Task.text_to_video: "caption",
    Task.image_to_video: "video:1",
    Task.continuation: "video:context",
    Task.stylize: "control",
    Task.video_to_audio: "video",
    Task.audio_to_video: "audio",
}


def tokenize(pipe, clips: list[av.Clip], captions: list[str]) -> dict:
    """The clips in the LM stage's data layout (`train.build_lm_data`): tokens and caption states."""
    card = pipe.card
    frames = np.stack([fit_length(resize_frames(c.frames, card.height, card.width), card.clip_frames)
                       for c in clips])
    ctrl = np.stack([stylize_control(f) for f in frames])
    samples = round(card.clip_frames / card.fps * card.sample_rate)
    wav = torch.from_numpy(np.stack([fit_samples(c.audio, samples) for c in clips]))
    text, mask = pipe.text_encoder(captions)
    return {
        "video": pipe.video_tokenizer.encode(VideoTokenizer.frames_to_tensor(frames)),
        "control": pipe.video_tokenizer.encode(VideoTokenizer.frames_to_tensor(ctrl)),
        "audio": pipe.audio_tokenizer.encode(wav),
        "caption": torch.arange(len(clips)),
        "text": text,
        "text_len": mask.sum(1),
    }


def with_input(d: dict, task: Task, source: np.ndarray, context: int) -> dict:
    """`d` with each clip's input for `task` taken from clip source[i]; its output kept."""
    key = INPUTS[task]
    d = dict(d)
    if key.startswith("video:"):
        k = 1 if key == "video:1" else context
        video = d["video"].clone()
        video[:, :k] = d["video"][source, :k]
        d["video"] = video
    else:
        d[key] = d[key][source]
    return d


def row_losses(pipe, task: Task, d: dict) -> np.ndarray:
    """(n,) mean cross-entropy per output token of each clip, with no text dropped."""
    n = len(d["video"])
    b = _lm_batch(task, d, np.arange(n), pipe.layouts[task], pipe.vocab, pipe.shapes,
                  np.random.default_rng(0), text_drop=0.0)
    ce = token_losses(pipe.lm, b["batch"], pipe.vocab, b["text_len"])
    total = sum(v.sum(1) for v in ce.values())
    return (total / sum(v.shape[1] for v in ce.values())).numpy()


def motion_swapped(clip: av.Clip, motion: str) -> str:
    words = av._TRAIN_WORDS
    for phrase in sorted(words[clip.labels["motion"]], key=len, reverse=True):
        if phrase in clip.caption:
            return clip.caption.replace(phrase, words[motion][0], 1)
    raise ValueError(f"no motion words in {clip.caption!r}")


@torch.no_grad()
def probe(model: str = "demo", n: int = 16, others: int = 5) -> dict[str, dict[str, float]]:
    """{row: {"own": nats per token, "rise": mean rise with the others' inputs, "rank1": share of
    clips whose own input fits best, "chance": 1 / candidates}}."""
    pipe = load_pipeline(model, device="cpu")
    clips = [av.generate_clip(s, split="train") for s in range(20_000, 20_000 + n)]
    d = tokenize(pipe, clips, [c.caption for c in clips])
    context = pipe.shapes.t_context
    result = {}
    for task in INPUTS:
        scores = np.stack([row_losses(pipe, task, with_input(d, task, np.roll(np.arange(n), -k), context))
                           for k in range(min(others, n - 1) + 1)], axis=1)  # (n, 1 + others)
        result[task.value] = _summary(scores)
    # text_to_video again, the caption differing in its motion words only: own first
    variants = [[c.caption for c in clips]] + [
        [motion_swapped(c, av.MOTIONS[(av.MOTIONS.index(c.labels["motion"]) + k) % len(av.MOTIONS)])
         for c in clips] for k in range(1, len(av.MOTIONS))]
    scores = []
    for captions in variants:
        dv = dict(d)
        text, mask = pipe.text_encoder(captions)
        dv["text"], dv["text_len"] = text, mask.sum(1)
        scores.append(row_losses(pipe, Task.text_to_video, dv))
    result["text_to_video (motion only)"] = _summary(np.stack(scores, axis=1))
    return result


def _summary(scores: np.ndarray) -> dict[str, float]:
    own, rest = scores[:, 0], scores[:, 1:]
    return {"own": float(own.mean()), "rise": float((rest - own[:, None]).mean()),
            "rank1": float(np.mean(scores.argmin(1) == 0)), "chance": 1.0 / scores.shape[1]}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo", help="checkpoint name or folder")
    p.add_argument("--n", type=int, default=16, help="training clips")
    p.add_argument("--others", type=int, default=5, help="other clips' inputs per clip")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = probe(args.model, args.n, args.others)
    print(f"LM loss with each task's own input and with other clips' ({args.model}, {args.n} training clips)")
    print("| task (input swapped) | own, nats/token | rise with another's | own input ranks first | chance |")
    print("|---|---|---|---|---|")
    for task, r in result.items():
        key = "motion words" if "motion" in task else INPUTS[Task(task)]
        print(f"| {task.split(' ')[0]} ({key}) | {r['own']:.3f} | {r['rise']:+.3f} | "
              f"{100 * r['rank1']:.0f} % | {100 * r['chance']:.0f} % |")
    return result


if __name__ == "__main__":
    main()
