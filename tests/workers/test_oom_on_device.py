"""The batched out-of-memory fallback (workers/jobs.py) on the best device present: a batch
whose shared sampling runs out of GPU memory is sampled again one video at a time, and each
video gets what it gets alone. On CUDA the batch really runs out (an allocation larger than
the GPU); on the CPU the same error is raised by hand. `benchmarks/gpu_check.py` runs it on a
GPU machine."""

from types import SimpleNamespace

import numpy as np
import torch

from models.pipeline import load_pipeline
from models.spec import GenerationInputs, Task, TaskSpec
from workers.jobs import ProgressReporter, VideoBatch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class OutOfMemoryInBatches:
    """The tiny pipeline on DEVICE, except that a batch of more than one video runs out of
    memory."""

    def __init__(self):
        self.inner = load_pipeline("tiny", device=DEVICE)
        self.card = self.inner.card
        self.batches: list[int] = []

    def generate(self, spec, inputs=None, progress=None, should_cancel=None):
        return self.inner.generate(spec, inputs, progress=progress, should_cancel=should_cancel)

    def generate_batch(self, specs, inputs, progress=None, should_cancel=None):
        self.batches.append(len(specs))
        if len(specs) > 1:
            if DEVICE == "cuda":
                _, total = torch.cuda.mem_get_info()
                torch.empty(2 * total, dtype=torch.uint8, device="cuda")  # more than there is
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (raised by hand on the CPU)")
        return self.inner.generate_batch(
            specs, inputs, progress=progress, should_cancel=should_cancel
        )


def test_a_batch_out_of_memory_runs_each_video_alone():
    pipeline = OutOfMemoryInBatches()
    specs = [TaskSpec(task=Task.text_to_image, prompt=f"shape {i}", seed=i) for i in range(3)]
    rows = [(f"video_{i}", spec, GenerationInputs()) for i, spec in enumerate(specs)]
    if DEVICE == "cuda":
        before = torch.cuda.memory_allocated()
    results = VideoBatch(SimpleNamespace(pipeline=pipeline), []).generate(
        rows, ProgressReporter(store=None)
    )
    assert pipeline.batches == [3, 1, 1, 1]  # the batch, then each video alone
    for spec, result in zip(specs, results):
        assert not isinstance(result, Exception), result
        alone = pipeline.inner.generate(spec)
        np.testing.assert_array_equal(result.frames, alone.frames)
    if DEVICE == "cuda":
        assert torch.cuda.memory_allocated() <= before + 64 * 2**20
