"""Does text_to_video put the object where the prompted motion starts? Where it fails, which part.

    python -m research.placement_probe [--model demo] [--n 48] [--threads 1] [--without grid,caption]

A Shapes-AV object starts where its whole path stays inside the frame (`shapes_av.start_box`):
one that moves left starts in the right part of the frame, one that moves up in the lower part.
So in text_to_video the motion words decide two things: where frame 0 puts the object, and
which way the later frames take it. A model that ignores the words places the object anywhere
and then moves it whichever way its start allows, and its motion is right about as often as
chance. This script generates text_to_video for n held-out captions (the eval's clips and
phrasings), finds the object in the first frame and prints, per prompted motion:

- start fits: the object's centre lies in the prompted motion's start box (1 px of slack);
- chance: how often a start drawn from the training clips of that size, any motion, would;
- motion right: the motion read off the whole clip (as `videopoet eval`), and the same among
  the clips whose start fits (n/a when none does).

"still" may start anywhere, so it always fits; the "all moving" row leaves it out.
`--without grid,caption` zeroes the LM's grid-position tables and/or caption path in memory
first: what the model does without them.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from models import evaluate as ev
from models import shapes_av as av
from models.conditioning import resize_frames
from models.pipeline import load_pipeline
from models.spec import Task, TaskSpec

SLACK_PX = 1.0
MOVING = "all moving"


def start_fits(frame: np.ndarray, size: str, motion: str, scale: float) -> bool | None:
    """Whether the object found in `frame` starts inside the motion's start box (None: no object).
    scale: the model's pixels per Shapes-AV pixel."""
    tr = ev.track(frame[None])
    if not tr.found[0]:
        return None
    (xlo, xhi), (ylo, yhi) = av.start_box(size, motion)
    x, y = tr.cx[0] / scale, tr.cy[0] / scale
    return bool(xlo - SLACK_PX <= x <= xhi + SLACK_PX and ylo - SLACK_PX <= y <= yhi + SLACK_PX)


def chance_of_fit(size: str, motion: str, draws: int = 4000) -> float:
    """The share of training starts of objects this size, any motion, that land in the box."""
    rng = np.random.default_rng(0)
    (xlo, xhi), (ylo, yhi) = av.start_box(size, motion)
    hits = 0
    for _ in range(draws):
        o = av.sample_object(rng, split="train", size=size)
        hits += (
            xlo - SLACK_PX <= o.x0 <= xhi + SLACK_PX and ylo - SLACK_PX <= o.y0 <= yhi + SLACK_PX
        )
    return hits / draws


def silence(lm: torch.nn.Module, parts: list[str]) -> None:
    """Zero the LM's grid-position tables ("grid") and/or caption path ("caption")."""
    with torch.no_grad():
        for part in parts:
            module = {"grid": lm.grid, "caption": lm.text_global}[part]
            if module is None:
                raise SystemExit(f"--without {part}: this LM has no {part} to zero")
            for p in module.parameters():
                p.zero_()


def probe(
    model: str = "demo",
    n: int = 48,
    seed: int = 0,
    guidance: float | None = None,
    without: list[str] | None = None,
) -> dict[str, dict[str, float | int | None]]:
    """{prompted motion or "all moving": {clips, start fits, chance, motion right, motion right
    when start fits}} over n held-out clips."""
    pipe = load_pipeline(model, device="cpu")
    silence(pipe.lm, without or [])
    card = pipe.card
    specs = av.heldout_specs(n, seed=12345 + seed)  # the eval's clips
    clips = [av.make_clip(s, phrasing="heldout") for s in specs]
    g = card.guidance_scale if guidance is None else guidance
    out = pipe.generate(
        [
            TaskSpec(
                task=Task.text_to_video, prompt=c.caption, seed=seed * 1000 + i, guidance_scale=g
            )
            for i, c in enumerate(clips)
        ]
    )
    scale = card.width / av.SIZE
    rows: dict[str, list] = {}
    for clip, result in zip(clips, out):
        lab = clip.labels
        frames = resize_frames(result.frames, card.height, card.width)
        fits = start_fits(frames[0], lab["size"], lab["motion"], scale)
        right = ev.classify_motion(frames) == lab["motion"]
        chance = chance_of_fit(lab["size"], lab["motion"])
        for key in (lab["motion"], MOVING) if lab["motion"] != "still" else (lab["motion"],):
            rows.setdefault(key, []).append((fits, right, chance))
    table = {}
    for key in [*av.MOTIONS, MOVING]:
        got = rows.get(key, [])
        if not got:
            continue
        fit_right = [r for f, r, _ in got if f]
        table[key] = {
            "clips": len(got),
            "start fits": float(np.mean([bool(f) for f, _, _ in got])),
            "chance": float(np.mean([c for _, _, c in got])),
            "motion right": float(np.mean([r for _, r, _ in got])),
            "motion right when start fits": float(np.mean(fit_right)) if fit_right else None,
        }
    return table


def main(argv: list[str] | None = None) -> dict[str, dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo", help="checkpoint name or folder")
    p.add_argument("--n", type=int, default=48, help="held-out clips")
    p.add_argument("--guidance", type=float, default=None, help="default: the model card's")
    p.add_argument("--without", default="", help="comma-separated: grid, caption")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    without = [w for w in args.without.split(",") if w]
    table = probe(args.model, args.n, guidance=args.guidance, without=without)
    print(
        f"text_to_video, {args.n} held-out captions ({args.model}"
        + (f", without {', '.join(without)}" if without else "")
        + ")"
    )
    print(
        "| prompted motion | clips | start fits | chance | motion right | motion right when start fits |"
    )
    print("|---|---|---|---|---|---|")
    for key, r in table.items():
        when = (
            "n/a"
            if r["motion right when start fits"] is None
            else f"{r['motion right when start fits']:.0%}"
        )
        print(
            f"| {key} | {r['clips']} | {r['start fits']:.0%} | {r['chance']:.0%} | {r['motion right']:.0%} | {when} |"
        )
    return table


if __name__ == "__main__":
    main()
