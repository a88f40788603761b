"""Does an LM use each task's input? Print how much its loss rises with another clip's input.

    python -m research.condition_probe [--model demo] [--n 16] [--others 5] [--threads 1]

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

import numpy as np
import torch

from models import shapes_av as av
from models.conditioning import resize_frames
from models.pipeline import load_pipeline
from models.spec import Task
from models.train import (
    Example,
    clip_window,
    encode_captions,
    lm_batch,
    token_losses,
    tokenize_examples,
)

# task -> the part of a clip's tokens that is its input ("video:K": the first K latent frames)
INPUTS = {
    Task.text_to_video: "caption",
    Task.image_to_video: "video:1",
    Task.continuation: "video:context",
    Task.stylize: "control",
    Task.video_to_audio: "video",
    Task.audio_to_video: "audio",
}


def tokenize(pipe, clips: list[av.Clip]) -> dict:
    """The clips in the LM stage's data layout (`train.build_lm_data`): tokens and caption states."""
    card = pipe.card
    rng = np.random.default_rng(0)  # clip_window: the first window of the card's clip length
    exs = [
        clip_window(
            Example(resize_frames(c.frames, card.height, card.width), c.audio, c.caption),
            card.clip_frames,
            card,
            rng,
        )
        for c in clips
    ]
    video, control, audio = tokenize_examples(
        exs, pipe.video_tokenizer, pipe.audio_tokenizer, pipe.shapes.clip_samples
    )
    return {
        "video": video,
        "control": control,
        "audio": audio,
        **encode_captions(pipe.text_encoder, [c.caption for c in clips]),
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
    b = lm_batch(
        task,
        d,
        np.arange(n),
        pipe.layouts[task],
        pipe.vocab,
        pipe.shapes,
        np.random.default_rng(0),
        text_drop=0.0,
    )
    ce = token_losses(pipe.lm, b["batch"], pipe.vocab, b["text_len"])
    total = sum(v.sum(1) for v in ce.values())
    return (total / sum(v.shape[1] for v in ce.values())).numpy()


@torch.no_grad()
def probe(model: str = "demo", n: int = 16, others: int = 5) -> dict[str, dict[str, float]]:
    """{row: {"own": nats per token, "rise": mean rise with the others' inputs, "rank1": share of
    clips whose own input fits best, "chance": 1 / candidates}}."""
    pipe = load_pipeline(model, device="cpu")
    clips = [av.generate_clip(s, split="train") for s in range(20_000, 20_000 + n)]
    d = tokenize(pipe, clips)
    context = pipe.shapes.t_context
    result = {}
    for task in INPUTS:
        scores = np.stack(
            [
                row_losses(pipe, task, with_input(d, task, np.roll(np.arange(n), -k), context))
                for k in range(min(others, n - 1) + 1)
            ],
            axis=1,
        )  # (n, 1 + others)
        result[task.value] = _summary(scores)
    # text_to_video again, the caption differing in its motion words only: own first
    variants = [[c.caption for c in clips]] + [
        [
            av.reword(
                c.caption,
                c.labels["motion"],
                av.MOTIONS[(av.MOTIONS.index(c.labels["motion"]) + k) % len(av.MOTIONS)],
            )
            for c in clips
        ]
        for k in range(1, len(av.MOTIONS))
    ]
    scores = [
        row_losses(pipe, Task.text_to_video, d | encode_captions(pipe.text_encoder, captions))
        for captions in variants
    ]
    result["text_to_video (motion only)"] = _summary(np.stack(scores, axis=1))
    return result


def _summary(scores: np.ndarray) -> dict[str, float]:
    own, rest = scores[:, 0], scores[:, 1:]
    return {
        "own": float(own.mean()),
        "rise": float((rest - own[:, None]).mean()),
        "rank1": float(np.mean(scores.argmin(1) == 0)),
        "chance": 1.0 / scores.shape[1],
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo", help="checkpoint name or folder")
    p.add_argument("--n", type=int, default=16, help="training clips")
    p.add_argument("--others", type=int, default=5, help="other clips' inputs per clip")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = probe(args.model, args.n, args.others)
    print(
        f"LM loss with each task's own input and with other clips' ({args.model}, {args.n} training clips)"
    )
    print(
        "| task (input swapped) | own, nats/token | rise with another's | own input ranks first | chance |"
    )
    print("|---|---|---|---|---|")
    for task, r in result.items():
        key = "motion words" if "motion" in task else INPUTS[Task(task)]
        print(
            f"| {task.split(' ')[0]} ({key}) | {r['own']:.3f} | {r['rise']:+.3f} | "
            f"{100 * r['rank1']:.0f} % | {100 * r['chance']:.0f} % |"
        )
    return result


if __name__ == "__main__":
    main()
