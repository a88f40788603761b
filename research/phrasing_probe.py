"""How much of text_to_video's motion do the held-out phrasings cost?

    python -m research.phrasing_probe [--model demo] [--n 96] [--seed 1] [--threads 2]

Generates text_to_video for the same n held-out clips twice: prompted with the held-out
phrasings (the captions `videopoet eval` uses) and with captions of those clips written in the
training phrasings. Prints, for each, the motion accuracy read off the generated pixels (as
`videopoet eval`) and the confusion table, prompted motion against the motion drawn ("lost":
no object found). A model that has learnt the direction words, not the training phrases,
scores about the same on both. `--seed` picks the clips, captions and sampling seeds as
`videopoet eval --seed` does; seed 1 keeps the eval table's seed 0 out of any tuning.
`--combos train` draws the clips from the (shape, colour, motion) combinations seen in
training instead (as many per motion): the gap between the two tells what the held-out
combinations cost, apart from the words.
"""

from __future__ import annotations

import argparse
import collections

import torch

from models import evaluate as ev
from models import shapes_av as av
from models.pipeline import load_pipeline
from models.spec import Task, TaskSpec


def confusion(pipe, specs, phrasing: str, seed: int) -> collections.Counter:
    clips = [av.make_clip(s, phrasing=phrasing) for s in specs]
    out = pipe.generate(
        [
            TaskSpec(
                task=Task.text_to_video,
                prompt=c.caption,
                seed=seed * 1000 + i,
                guidance_scale=pipe.card.guidance_scale,
            )
            for i, c in enumerate(clips)
        ],
        None,
    )
    return collections.Counter(
        (c.labels["motion"], ev.classify_motion(o.frames)) for c, o in zip(clips, out)
    )


def train_specs(n: int, seed: int) -> list[av.ClipSpec]:
    """n clips of training combinations, the motions in turn (the same count of each)."""
    combos = {
        m: [(s, c) for s in av.SHAPES for c in av.COLOURS if not av.is_heldout(s, c, m)]
        for m in av.MOTIONS
    }
    specs = []
    for i in range(n):
        m = av.MOTIONS[i % len(av.MOTIONS)]
        # a stride of 7 through a motion's 15 (shape, colour) pairs: coprime, so it visits all
        s, c = combos[m][(i // len(av.MOTIONS) * 7) % len(combos[m])]
        specs.append(
            av.sample_clip_spec(seed * 1000 + i, split="train", shape=s, colour=c, motion=m)
        )
    return specs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="demo")
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--combos", choices=("heldout", "train"), default="heldout")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model, device="cpu")
    if args.combos == "heldout":
        specs = av.heldout_specs(args.n, seed=12345 + args.seed)  # the clips of `eval --seed`
    else:
        specs = train_specs(args.n, seed=54321 + args.seed)
    for phrasing in ("heldout", "train"):
        conf = confusion(pipe, specs, phrasing, args.seed)
        right = sum(v for (true, got), v in conf.items() if true == got)
        print(
            f"\n{phrasing} phrasings: motion right {right}/{args.n} ({100 * right / args.n:.0f} %)"
        )
        print("prompted \\ drawn " + " ".join(f"{m[:5]:>5}" for m in av.MOTIONS) + "  lost")
        for m in av.MOTIONS:
            cells = " ".join(f"{conf[(m, g)]:5d}" for g in av.MOTIONS)
            print(f"{m:16s} {cells} {conf[(m, None)]:5d}")


if __name__ == "__main__":
    main()
