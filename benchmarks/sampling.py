"""LM sampling speed against Hugging Face `generate()` on a model of the same shape.

    .venv/bin/python benchmarks/sampling.py [--shapes demo wide] [--batches 1 8] [--repeat 3]
        [--threads N] [--compile] [--quantize int8]

Both run in this process on the same device, float32 on CPU: ours is models/generate.py over
a PrefixLM; theirs is a `transformers` LlamaForCausalLM with the same layers, width, heads,
SwiGLU width and vocabulary, sampling (top-k off) with its KV cache, min_new_tokens =
max_new_tokens so both make exactly the same number of tokens after the same prefix length.
The two are timed alternately (best of --repeat) so background load hits both alike.
`--quantize int8` gives both the same int8 weight-only layers (models/quantize.py: ours as
VIDEOPOET_QUANTIZE=int8 keeps them, HF's decoder layers and head by the same function).
The last line printed is JSON.

`--device cuda` times the videopoet-1b shape in bf16 and the fraction of the memory-bandwidth
bound (weight bytes read per step / bandwidth) it reaches; it needs a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.generate import SamplingParams, compile_decode_step, generate_tokens  # noqa: E402
from models.lm import LM_PRESETS, LMConfig, PrefixLM  # noqa: E402
from models.pipeline import ModelConfig  # noqa: E402
from models.quantize import Int8Linear, int8_linears, quantize_lm, weight_bytes  # noqa: E402
from models.spec import Task  # noqa: E402
from models.vocab import assemble  # noqa: E402

# "wide": a larger shape than demo, still CPU-sized.
EXTRA_SHAPES = {"wide": dict(dim=512, n_layers=8, n_heads=8)}


def build_ours(shape: str, device: str, dtype: torch.dtype):
    config = ModelConfig.from_name("demo")
    if shape in EXTRA_SHAPES or shape != "demo":
        lm = dict(vars(config.lm))
        lm.pop("ffn_hidden")
        lm.update(EXTRA_SHAPES.get(shape) or LM_PRESETS[shape])
        config.lm = LMConfig(**lm)
    if shape.startswith("videopoet"):
        config = ModelConfig.from_name(shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = PrefixLM(config.lm)
    model.init_weights()
    return config, model.to(dtype).eval()


def build_hf(lm: LMConfig, device: str, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=lm.vocab_size,
        hidden_size=lm.dim,
        intermediate_size=lm.ffn_hidden,
        num_hidden_layers=lm.n_layers,
        num_attention_heads=lm.n_heads,
        num_key_value_heads=lm.n_heads,
        max_position_embeddings=lm.max_seq_len,
        tie_word_embeddings=False,
        rope_theta=lm.rope_base,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval()


def bench(
    shape: str,
    batch: int,
    device: str,
    dtype: torch.dtype,
    repeat: int,
    compiled: bool = False,
    quantize: str = "none",
) -> dict:
    config, ours = build_ours(shape, device, dtype)
    step = compile_decode_step() if compiled else None  # VIDEOPOET_COMPILE=1 in the service
    hf = build_hf(config.lm, device, dtype)
    if quantize == "int8":
        quantize_lm(ours, quantize)
        int8_linears(hf.model.layers)
        hf.lm_head = Int8Linear.from_linear(hf.lm_head)
    from models.pipeline import TaskShapes

    layout = TaskShapes(config).layouts()[Task.text_to_video]
    text = torch.randn(batch, config.text_tokens, 384)
    mask = torch.ones(batch, config.text_tokens, dtype=torch.bool)
    tb = assemble(layout, config.vocab, text=text.to(dtype), text_mask=mask)
    new_tokens = (
        layout.length - layout.prefix_len - 2
    )  # the trailing <eov_o> <eos> are written, not sampled
    prefix = layout.prefix_len
    ids = torch.randint(0, config.lm.vocab_size, (batch, prefix), device=device)

    def run_ours():
        params = SamplingParams.for_rows(
            range(batch),
            [1.0] * batch,
            [None] * batch,
            [None] * batch,
            [1.0] * batch,
            device=device,
        )
        generate_tokens(ours, config.vocab, tb, params, static_step=step)

    def run_hf():
        hf.generate(
            ids,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=True,
            top_k=0,
            pad_token_id=0,
            attention_mask=torch.ones_like(ids),
        )

    def timed(fn):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    with torch.inference_mode():
        run_ours(), run_hf()  # warm-up
        ours_s, hf_s = [], []
        for _ in range(repeat):
            ours_s.append(timed(run_ours))
            hf_s.append(timed(run_hf))
    ours_tps = batch * new_tokens / min(ours_s)
    hf_tps = batch * new_tokens / min(hf_s)
    row = {
        "shape": shape,
        "batch": batch,
        "device": device,
        "dtype": str(dtype).replace("torch.", ""),
        "layers": config.lm.n_layers,
        "dim": config.lm.dim,
        "heads": config.lm.n_heads,
        "vocab": config.lm.vocab_size,
        "prefix": prefix,
        "new_tokens": new_tokens,
        "ours_tokens_per_s": round(ours_tps, 1),
        "hf_tokens_per_s": round(hf_tps, 1),
        "ratio": round(ours_tps / hf_tps, 2),
        "threads": torch.get_num_threads(),
        "compiled": compiled,
        "quantize": quantize,
    }
    if device == "cuda":
        read = weight_bytes(ours)  # a step reads every weight but the embedding tables
        read -= ours.tok_embeddings.weight.numel() * ours.tok_embeddings.weight.element_size()
        bandwidth = float(getattr(bench, "bandwidth", 3.35e12))  # H100 SXM HBM3, bytes/s
        step_s = min(ours_s) / new_tokens
        row["bandwidth_bound_fraction"] = round(read / bandwidth / step_s, 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", nargs="+", default=None)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="ours with the compiled fixed-shape decode step (VIDEOPOET_COMPILE=1)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument(
        "--quantize",
        choices=["none", "int8"],
        default="none",
        help="int8: both models with the same int8 weight-only linears (VIDEOPOET_QUANTIZE)",
    )
    parser.add_argument(
        "--bandwidth", type=float, default=3.35e12, help="bytes/s, for --device cuda"
    )
    args = parser.parse_args()
    cuda = args.device == "cuda"
    shapes = args.shapes or (["videopoet-1b"] if cuda else ["demo", "wide"])
    dtype = torch.bfloat16 if cuda else torch.float32
    bench.bandwidth = args.bandwidth
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for shape in shapes:
        for batch in args.batches:
            row = bench(shape, batch, args.device, dtype, args.repeat, args.compile, args.quantize)
            rows.append(row)
            print(
                f"{shape:>12} batch {batch}: ours {row['ours_tokens_per_s']:>9} tok/s, "
                f"HF generate {row['hf_tokens_per_s']:>9} tok/s, ratio {row['ratio']}x"
                + (
                    f", {row['bandwidth_bound_fraction']:.0%} of the bandwidth bound"
                    if cuda
                    else ""
                ),
                flush=True,
            )
    print(json.dumps({"benchmark": "sampling", "results": rows}))


if __name__ == "__main__":
    main()
