"""The LM stage's token cache, `DIR/train/lm_data.pt`: its clips tokenized once by the trained
tokenizers (video, stylize control, audio) with the frozen text encoder's states per distinct
caption. It is kept while the tokenizers' encoders and codebooks stay the same (`token_digest`)
and the data source is the same, and grown when `--clips` grows."""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models import pipeline
from models.audio_tokenizer import AudioTokenizer
from models.conditioning import fit_samples, stylize_control
from models.pipeline import COMPONENTS, TaskShapes
from models.train.data import Example, ShapesAVData, clip_window, open_data
from models.train.errors import TrainingError
from models.train.loop import Run
from models.video_tokenizer import VideoTokenizer

log = logging.getLogger(__name__)

CACHE_NAME = "lm_data.pt"  # in the run folder's train/


def token_digest(path: Path) -> str:
    """A digest of what decides a tokenizer's codes: its encoder's and quantizer's tensors.

    A decoder trained again on frozen codes (`--decoder-only`) leaves it unchanged, so the
    LM's tokenized clips stay valid; any change to the encoder or the codebooks changes it."""
    from safetensors import safe_open

    h = hashlib.sha1()
    with safe_open(str(path), "pt") as f:
        for name in sorted(f.keys()):
            if name.startswith(("encoder.", "quantizer.")):
                t = f.get_tensor(name).contiguous()
                h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
                h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def tokenizer_digests(folder: Path) -> list[str]:
    """`token_digest` of each tokenizer file the folder holds."""
    return [
        token_digest(folder / f"{n}.safetensors")
        for n in COMPONENTS[:2]
        if (folder / f"{n}.safetensors").is_file()
    ]


def load_tokenizers(run: Run) -> tuple[VideoTokenizer, AudioTokenizer]:
    try:
        return pipeline.load_tokenizers(run.out, run.config)
    except FileNotFoundError as exc:
        raise TrainingError(
            f"{exc}: run `train video-tokenizer` and `train audio-tokenizer` --out {run.out} first"
        ) from None


@torch.no_grad()
def tokenize_examples(
    exs: list[Example],
    video_tok: VideoTokenizer,
    audio_tok: AudioTokenizer,
    clip_samples: int,
    device: str = "cpu",
) -> tuple[torch.Tensor, ...]:
    """Whole-clip examples -> their video, stylize-control and audio tokens, on the CPU."""
    frames = np.stack([e.frames for e in exs])
    video = video_tok.encode(VideoTokenizer.frames_to_tensor(frames).to(device)).cpu()
    ctrl = np.stack([stylize_control(e.frames) for e in exs])
    control = video_tok.encode(VideoTokenizer.frames_to_tensor(ctrl).to(device)).cpu()
    wav = torch.from_numpy(np.stack([fit_samples(e.audio, clip_samples) for e in exs]))
    return video, control, audio_tok.encode(wav.to(device)).cpu()


@torch.no_grad()
def encode_captions(encoder, captions: list[str]) -> dict[str, torch.Tensor]:
    """Each distinct caption encoded once: {"caption": (N,) index per example, "text": (C,
    longest, D) float16 states, "text_len": (C,)}, C distinct captions."""
    unique = sorted(set(captions))
    states, masks = [], []
    for i in range(0, len(unique), 64):
        s, m = encoder(unique[i : i + 64])
        states.append(s)
        masks.append(m)
    states, masks = torch.cat(states), torch.cat(masks)
    longest = max(1, int(masks.sum(1).max()))
    index = {c: k for k, c in enumerate(unique)}
    return {
        "caption": torch.tensor([index[c] for c in captions]),
        "text": states[:, :longest].to(torch.float16),
        "text_len": masks.sum(1),
    }


