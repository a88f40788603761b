import pytest
import torch

from models.generate import SamplingParams, filter_logits, generate_tokens
from models.spec import Task
from models.vocab import Kind, assemble, split_output


def test_each_position_samples_only_its_own_kind_of_code(tiny):
    """Visual positions get visual codes, audio level l gets level-l codes, markers are fixed."""
    layout = tiny.layouts[Task.av_continuation]
    vocab = tiny.vocab
    shapes = layout.shapes
    B = 3
    batch = assemble(
        layout,
        vocab,
        text=torch.zeros(B, 64, 384),
        text_mask=torch.zeros(B, 64, dtype=torch.bool),
        visual_in=torch.randint(0, vocab.visual_codes, (B, shapes.visual_in)),
        audio_in=torch.randint(0, vocab.audio_codes, (B, *shapes.audio_in)),
    )
    params = SamplingParams.for_rows([1, 2, 3], [1.5] * B, [None] * B, [None] * B, [1.0] * B)
    out = generate_tokens(tiny.lm, vocab, batch, params)
    P = layout.prefix_len
    for i, kind in enumerate(layout.kinds[P:]):
        fixed = layout.structure[P + i]
        if fixed >= 0:
            assert (out[:, i] == fixed).all()
        else:
            lo, hi = vocab.code_range(kind)
            assert ((out[:, i] >= lo) & (out[:, i] < hi)).all(), (i, Kind(min(kind, Kind.audio)))
    parts = split_output(layout, vocab, out)
    assert parts["visual_out"].shape == (B, shapes.visual_out)
    assert parts["audio_out"].shape == (B, *shapes.audio_out)
    assert parts["audio_out"].min() >= 0 and parts["audio_out"].max() < vocab.audio_codes


def test_known_tokens_are_kept_and_only_masked_cells_are_sampled(tiny):
    layout = tiny.layouts[Task.inpaint]
    vocab = tiny.vocab
    n = layout.shapes.visual_in
    source = torch.randint(0, vocab.visual_codes, (1, n))
    known = source.clone()
    known[0, 5:20] = -1
    batch = assemble(
        layout,
        vocab,
        text=torch.zeros(1, 64, 384),
        text_mask=torch.zeros(1, 64, dtype=torch.bool),
        visual_in=known,
        visual_out_known=known,
    )
    params = SamplingParams.for_rows([0], [1.0], [None], [None], [1.0])
    out = split_output(layout, vocab, generate_tokens(tiny.lm, vocab, batch, params))["visual_out"]
    keep = known[0] >= 0
    assert torch.equal(out[0, keep], source[0, keep])
    assert not torch.equal(out[0, ~keep], source[0, ~keep])  # 15 random cells: resampled


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0], [4.0, 3.0, 2.0, 1.0]])
    kept = (
        filter_logits(logits, top_k=torch.tensor([2, 0]), top_p=torch.tensor([1.0, 1.0]))
        > -torch.inf
    )
    assert kept.tolist() == [[True, True, False, False], [True, True, True, True]]
    # probabilities ~ .64 .24 .09 .03: top_p .7 keeps the first two, .5 the first only
    kept = (
        filter_logits(logits, top_k=torch.tensor([0, 0]), top_p=torch.tensor([0.7, 0.5]))
        > -torch.inf
    )
    assert kept.tolist() == [[True, True, False, False], [True, False, False, False]]


def test_zero_temperature_is_greedy(tiny):
    layout = tiny.layouts[Task.text_to_image]
    batch = assemble(
        layout,
        tiny.vocab,
        text=torch.zeros(2, 64, 384),
        text_mask=torch.zeros(2, 64, dtype=torch.bool),
    )
    params = SamplingParams.for_rows([1, 2], [0.0, 0.0], [None] * 2, [None] * 2, [1.0] * 2)
    out = generate_tokens(tiny.lm, tiny.vocab, batch, params)
    assert torch.equal(out[0], out[1])  # different seeds, same argmax path


