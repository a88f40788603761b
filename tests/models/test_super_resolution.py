"""The super-resolution stage (models/super_resolution.py) on its tiny preset."""

import pytest
import torch

from models.super_resolution import (
    AxisAttention,
    SRConfig,
    SuperResolution,
    masked_loss,
    sample,
)


def _model(**overrides) -> SuperResolution:
    torch.manual_seed(0)
    model = SuperResolution(SRConfig.from_name("tiny", **overrides))
    model.init_weights()
    return model.eval()


def _inputs(model: SuperResolution, B: int = 2):
    c = model.config
    g = torch.Generator().manual_seed(1)
    low = torch.randint(0, 2**c.codebook_bits, (B, *c.low_grid), generator=g)
    text = torch.randn(B, 6, c.text_dim, generator=g)
    mask = torch.ones(B, 6, dtype=torch.bool)
    mask[-1, 3:] = False  # the last row's caption is shorter
    return low, text, mask


def test_sampling_gives_the_high_resolution_token_grid_and_one_seed_one_output() -> None:
    model = _model()
    low, text, mask = _inputs(model)
    out = sample(model, low, text, mask, seeds=[5, 6], steps=4)
    assert out.shape == (2, 5, 8, 8) and out.dtype == torch.long  # (B, t, 2h, 2w)
    assert 0 <= int(out.min()) and int(out.max()) < 2**model.config.codebook_bits
    again = sample(model, low, text, mask, seeds=[5, 6], steps=4)
    assert torch.equal(out, again)
    other = sample(model, low, text, mask, seeds=[7, 8], steps=4)
    assert not torch.equal(out, other)
    greedy = sample(model, low, text, mask, seeds=[1, 2], steps=4, temperature=0)
    assert torch.equal(greedy, sample(model, low, text, mask, seeds=[3, 4], steps=4, temperature=0))


def test_guidance_1_is_plain_sampling_and_runs_no_unconditional_pass() -> None:
    model = _model()
    low, text, mask = _inputs(model)
    batches = []
    hook = model.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    plain = sample(model, low, text, mask, seeds=[5, 6], steps=3)
    assert batches == [2, 2, 2]  # one pass a step, the rows alone
    batches.clear()
    one = sample(model, low, text, mask, seeds=[5, 6], steps=3, guidance=1.0)
    assert torch.equal(plain, one) and batches == [2, 2, 2]
    batches.clear()
    guided = sample(model, low, text, mask, seeds=[5, 6], steps=3, guidance=4.0)
    assert batches == [4, 4, 4]  # conditional and unconditional rows together
    assert not torch.equal(plain, guided)
    hook.remove()


def test_factorized_codes_split_and_join_back() -> None:
    model = _model(code_groups=2)
    assert model.config.group_size == 16 and model.output.out_features == 32
    codes = torch.arange(256).view(4, 64)
    sub = model.split_codes(codes)
    assert sub.shape == (4, 64, 2) and int(sub.max()) == 15
    assert torch.equal(sub.view(-1, 2)[0x5A], torch.tensor([0x5, 0xA]))  # most significant first
    assert torch.equal(model.join_codes(sub), codes)
    low, text, mask = _inputs(model)
    out = sample(model, low, text, mask, seeds=[0, 1], steps=2)
    assert out.shape == (2, 5, 8, 8) and int(out.max()) < 256


def test_attention_stays_within_its_window() -> None:
    c = SRConfig.from_name("tiny", window=4)  # columns 0-3 and 4-7 are two windows
    torch.manual_seed(0)
    attn = AxisAttention(c, "w")
    x = torch.randn(1, 5, 8, 8, c.dim)
    y = attn(x)
    x2 = x.clone()
    x2[:, :, :, 1] += 1.0  # change a token of the first window
    y2 = attn(x2)
    assert torch.equal(y[..., 4:, :], y2[..., 4:, :])  # the second window never saw it
    assert not torch.allclose(y[..., :4, :], y2[..., :4, :])
    # and along time, every latent frame of a column sees every other
    t_attn = AxisAttention(c, "t")
    x3 = x.clone()
    x3[:, 0] += 1.0
    assert not torch.allclose(t_attn(x)[:, 4], t_attn(x3)[:, 4])


def test_masked_training_learns_the_tokens_of_a_clip() -> None:
    model = _model()
    model.train()
    c = model.config
    g = torch.Generator().manual_seed(3)
    high = torch.randint(0, 2**c.codebook_bits, (2, *c.grid), generator=g)
    low, text, mask = _inputs(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = masked_loss(model, high, low, text, mask, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert first > 4.5 and last < 1.0  # from chance (ln 256 = 5.5) to the clip
    # and sampling from nothing but the low-resolution tokens and the text draws it back
    model.eval()
    out = sample(model, low, text, mask, seeds=[0, 1], temperature=0)
    assert (out == high).float().mean() > 0.9


def test_configs_that_cannot_work_are_refused_with_what_is_accepted() -> None:
    with pytest.raises(ValueError, match="split evenly"):
        SRConfig(codebook_bits=9, code_groups=2)
    with pytest.raises(ValueError, match="multiple of it"):
        SRConfig(grid=(5, 24, 24), window=16)
    with pytest.raises(ValueError, match="one of tiny, demo"):
        SRConfig.from_name("huge")
    model = _model()
    low, text, mask = _inputs(model)
    with pytest.raises(ValueError, match=r"expected high \(B, \(5, 8, 8\)"):
        model(torch.zeros(1, 5, 6, 6, 1, dtype=torch.long), low[:1], None, None)
    with pytest.raises(ValueError, match="one seed per row"):
        sample(model, low, text, mask, seeds=[1])
