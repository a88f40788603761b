"""What does the video tokenizer keep of the stylize control? Print it.

    python -m research.control_probe [--model demo] [--n 48] [--control wheel|channels]

The LM reads the stylize control (models/conditioning.py: a source video's optical flow and
depth-like map) only as the video tokenizer's codes. Here n held-out Shapes-AV clips are turned
into their control video, encoded and decoded by the checkpoint's tokenizer, and two readers
look at the control before and after:
- path: the object's track (where the control differs from its background) classified like
  `videopoet eval` classifies motion (left, right, up, down, still, diagonal);
- direction: the flow's direction as the control draws it, classified the same way.
Both read the true motion off the control before the round trip; what is left after it is what
the LM can read. `--control channels` is the pipeline's control (flow x, y and depth as the R, G, B channels);
`--control wheel` an experiment: the flow's direction as a hue over the depth-like map.

    python -m research.control_probe --model demo --n 48    # ~1 min on 2 CPU threads
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch

from models import shapes_av as av
from models.conditioning import depth_like, optical_flow, stylize_control
from models.evaluate import motion_name, psnr, round_trip_video, tokenizers_only

TRAVEL_FRAMES = av.FRAMES - 1


def path_motion(object_map: np.ndarray) -> str | None:
    """Motion of the centroid of the object's pixels, (T, H, W) bool, over the clip."""
    cs = [
        (np.nonzero(m)[1].mean(), np.nonzero(m)[0].mean()) if m.sum() >= 6 else None
        for m in object_map
    ]
    ok = [i for i, c in enumerate(cs) if c is not None]
    if len(ok) < 4:
        return None
    head, tail = ok[: max(1, len(ok) // 5)], ok[-max(1, len(ok) // 5) :]
    scale = TRAVEL_FRAMES / max(1.0, float(np.mean(tail) - np.mean(head)))
    dx = np.mean([cs[i][0] for i in tail]) - np.mean([cs[i][0] for i in head])
    dy = np.mean([cs[i][1] for i in tail]) - np.mean([cs[i][1] for i in head])
    return motion_name(dx * scale, dy * scale)


# ---- a control drawn as a picture the tokenizer knows: flow colours over the world's grey
# (an experiment, not what the pipeline uses; flow of FLOW_FULL_COLOUR_PX a frame gets full colour)

FLOW_FULL_COLOUR_PX = 1.0
CONTROL_BACKGROUND = np.array(av.BACKGROUNDS["gray"], dtype=np.float32)
CONTROL_VALUE = float(max(av.COLOURS["red"]))  # the objects' brightness and saturation
CONTROL_SATURATION = 1.0 - min(av.COLOURS["red"]) / CONTROL_VALUE


def wheel_control(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8: where the depth-like map marks the object, the flow's colour (hue =
    its direction: right red, up between yellow and green, left cyan, down between blue and
    magenta; saturation = its speed, full from FLOW_FULL_COLOUR_PX a frame; no motion a pale
    grey-white); elsewhere the world's mid grey. A picture like the frames the tokenizer knows."""
    out = np.empty(frames.shape, dtype=np.uint8)
    for t, (frame, flow) in enumerate(zip(frames, optical_flow(frames))):
        hue = np.degrees(np.arctan2(-flow[..., 1], flow[..., 0])) % 360.0  # y grows downwards
        speed = np.hypot(flow[..., 0], flow[..., 1])
        saturation = CONTROL_SATURATION * np.clip(speed / FLOW_FULL_COLOUR_PX, 0.0, 1.0)
        hsv = np.stack(
            [np.round(hue / 2.0) % 180.0, saturation * 255.0, np.full_like(hue, CONTROL_VALUE)],
            axis=-1,
        )
        colour = cv2.cvtColor(np.round(hsv).astype(np.uint8), cv2.COLOR_HSV2RGB)
        depth = depth_like(frame)[..., None]
        mixed = CONTROL_BACKGROUND * (1.0 - depth) + colour.astype(np.float32) * depth
        out[t] = np.clip(np.round(mixed), 0, 255).astype(np.uint8)
    return out


def wheel_path(control: np.ndarray) -> str | None:
    return path_motion(
        np.linalg.norm(control.astype(np.float32) - CONTROL_BACKGROUND, axis=-1) > 60
    )


def wheel_direction(control: np.ndarray) -> str:
    hsv = np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2HSV) for f in control[1:]])
    coloured = hsv[..., 1] > 110
    if coloured.sum() < 10:
        return "still"
    angle = np.deg2rad(hsv[..., 0][coloured].astype(np.float64) * 2.0)
    # the mean of unit steps in the drawn directions, one a frame: hues that disagree shorten it
    return motion_name(np.cos(angle).mean() * TRAVEL_FRAMES, -np.sin(angle).mean() * TRAVEL_FRAMES)


# ---- the control as it was drawn before: R, G = flow x, y; B = depth-like map


def channels_path(control: np.ndarray) -> str | None:
    return path_motion(control[..., 2] > 128)


def channels_direction(control: np.ndarray) -> str | None:
    near = control[1:, ..., 2] > 128
    if near.sum() < 10:
        return None
    flow = (control[1:, ..., :2].astype(np.float32) - 127.5) / 127.5 * 4.0
    v = flow[near].mean(0) * TRAVEL_FRAMES
    return motion_name(float(v[0]), float(v[1]))


CONTROLS = {
    "wheel": (wheel_control, wheel_path, wheel_direction),
    "channels": (stylize_control, channels_path, channels_direction),
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--seed", type=int, default=1, help="held-out clips of this seed")
    ap.add_argument("--control", choices=sorted(CONTROLS), default="channels")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    draw, path, direction = CONTROLS[args.control]
    tokenizer = tokenizers_only(args.model, "cpu").video_tokenizer
    scores = {k: 0 for k in ("path before", "path after", "direction before", "direction after")}
    psnrs = []
    specs = av.heldout_specs(args.n, seed=args.seed)
    for spec in specs:
        control = draw(av.make_clip(spec).frames)
        back = round_trip_video(tokenizer, control)
        psnrs.append(psnr(control, back))
        for name, reader, x in (
            ("path before", path, control),
            ("path after", path, back),
            ("direction before", direction, control),
            ("direction after", direction, back),
        ):
            scores[name] += reader(x) == spec.main.motion
    print(
        f"control {args.control!r} through {args.model!r}'s video tokenizer, {len(specs)} held-out clips"
    )
    print(f"  reconstruction PSNR {np.mean(psnrs):.2f} dB")
    for name, hits in scores.items():
        print(
            f"  motion read off the {name.split()[0]:<9} {name.split()[1]:<6} the round trip: "
            f"{100 * hits / len(specs):.0f} %  (chance 17 %)"
        )


if __name__ == "__main__":
    main()