@pytest.mark.parametrize("path", [None, "text_global", "grid_positions"])
def test_fixed_shape_decode_step_equals_the_eager_step(tiny, path):
    """The step a compiled (CUDA-graph) decoder runs gives the eager step's hidden states."""
    from models.generate import decode_one_token, decode_one_token_static, prefill

    lm = _with_path(tiny, path)
    layout = tiny.layouts[Task.text_to_video]
    batch = assemble(
        layout,
        tiny.vocab,
        text=torch.randn(2, 64, 384),
        text_mask=torch.ones(2, 64, dtype=torch.bool),
    )
    P = layout.prefix_len
    lm.setup_caches(2, layout.length)
    valid = torch.zeros(2, lm.max_seq_len, dtype=torch.bool)
    valid[:, : layout.length] = batch.key_valid
    with torch.no_grad():
        caption = lm.caption_vector(batch.text, batch.key_valid[:, layout.text_slice])
        assert (caption is not None) == (path == "text_global")
        grid = layout.grid_coords() if path == "grid_positions" else None
        prefill(
            lm, lm.embed(batch.ids[:, :P], batch.text, layout.text_slice), valid, P, caption, grid
        )
        token = torch.tensor([300, 301])
        eager = decode_one_token(lm, token, P, valid, caption, grid)
        static = decode_one_token_static(lm, token, torch.tensor([P]), valid, caption, grid)
        if grid is not None:  # the step reads the new token's place
            assert not torch.allclose(
                static, decode_one_token_static(lm, token, torch.tensor([P]), valid, caption)
            )
    torch.testing.assert_close(static, eager, atol=1e-5, rtol=1e-5)


def _with_path(tiny, path):
    """tiny's LM, or a copy of it with the caption path (LMConfig.text_global) or grid positions,
    their new tensors non-zero."""
    from dataclasses import replace

    from models.lm import PrefixLM

    if path is None:
        return tiny.lm
    torch.manual_seed(0)
    extra = {"grid_size": tiny.config.visual_grid()} if path == "grid_positions" else {}
    out = PrefixLM(replace(tiny.lm.config, **{path: True}, **extra))
    missing, unexpected = out.load_state_dict(tiny.lm.state_dict(), strict=False)
    assert missing and not unexpected
    for name, p in out.named_parameters():
        if name in missing:
            torch.nn.init.normal_(p, std=0.5)
    return out.eval()


@pytest.mark.parametrize("path", [None, "text_global", "grid_positions"])
def test_a_dropped_row_leaves_the_batch_and_the_others_do_not_change(tiny, path):
    """Cancel one row mid-sampling: later steps run without it, the rest equal solo runs (with
    the caption path too: its per-row vector leaves with the row)."""
    lm = _with_path(tiny, path)
    layout = tiny.layouts[Task.text_to_video]
    vocab = tiny.vocab
    B = 3
    text = torch.randn(B, 64, 384)
    mask = torch.zeros(B, 64, dtype=torch.bool)
    mask[:, :6] = True
    seeds, guidance = [11, 12, 13], [1.0, 3.0, 2.0]  # guidance: the doubled batch shrinks too

    def run(rows, drop_rows=None, progress=None):
        batch = assemble(layout, vocab, text=text[rows], text_mask=mask[rows], batch_size=len(rows))
        params = SamplingParams.for_rows(
            [seeds[r] for r in rows],
            [1.0] * len(rows),
            [None] * len(rows),
            [None] * len(rows),
            [guidance[r] for r in rows],
        )
        return generate_tokens(lm, vocab, batch, params, progress=progress, drop_rows=drop_rows)

    sizes: list[int] = []
    hook = lm.register_forward_hook(lambda module, args, out: sizes.append(args[0].shape[0]))
    steps = []
    try:
        out = run(
            [0, 1, 2],
            drop_rows=lambda: {1} if len(steps) >= 20 else (),
            progress=lambda i, n: steps.append(i),
        )
    finally:
        hook.remove()
    assert sizes[0] == 2 * B and sizes[-1] == 2 * (
        B - 1
    )  # prefill with all, the tail without row 1
    for r in (0, 2):
        assert torch.equal(out[r], run([r])[0])
    lo, hi = vocab.code_range(Kind.visual)
    parts = split_output(layout, vocab, out)
    assert parts["visual_out"].min() >= 0 and parts["visual_out"].max() < hi - lo  # still decodable


def test_random_seed_draws_from_the_whole_accepted_range() -> None:
    from models.spec import MAX_SEED, random_seed

    seeds = [random_seed() for _ in range(200)]
    assert all(0 <= s <= MAX_SEED for s in seeds)
    assert sum(s >= 2**62 for s in seeds) > 50  # half of them, were the range whole