@torch.no_grad()
def build_lm_data(
    run: Run,
    data,
    n_clips: int,
    seed: int,
    batch: int = 16,
    device: str = "cpu",
    start: int = 0,
) -> dict:
    """Tokenize clips [start, n_clips) (video, control video, audio; n_clips at most a file's
    length) and encode their captions once. Which clips, in which order, is a function of the
    data and seed alone, so clips [0, start) tokenized earlier and these are the clips one call
    from 0 would take (a long video's window is drawn from a stream of the call's own)."""
    from tqdm import tqdm

    from models.text_encoder import load_text_encoder

    card = run.config.card
    video_tok, audio_tok = (m.to(device) for m in load_tokenizers(run))
    shapes = TaskShapes(run.config)
    rng = np.random.default_rng([seed, 7])
    if isinstance(data, ShapesAVData):
        indices = np.arange(n_clips)
    else:
        indices = rng.permutation(len(data))[:n_clips]
    if start:  # windows of the new clips: a stream of their own, not the first call's
        rng = np.random.default_rng([seed, 7, start])
    video, control, audio, captions = [], [], [], []
    for i in tqdm(range(start, n_clips, batch), desc="tokenize", mininterval=10, file=sys.stderr):
        exs = [
            clip_window(data[int(j)], card.clip_frames, card, rng) for j in indices[i : i + batch]
        ]
        tokens = tokenize_examples(exs, video_tok, audio_tok, shapes.clip_samples, device)
        for out, t in zip((video, control, audio), tokens):
            out.append(t)
        captions += [e.caption for e in exs]
    config = run.config
    encoder = load_text_encoder(config.text_encoder, config.text_encoder_path, config.text_tokens)
    return {
        "video": torch.cat(video).to(torch.int16),  # (N, t, h, w)
        "control": torch.cat(control).to(torch.int16),
        "audio": torch.cat(audio).to(torch.int16),  # (N, L, F)
        **encode_captions(encoder, captions),
        "tokenizers": [token_digest(run.out / f"{n}.safetensors") for n in COMPONENTS[:2]],
    }


def join_lm_data(old: dict, new: dict) -> dict:
    """Clips of `old` then those of `new` (same tokenizers), with one table of caption states."""
    if old["tokenizers"] != new["tokenizers"]:
        raise ValueError("the two sets of clips were tokenized by different tokenizers")
    longest = max(old["text"].shape[1], new["text"].shape[1])

    def pad(text: torch.Tensor) -> torch.Tensor:
        return F.pad(text, (0, 0, 0, longest - text.shape[1]))

    return {
        **{k: torch.cat([old[k], new[k]]) for k in ("video", "control", "audio", "text_len")},
        "caption": torch.cat([old["caption"], new["caption"] + len(old["text"])]),
        "text": torch.cat([pad(old["text"]), pad(new["text"])]),
        "tokenizers": old["tokenizers"],
    }


def recaption(run: Run, d: dict, data: ShapesAVData) -> dict:
    """The cache's clips with their captions drawn again in `data`'s caption style and encoded
    (the tokens stay: a Shapes-AV clip is the same whatever its caption)."""
    from models.text_encoder import load_text_encoder

    config = run.config
    encoder = load_text_encoder(config.text_encoder, config.text_encoder_path, config.text_tokens)
    captions = [data.caption(i) for i in range(len(d["video"]))]
    return {**d, **encode_captions(encoder, captions), "captions": data.captions}


def cached_lm_data(
    run: Run, spec: str, clips: int, seed: int, device: str = "cpu", captions: str = "template"
) -> dict:
    """The run's token cache, with `clips` clips of data `spec` (at most a file's length):
    loaded, grown by the clips it lacks, or tokenized again when the tokenizers' codes or the
    clips' source (`spec` and `seed`) have changed since it was written. Shapes-AV clips
    cached with another caption style (`captions`) keep their tokens and get new captions."""
    path = run.out / "train" / CACHE_NAME
    digests = tokenizer_digests(run.out)
    d = torch.load(path, weights_only=True) if path.is_file() else None
    source = f"{spec} (seed {seed})"  # which clips, in which order
    if d is not None and d["tokenizers"] != digests:
        log.info("the tokenizers' codes have changed since %s was written: tokenizing again", path)
        d = None
    elif d is not None and d.get("source", source) != source:  # files before the key: as given
        log.info("%s holds clips of %s, not %s: tokenizing again", path, d["source"], source)
        d = None
    if d is not None and d.get("captions", "template") != captions:
        log.info(
            "%s holds %s captions: captioning its %d clips again (%s)",
            path,
            d.get("captions", "template"),
            len(d["video"]),
            captions,
        )
        t0 = time.perf_counter()
        d = recaption(run, d, open_data(spec, run.config.card, seed=seed + 1, captions=captions))
        torch.save(d, path)
        log.info("captioned in %.0f s", time.perf_counter() - t0)
    have = 0 if d is None else len(d["video"])
    data = (
        open_data(spec, run.config.card, seed=seed + 1, captions=captions) if have < clips else None
    )
    if data is None:
        want = 0
    else:
        want = clips if isinstance(data, ShapesAVData) else min(clips, len(data))
    if have < want:  # a larger --clips adds clips to those already tokenized
        log.info("tokenizing clips %d to %d for the LM", have, want)
        t0 = time.perf_counter()
        more = build_lm_data(run, data, want, seed, device=device, start=have)
        d = more if d is None else join_lm_data(d, more)
        d["source"], d["captions"] = source, captions
        torch.save(d, path)
        log.info("tokenized in %.0f s", time.perf_counter() - t0)
    return d
