"""Make docs/demo_sheet.png: what a checkpoint generates, one row per prompt or task.

    python -m research.contact_sheet [--model demo] [-o PNG] [--frames 6]

Each row is a label, then frames spread over the generated clip (first to last). Input-driven
tasks show their input first: image_to_video its image, stylize the source clip's frames in the
row above. The held-out clips come from Shapes-AV's held-out attribute combinations, phrased
with the held-out templates, so nothing in the sheet was a training caption.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from models import shapes_av as av
from models.conditioning import resize_frames
from models.pipeline import GenerationInputs, load_pipeline
from models.spec import Task, TaskSpec
from research import DOCS

SCALE = 2
LABEL_W = 360
GAP = 4


def _pick(frames: np.ndarray, k: int) -> list[np.ndarray]:
    idx = np.linspace(0, len(frames) - 1, k).round().astype(int)
    return [frames[i] for i in idx]


def _row(label: str, cells: list[np.ndarray | None], size: int) -> np.ndarray:
    """A label, then the cells (RGB uint8; None leaves a gap) scaled up and side by side."""
    side = size * SCALE
    row = np.full((side + 2 * GAP, LABEL_W + len(cells) * (side + GAP)), 255, np.uint8)
    row = np.repeat(row[..., None], 3, axis=2)
    for i, line in enumerate(_wrap(label, 40)[: max(1, (side + GAP) // 20)]):
        cv2.putText(
            row, line, (6, 22 + 20 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA
        )
    for j, cell in enumerate(cells):
        if cell is None:
            continue
        big = cv2.resize(cell, (side, side), interpolation=cv2.INTER_NEAREST)
        x = LABEL_W + j * (side + GAP)
        row[GAP : GAP + side, x : x + side] = big
    return row


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line] if line else lines


def build(model: str, k: int, seed: int, guidance: float | None) -> np.ndarray:
    pipe = load_pipeline(model)
    card = pipe.card
    if guidance is None:  # what the service gives a request that names none
        guidance = card.guidance_scale
    size = card.height
    held = [av.make_clip(s, phrasing="heldout") for s in av.heldout_specs(3, seed=777)]
    for c in held:
        c.frames = resize_frames(c.frames, card.height, card.width)
    prompts = [
        "a red circle moves to the right",
        "Moving upward: one big blue square on a white background.",  # phrased unlike any template
        held[0].caption,
    ]
    rows: list[np.ndarray] = []
    sampling = {"seed": seed, "guidance_scale": guidance}

    specs = [TaskSpec(task=Task.text_to_video, prompt=p, **sampling) for p in prompts]
    for p, r in zip(prompts, pipe.generate(specs)):
        rows.append(_row(f"text_to_video: {p}", [None] + _pick(r.frames, k), size))

    image = held[1]
    r = pipe.generate(
        TaskSpec(task=Task.image_to_video, prompt=image.caption, **sampling),
        GenerationInputs(image=image.frames[0]),
    )
    rows.append(
        _row(
            f"image_to_video (image first): {image.caption}",
            [image.frames[0]] + _pick(r.frames, k),
            size,
        )
    )

    source = held[2]
    styled = av.restyle(source.spec, np.random.default_rng(seed))
    prompt = av.caption(styled, np.random.default_rng([styled.seed, 2]), "heldout")
    rows.append(_row("stylize, source clip:", [None] + _pick(source.frames, k), size))
    r = pipe.generate(
        TaskSpec(task=Task.stylize, prompt=prompt, **sampling),
        GenerationInputs(video=source.frames, video_fps=card.fps),
    )
    rows.append(_row(f"stylized: {prompt}", [None] + _pick(r.frames, k), size))

    width = max(row.shape[1] for row in rows)
    rows = [
        np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=255)
        for row in rows
    ]
    return np.concatenate(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo", help="checkpoint folder, shipped name or preset")
    parser.add_argument("--frames", type=int, default=6, help="frames shown per clip")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance scale (default: the model card's)",
    )
    parser.add_argument("-o", "--output", default=str(DOCS / "demo_sheet.png"))
    args = parser.parse_args(argv)
    sheet = build(args.model, args.frames, args.seed, args.guidance)
    cv2.imwrite(args.output, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.output} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
