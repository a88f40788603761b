"""Continuous batching: a running batch whose rows join and leave between two decode steps.

A static batch (models/generate.py `generate_tokens`) starts its rows together and ends
them together, so a request that arrives while it samples waits for all of it. Here each row
keeps its own position in the sequence: a new request is prefilled on its own into a free
row of the KV cache and joins at the next step; a row whose tokens are complete leaves at
once, to be detokenized while the others go on.

Two levels:

- `RowSampler`: tokens only. Rows share one layout (the same task and token shapes, so the
  same prefix length and positions) and differ in their step, seed, sampling settings and
  guidance scale. A row's tokens equal those it gets alone: its prefill runs alone (a batch
  of one, as `generate_tokens` would run it), its random draws come from its own generator,
  and its filters read its own settings only.
- `ContinuousBatch`: the pipeline around it for the tasks one sampling pass makes (see
  `streams`): inputs to condition tokens at `admit`, tokens to frames at `finish`, and live
  previews, the frames of each latent frame whose tokens are complete (the video tokenizer
  is causal in time, so a prefix of latent frames decodes to the first frames).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from models.generate import SamplingParams, decode_rows, prefill, sample
from models.lm import KVCache, PrefixLM
from models.spec import (
    GenerationInputs,
    GenerationResult,
    Task,
    TaskSpec,
    TaskSpecError,
    output_frames,
)
from models.vocab import Batch, Layout, Vocab, assemble, split_output
from models.video_tokenizer import DecoderState

if TYPE_CHECKING:
    from models.pipeline import Pipeline, _Row

# Tasks whose whole output is one sampling pass of one layout: these can share a running
# batch. Long videos, continuations and soundtracks chain several passes (each pass's input
# is the previous pass's decoded output) and run as static batches.
STREAMING_TASKS = frozenset(
    {
        Task.unconditional,
        Task.text_to_video,
        Task.text_to_image,
        Task.image_to_video,
        Task.inpaint,
        Task.outpaint,
        Task.stylize,
        Task.audio_to_video,
    }
)


def streams(spec: TaskSpec, card) -> bool:
    """Whether `spec` runs as one sampling pass, so it can join a continuous batch."""
    if spec.task not in STREAMING_TASKS or spec.with_audio:
        return False
    try:
        return output_frames(spec, card) <= card.clip_frames
    except TaskSpecError:
        return False


@dataclass
class _Slot:
    key: Hashable
    step: int  # the output position it samples next
    free: list[bool]  # free[i]: output position i is sampled (else forced)
    params: SamplingParams  # its own, one row


class RowSampler:
    """The rows of one layout sampling together, each at its own step.

    Cache rows 0..R-1 hold the live rows in slot order (with guidance, each row's
    unconditional twin right after it). `admit` prefills a row alone and copies its cache
    into the next free rows; `step` samples one token for every row and feeds it back;
    finished and dropped rows leave (their cache rows are compacted away).
    """

    def __init__(
        self,
        model: PrefixLM,
        vocab: Vocab,
        layout: Layout,
        *,
        guided: bool,
        capacity: int,
    ):
        self.model, self.vocab, self.layout = model, vocab, layout
        self.guided = guided and layout.text_slice is not None
        self.m = 2 if self.guided else 1  # cache rows per row
        self.capacity = capacity
        self.P = layout.prefix_len
        structure = layout.structure[self.P :]
        content = [i for i, f in enumerate(structure) if f < 0]
        self.n_steps = content[-1] + 1 if content else 0
        self.kinds = layout.kinds[self.P :]
        self.device = model.tok_embeddings.weight.device
        model.setup_caches(capacity * self.m, layout.length)
        self.S = model.max_seq_len
        self.grid = model.layout_grid(layout, self.device)
        p = model.tok_embeddings.weight
        c = model.config
        # a prefill's own cache: a joining row runs alone, exactly as it would in a batch of one
        self._scratch = [
            KVCache(self.m, self.S, c.n_heads, c.head_dim, p.dtype, p.device) for _ in model.layers
        ]
        self.slots: list[_Slot] = []
        N = layout.length - self.P
        self._out = torch.empty(0, N, dtype=torch.long, device=self.device)  # (n, N)
        self._h = torch.empty(0, c.dim, dtype=p.dtype, device=self.device)  # (R, C)
        self._valid = torch.empty(0, self.S, dtype=torch.bool, device=self.device)  # (R, S)
        self._caption: torch.Tensor | None = None  # (R, 1, C)
        self._params: SamplingParams | None = None

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def free_rows(self) -> int:
        return self.capacity - len(self.slots)

    def steps_done(self, key: Hashable) -> int:
        return self._slot(key)[1].step

    def tokens(self, key: Hashable) -> torch.Tensor:
        """The row's output ids so far (N,), a copy; positions not reached yet hold -1 (or
        their forced id)."""
        return self._out[self._slot(key)[0]].clone()

    def admit(self, key: Hashable, batch: Batch, params: SamplingParams) -> None:
        """Prefill one row (`batch` of one, `params` of one) and add it to the running batch."""
        if self.free_rows <= 0:
            raise ValueError(f"the running batch is full ({self.capacity} rows)")
        if any(s.key == key for s in self.slots):
            raise ValueError(f"{key!r} is in the running batch already")
        model, layout, P = self.model, self.layout, self.P
        ids = batch.ids.to(self.device)
        key_valid = batch.key_valid.to(self.device)
        text = None if batch.text is None else batch.text.to(self.device)
        if self.guided:  # its unconditional twin: the same sequence with the text masked out
            uncond = key_valid.clone()
            uncond[:, layout.text_slice] = False
            ids, key_valid = torch.cat([ids, ids]), torch.cat([key_valid, uncond])
            text = torch.cat([text, torch.zeros_like(text)])
        valid = torch.zeros(self.m, self.S, dtype=torch.bool, device=self.device)
        valid[:, : layout.length] = key_valid
        caption = (
            None if text is None else model.caption_vector(text, key_valid[:, layout.text_slice])
        )
        caches = [block.attn.kv_cache for block in model.layers]
        try:
            for block, scratch in zip(model.layers, self._scratch):
                block.attn.kv_cache = scratch
            h = prefill(
                model,
                model.embed(ids[:, :P], text, layout.text_slice),
                valid,
                P,
                caption,
                self.grid,
            )
        finally:
            for block, cache in zip(model.layers, caches):
                block.attn.kv_cache = cache
        r = len(self.slots) * self.m
        for cache, scratch in zip(caches, self._scratch):
            cache.k[r : r + self.m, :, :P] = scratch.k[:, :, :P]
            cache.v[r : r + self.m, :, :P] = scratch.v[:, :, :P]
        forced = batch.forced[0]
        self.slots.append(_Slot(key, 0, (forced < 0).tolist(), params))
        self._out = torch.cat([self._out, forced.to(self.device)[None]])
        self._h = torch.cat([self._h, h])
        self._valid = torch.cat([self._valid, valid])
        if caption is not None:
            self._caption = (
                caption if self._caption is None else torch.cat([self._caption, caption])
            )
        self._params = SamplingParams.stack([s.params for s in self.slots])

    def drop(self, keys: set[Hashable]) -> None:
        """Rows that leave before their end (cancelled, timed out): their cache rows are freed."""
        self._leave({k for k in keys if any(s.key == k for s in self.slots)})

    def step(self) -> dict[Hashable, torch.Tensor]:
        """Sample one token for every row, then feed them back. Returns the rows that are
        complete (they left the batch): key -> output ids (N,)."""
        if not self.slots:
            return {}
        n, m = len(self.slots), self.m
        assert self._params is not None
        steps = [s.step for s in self.slots]
        # rows that sample here, grouped by the kind of their position (its code range)
        groups: dict[int, list[int]] = {}
        for k, s in enumerate(self.slots):
            if s.free[s.step]:
                groups.setdefault(self.kinds[s.step], []).append(k)
        at = torch.tensor(steps, device=self.device)
        for kind, rows in groups.items():
            lo, hi = self.vocab.code_range(kind)
            index = torch.tensor(rows, device=self.device)
            if self.guided:
                h = self._h.view(n, m, -1)[index]  # (r, 2, C)
                cond = self.model.logits(h[:, 0], lo, hi)
                uncond = self.model.logits(h[:, 1], lo, hi)
                params = self._params.select(rows)
                g = params.guidance[:, None]
                logits = torch.where(g == 1, cond, uncond + g * (cond - uncond))
            else:
                logits = self.model.logits(self._h[index], lo, hi)
                params = self._params.select(rows)
            token = sample(logits, params, list(range(len(rows)))) + lo
            self._out[index, at[index]] = token
        for s in self.slots:
            s.step += 1
        done = {s.key for s in self.slots if s.step >= self.n_steps}
        finished = {s.key: self._out[k].clone() for k, s in enumerate(self.slots) if s.key in done}
        if done:
            self._leave(done)
        if self.slots:  # feed each row's token at its position
            n = len(self.slots)
            k_rows = torch.arange(n, device=self.device)
            last = torch.tensor([s.step - 1 for s in self.slots], device=self.device)
            token = self._out[k_rows, last]
            pos = last + self.P
            if m > 1:
                token, pos = token.repeat_interleave(m), pos.repeat_interleave(m)
            kv_len = max(s.step for s in self.slots) - 1 + self.P + 1
            self._h = decode_rows(
                self.model, token, pos, kv_len, self._valid, self._caption, self.grid
            )
        return finished

    def _slot(self, key: Hashable) -> tuple[int, _Slot]:
        for k, s in enumerate(self.slots):
            if s.key == key:
                return k, s
        raise KeyError(key)

    def _leave(self, keys: set[Hashable]) -> None:
        if not keys:
            return
        keep = [k for k, s in enumerate(self.slots) if s.key not in keys]
        self.slots = [self.slots[k] for k in keep]
        rows = torch.tensor(keep, dtype=torch.long, device=self.device)
        cache_rows = (
            torch.stack([rows * self.m + j for j in range(self.m)], 1).flatten()
            if self.m > 1
            else rows
        )
        R = len(cache_rows)
        for block in self.model.layers:
            cache = block.attn.kv_cache
            cache.k[:R] = cache.k.index_select(0, cache_rows)
            cache.v[:R] = cache.v.index_select(0, cache_rows)
        self._out = self._out[rows]
        self._h = self._h[cache_rows]
        self._valid = self._valid[cache_rows]
        if self._caption is not None:
            self._caption = self._caption[cache_rows] if R else None
        self._params = SamplingParams.stack([s.params for s in self.slots]) if self.slots else None


@dataclass
class _Stream:
    """One request in a continuous batch."""

    row: _Row
    preview: bool
    admitted: float  # perf_counter at admission
    timings: dict[str, float] = field(default_factory=dict)
    first_token: float | None = None
    latent_done: int = 0  # latent frames whose tokens are complete
    content: dict = field(default_factory=dict)  # tokens the output is decoded with
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)  # preview index -> ids
    # previews decode with the causal decoder's state carried, and the finish goes on from it
    decoder: DecoderState = field(default_factory=DecoderState)
    decoded: list[np.ndarray] = field(default_factory=list)  # the frames decoded so far
    decoding: threading.Lock = field(default_factory=threading.Lock)
    tokens: torch.Tensor | None = None  # complete output ids, once sampled


class ContinuousBatch:
    """Requests of one task shape sampled as a running batch that they join and leave.

    The caller (a worker's loop) calls `admit` for a request, `step` repeatedly, and for each
    key `step` returns: `preview(key, index)` (when asked at admission) and `finish(key)`
    (when complete), which detokenize and may run in another thread while `step` goes on.
    `drop(key)` removes a request (cancelled).
    """

    def __init__(self, pipeline: Pipeline, spec: TaskSpec, capacity: int):
        self.pipeline = pipeline
        self.task = spec.task
        self.layout = pipeline.layouts[spec.task]
        self.sampler = RowSampler(
            pipeline.lm,
            pipeline.vocab,
            self.layout,
            guided=spec.guidance_scale != 1.0,
            capacity=capacity,
        )
        seg = self.layout.segments.get("visual_out")
        h, w = pipeline.shapes.latent_hw
        self.frame_tokens = h * w
        # output positions after which each latent frame's tokens are complete
        self.latent_ends = (
            []
            if seg is None
            else [
                seg.start - self.layout.prefix_len + (k + 1) * self.frame_tokens
                for k in range((seg.stop - seg.start) // self.frame_tokens)
            ]
        )
        self.streams: dict[Hashable, _Stream] = {}
        self._lock = threading.Lock()  # streams is read by the finishing thread
        self._threads = torch.get_num_threads()

    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def free_rows(self) -> int:
        return self.sampler.free_rows

    def progress(self, key: Hashable) -> float:
        return min(1.0, self.sampler.steps_done(key) / max(1, self.sampler.n_steps))

    def admit(
        self, key: Hashable, spec: TaskSpec, inputs: GenerationInputs, preview: bool = False
    ) -> None:
        """Prepare the request (its inputs to condition tokens, its text states) and prefill it
        into the running batch. TaskSpecError when it cannot run (nothing else is affected)."""
        p = self.pipeline
        if spec.task is not self.task:
            raise ValueError(f"a {spec.task.value} request cannot join a {self.task.value} batch")
        if not streams(spec, p.card):
            raise TaskSpecError(f"{spec.task.value} with these settings cannot stream")
        started = time.perf_counter()
        row = p._prepare_row(spec, inputs)
        stream = _Stream(row=row, preview=preview and bool(self.latent_ends), admitted=started)
        clock = _RowClock(stream.timings)
        params = SamplingParams.for_rows(
            [row.seed],
            [spec.temperature],
            [spec.top_k],
            [spec.top_p],
            [spec.guidance_scale],
            device=p.device,
        )
        with torch.inference_mode():
            text = p._encode_text([spec.prompt], clock)
            content = self._condition(row, clock)
            layout = self.layout
            states, mask = text if layout.text_slice is not None else (None, None)
            batch = assemble(
                layout, p.vocab, text=states, text_mask=mask, batch_size=1, **content["assemble"]
            )
            t0 = time.perf_counter()
            self.sampler.admit(key, batch, params)
            stream.timings["sampling"] = time.perf_counter() - t0
        stream.content = content
        row.prefix_tokens = layout.prefix_len
        row.generated_tokens = int((batch.forced < 0).sum())
        with self._lock:
            self.streams[key] = stream

    def step(self) -> list[tuple[Hashable, int | None]]:
        """One decode step of every row. Returns events: (key, latent frame index) for a
        preview ready to render, then (key, None) for a request whose tokens are complete."""
        t0 = time.perf_counter()
        with torch.inference_mode():
            finished = self.sampler.step()
        spent = time.perf_counter() - t0
        events: list[tuple[Hashable, int | None]] = []
        for key, stream in list(self.streams.items()):
            if stream.tokens is not None:
                continue
            stream.timings["sampling"] = stream.timings.get("sampling", 0.0) + spent
            if stream.first_token is None:
                stream.first_token = time.perf_counter() - stream.admitted
            done = key in finished
            step = self.sampler.n_steps if done else self.sampler.steps_done(key)
            if stream.preview:
                ready = sum(1 for end in self.latent_ends if step >= end)
                if ready > stream.latent_done and not done:
                    tokens = self.sampler.tokens(key)
                    for index in range(stream.latent_done, ready):
                        stream.snapshots[index] = tokens
                        events.append((key, index))
                stream.latent_done = ready
            if done:
                stream.tokens = finished[key]
                events.append((key, None))
        return events

    def restart(self) -> list[Hashable]:
        """After a failed step (the device out of memory, say): every row still sampling
        leaves, with the whole cache (a fresh, empty sampler takes its place); requests whose
        tokens are complete stay to be finished. Returns the keys that left; they may be
        admitted again, each getting its solo tokens."""
        s = self.sampler
        self.sampler = RowSampler(
            s.model, s.vocab, self.layout, guided=s.guided, capacity=s.capacity
        )
        del s
        with self._lock:
            left = [key for key, stream in self.streams.items() if stream.tokens is None]
            for key in left:
                del self.streams[key]
        return left

    def drop(self, key: Hashable) -> None:
        self.sampler.drop({key})
        with self._lock:
            self.streams.pop(key, None)

    def preview(self, key: Hashable, index: int) -> np.ndarray:
        """The frames of latent frames 0..index of the request (T, H, W, 3) uint8: what the
        video shows so far. Safe to call from another thread than `step`'s."""
        self._match_threads()
        with self._lock:
            stream = self.streams[key]
            tokens = stream.snapshots.pop(index)
            for older in [i for i in stream.snapshots if i < index]:  # skipped: never shown
                del stream.snapshots[older]
        codes = self._visual(stream, tokens[None])
        n = self._input_frames_tokens(stream) // self.frame_tokens + index + 1
        with stream.decoding:  # only the latent frames since the last preview are decoded
            if n > stream.decoder.latent_frames:
                stream.decoded.append(
                    self.pipeline.decode_video_carried(codes[0], n, stream.decoder)
                )
            return np.concatenate(stream.decoded)

    def finish(self, key: Hashable) -> GenerationResult:
        """Detokenize a complete request and return its result; it leaves this batch."""
        result = self.finish_many([key])[key]
        if isinstance(result, Exception):
            raise result
        return result

    def finish_many(self, keys: list[Hashable]) -> dict[Hashable, GenerationResult | Exception]:
        """Detokenize complete requests in one tokenizer call (pixels within one level per
        channel of a solo decode) and return each one's result, or the error that stopped it;
        they leave this batch. Safe to call from another thread than `step`'s."""
        self._match_threads()
        p = self.pipeline
        with self._lock:
            streams = {key: self.streams.pop(key) for key in keys}
        results: dict[Hashable, GenerationResult | Exception] = {}
        if "visual_out" in self.layout.segments:
            t = 1 if self.task is Task.text_to_image else p.shapes.t_clip
            h, w = p.shapes.latent_hw
            # rows bound for the SR stage: it reads their codes, one row at a time
            upscaled = {k for k, s in streams.items() if p.upscales(s.row.spec)}
            plain = [k for k in streams if k not in upscaled]
            for key in upscaled:
                stream = streams[key]
                try:
                    with torch.inference_mode():
                        codes = self._visual(stream, cast(torch.Tensor, stream.tokens)[None])
                    row = stream.row
                    row.frames = p.upscale_codes(
                        codes.reshape(t, h, w),
                        row.spec.prompt,
                        row.seed,
                        _RowClock(stream.timings),
                        row,
                    )
                except Exception as exc:
                    results[key] = exc
            # rows whose previews decoded their first latent frames: the rest, carried on
            for key in [k for k in plain if streams[k].decoded]:
                plain.remove(key)
                stream = streams[key]
                t0 = time.perf_counter()
                try:
                    with torch.inference_mode(), stream.decoding:
                        codes = self._visual(stream, cast(torch.Tensor, stream.tokens)[None])
                        if stream.decoder.latent_frames < t:
                            stream.decoded.append(
                                p.decode_video_carried(codes[0], t, stream.decoder)
                            )
                        stream.row.frames = np.concatenate(stream.decoded)
                    stream.timings["detokenize"] = time.perf_counter() - t0
                except Exception as exc:
                    results[key] = exc
            t0 = time.perf_counter()
            try:
                if plain:
                    with torch.inference_mode():
                        codes = torch.cat(
                            [
                                self._visual(
                                    streams[k], cast(torch.Tensor, streams[k].tokens)[None]
                                )
                                for k in plain
                            ]
                        )
                        frames = p.decode_video_tokens(codes, t)
            except Exception as exc:  # the shared decode: each of them gets the error
                results.update(dict.fromkeys(plain, exc))
                plain = []
            spent = time.perf_counter() - t0
            for key, f in zip(plain, frames if plain else []):
                streams[key].row.frames = f
                streams[key].timings["detokenize"] = spent
        for key, stream in streams.items():
            if key in results:  # its decode failed
                continue
            try:
                results[key] = self._result(stream)
            except Exception as exc:
                results[key] = exc
        return results

    def _result(self, stream: _Stream) -> GenerationResult:
        p, row = self.pipeline, stream.row
        if self.task in (Task.unconditional, Task.text_to_video, Task.image_to_video):
            row.frames = row.frames[: row.new_frames]
        if self.task is Task.audio_to_video:  # the result plays the audio it was made from
            from models.conditioning import fit_samples

            row.audio = fit_samples(
                row.audio, round(len(row.frames) / p.card.fps * p.card.sample_rate)
            )
        card = p.card
        return GenerationResult(
            frames=row.frames,
            fps=card.fps,
            audio=None if row.audio is None else row.audio.astype(np.float32),
            sample_rate=None if row.audio is None else card.sample_rate,
            seed=row.seed,
            tokens={"prefix": row.prefix_tokens, "generated": row.generated_tokens},
            timings=dict(stream.timings),
            time_to_first_token=stream.first_token,
        )

    def _match_threads(self) -> None:
        """Another thread runs torch ops with the default thread count (every core): give it
        the one the batch was opened with (VIDEOPOET_TORCH_THREADS), so the decoding beside
        the sampling does not oversubscribe the cores."""
        if torch.get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)

    # ------------------------------------------------------------------ per task

    def _condition(self, row: _Row, clock: _RowClock) -> dict:
        """The request's condition tokens, as `Pipeline._run_group` makes them for its task."""
        p, task = self.pipeline, self.task
        if task is Task.image_to_video:
            image = p._encode_video([row.frames], clock).flatten(1)  # (1, h*w)
            return {"assemble": {"visual_in": image}, "visual_prefix": image}
        if task is Task.stylize:
            from models.conditioning import stylize_control

            control = p._encode_video([stylize_control(row.frames)], clock).flatten(1)
            return {"assemble": {"visual_in": control}}
        if task is Task.audio_to_video:
            return {"assemble": {"audio_in": p._encode_audio([row.audio], clock)}}
        if task in (Task.inpaint, Task.outpaint):
            from models.conditioning import latent_box_mask

            tokens = p._encode_video([row.frames], clock)  # (1, t, h, w)
            src = row.inputs.video.shape[1:3]
            box = latent_box_mask(row.spec.mask_box, src, p.shapes.latent_hw)
            keep = box if task is Task.inpaint else ~box
            masked = torch.from_numpy(keep)[None, None].to(tokens.device).expand_as(tokens)
            visual_in = torch.where(masked, -1, tokens).flatten(1)
            return {"assemble": {"visual_in": visual_in, "visual_out_known": visual_in}}
        return {"assemble": {}}

    def _visual(self, stream: _Stream, tokens: torch.Tensor) -> torch.Tensor:
        """Flat visual codes to decode (1, n): the output's, after the input image's."""
        codes = split_output(self.layout, self.pipeline.vocab, tokens)["visual_out"]
        before = stream.content.get("visual_prefix")
        return codes if before is None else torch.cat([before.to(codes.device), codes], dim=1)

    @staticmethod
    def _input_frames_tokens(stream: _Stream) -> int:
        before = stream.content.get("visual_prefix")
        return 0 if before is None else before.shape[1]


class _RowClock:
    """The `_Clock` interface the pipeline's helpers time themselves with, for one row."""

    def __init__(self, timings: dict[str, float]):
        self.timings = timings

    def add(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds
