"""Turning decoded inputs into what the tokenizers take: frame and sample-rate fitting, the
stylization control video (optical flow + a depth-like map), and inpaint/outpaint masks.

numpy and OpenCV only; no torch.
"""

from __future__ import annotations

import cv2
import numpy as np

# Flow of this many pixels per frame (at the model's resolution) saturates the control video.
FLOW_SATURATION_PX = 4.0


def resample_frames(frames: np.ndarray, src_fps: float | None, fps: float) -> np.ndarray:
    """Pick the frames shown at `fps` from frames (T, H, W, 3) played at `src_fps`."""
    if not src_fps or abs(src_fps - fps) < 1e-6 or len(frames) == 1:
        return frames
    duration = len(frames) / src_fps
    n = max(1, int(round(duration * fps)))
    idx = np.minimum((np.arange(n) * src_fps / fps).astype(int), len(frames) - 1)
    return frames[idx]


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T, h, w, 3) uint8 -> (T, height, width, 3), area-averaged when shrinking."""
    if frames.shape[1:3] == (height, width):
        return np.ascontiguousarray(frames)
    shrink = frames.shape[1] >= height and frames.shape[2] >= width
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in frames])


def fit_length(frames: np.ndarray, n: int) -> np.ndarray:
    """First n frames; a shorter clip is padded by holding its last frame."""
    if len(frames) >= n:
        return frames[:n]
    pad = np.repeat(frames[-1:], n - len(frames), axis=0)
    return np.concatenate([frames, pad])


def resample_audio(audio: np.ndarray, src_rate: int | None, rate: int) -> np.ndarray:
    """Mono float32 audio at `rate` (linear interpolation; inputs here are speech-band)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:  # (N, channels) -> mono
        audio = audio.mean(axis=1)
    if not src_rate or src_rate == rate or len(audio) < 2:
        return audio
    n = max(1, int(round(len(audio) * rate / src_rate)))
    t = np.arange(n) * (src_rate / rate)
    return np.interp(t, np.arange(len(audio)), audio).astype(np.float32)


def fit_samples(audio: np.ndarray, n: int) -> np.ndarray:
    """First n samples, zero-padded when shorter."""
    if len(audio) >= n:
        return audio[:n]
    return np.concatenate([audio, np.zeros(n - len(audio), dtype=np.float32)])


def depth_like(frame: np.ndarray) -> np.ndarray:
    """A depth-like map in [0, 1]: how far each pixel's colour is from the frame's background.

    This is NOT a monocular depth estimate. It is a foreground-prominence map: the background
    colour is taken as the per-channel median of the frame border, each pixel's distance to it
    is normalised and smoothed. Like depth in the paper's stylization input, it separates the
    layers of the scene (near objects light, the far background dark) without carrying the
    colours, so a prompt can restyle them while the layout stays.
    """
    f = frame.astype(np.float32)
    border = np.concatenate([f[0], f[-1], f[:, 0], f[:, -1]])
    background = np.median(border, axis=0)
    dist = np.linalg.norm(f - background, axis=-1)
    dist = cv2.GaussianBlur(dist, (0, 0), sigmaX=max(0.5, frame.shape[1] / 64))
    peak = float(dist.max())
    return dist / peak if peak > 1e-6 else np.zeros_like(dist)


def optical_flow(frames: np.ndarray) -> list[np.ndarray]:
    """T float32 flows (H, W, 2) (x, y in pixels) of uint8 frames (T, H, W, 3): OpenCV's
    Farneback flow from the previous frame to each one; the first frame has none (zero)."""
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    flows = [np.zeros(frames.shape[1:3] + (2,), dtype=np.float32)]
    for prev, cur in zip(gray, gray[1:]):
        flows.append(
            cv2.calcOpticalFlowFarneback(
                prev,
                cur,
                None,
                pyr_scale=0.5,
                levels=2,
                winsize=9,
                iterations=3,
                poly_n=5,
                poly_sigma=1.1,
                flags=0,
            )
        )
    return flows


def stylize_control(frames: np.ndarray) -> np.ndarray:
    """The stylization condition: (T, H, W, 3) uint8 with R, G = optical flow x, y and B = the
    depth-like map, all mapped to [0, 255] (flow 0 -> 128).

    Flow is OpenCV's Farneback flow from the previous frame to this one; the first frame has
    none (zero flow), which keeps the control causal like the tokenizer.
    """
    out = np.empty(frames.shape, dtype=np.uint8)
    for t, (frame, flow) in enumerate(zip(frames, optical_flow(frames))):
        flow = np.clip(flow / FLOW_SATURATION_PX, -1.0, 1.0)
        out[t, ..., :2] = np.round((flow + 1.0) * 127.5).astype(np.uint8)
        out[t, ..., 2] = np.round(depth_like(frame) * 255.0).astype(np.uint8)
    return out


def default_box(height: int, width: int) -> tuple[int, int, int, int]:
    """The centre half of a frame: x0, y0, x1, y1."""
    return width // 4, height // 4, width - width // 4, height - height // 4


def latent_box_mask(
    box: tuple[int, int, int, int] | None, src_hw: tuple[int, int], latent_hw: tuple[int, int]
) -> np.ndarray:
    """(h, w) bool of the latent cells that the pixel box (in a src_hw frame) touches."""
    H, W = src_hw
    h, w = latent_hw
    x0, y0, x1, y1 = box if box is not None else default_box(H, W)
    if x0 >= W or y0 >= H:
        raise ValueError(f"mask_box {x0},{y0},{x1},{y1} lies outside the {W}x{H} input video")
    x1, y1 = min(x1, W), min(y1, H)
    mask = np.zeros((h, w), dtype=bool)
    r0, r1 = int(np.floor(y0 * h / H)), int(np.ceil(y1 * h / H))
    c0, c1 = int(np.floor(x0 * w / W)), int(np.ceil(x1 * w / W))
    mask[r0:r1, c0:c1] = True
    return mask
