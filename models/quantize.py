"""Int8 weight-only quantization of the LM (`VIDEOPOET_QUANTIZE=int8`).

Each linear layer of the transformer blocks and the output head keeps its weight as int8 with
one scale per output row (symmetric: the row's largest magnitude maps to 127); activations,
the KV cache and every other weight stay in the LM's dtype. A layer computes
`(x @ int8_weight.T) * scale`, the int8 weight widened to the activations' dtype inside the
matmul's call, so the weight read per step is a quarter of float32's and half of bfloat16's.

Where it pays: decoding a large LM on a GPU reads every weight once per step and is bound by
memory bandwidth, so halving the bytes is worth up to 2x per step once the widening is fused
into the matmul (`VIDEOPOET_COMPILE=1`; in eager mode the widened weight is written out
first). On a CPU with a small LM the weights sit in cache and the widening is pure extra work:
docs/performance.md has the measured figures and the quality cost (token agreement, eval rows).
The text path (caption projections, pooling), the embeddings and the tokenizers are not
quantized: they run once per video or are lookups.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

QUANTIZE_MODES = ("none", "int8")


class Int8Linear(nn.Module):
    """A bias-free linear layer whose weight is int8 with a per-output-row scale."""

    def __init__(self, weight_int8: torch.Tensor, scales: torch.Tensor):
        super().__init__()
        self.out_features, self.in_features = weight_int8.shape
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scales", scales)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        if linear.bias is not None:
            raise ValueError("Int8Linear quantizes bias-free layers only")
        w = linear.weight.detach().float()
        scales = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
        q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        return cls(q, scales.to(linear.weight.dtype))

    def dequantized(self) -> torch.Tensor:
        return self.weight_int8.to(self.scales.dtype) * self.scales[:, None]

    def forward(self, x: torch.Tensor, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """x @ W[lo:hi].T: rows [lo, hi) of the output only (the LM scores one id range)."""
        w, s = self.weight_int8[lo:hi], self.scales[lo:hi]
        return F.linear(x, w.to(x.dtype)) * s.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def int8_linears(module: nn.Module) -> nn.Module:
    """Replace every bias-free nn.Linear below `module` by its Int8Linear, in place."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child.bias is None:
                setattr(parent, name, Int8Linear.from_linear(child))
    return module


def quantize_lm(lm: nn.Module, mode: str) -> nn.Module:
    """Quantize a PrefixLM's block linears and output head in place (mode "int8"); "none":
    leave it as it is."""
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}; got {mode!r}")
    if mode == "int8":
        int8_linears(lm.layers)
        lm.output = Int8Linear.from_linear(lm.output)
    return lm


def weight_bytes(module: nn.Module) -> int:
    """Bytes of the weights: parameters and int8 layers' buffers (shared ones counted once)."""
    seen: set[int] = set()
    total = 0
    int8 = [t for m in module.modules() if isinstance(m, Int8Linear) for t in m.buffers()]
    for t in [*module.parameters(), *int8]:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total
