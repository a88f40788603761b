import pytest
import torch

from models.generate import decode_one_token, prefill
from models.lm import LMConfig, PrefixLM, prefix_mask


def _model(seed=0):
    torch.manual_seed(seed)
    model = PrefixLM(LMConfig(dim=32, n_layers=2, n_heads=4, vocab_size=50, max_seq_len=64))
    model.init_weights()
    return model.eval()


def _inputs(B=2, S=20, P=8, text=(2, 6)):
    torch.manual_seed(1)
    ids = torch.randint(0, 50, (B, S))
    text_states = torch.randn(B, text[1] - text[0], 384)
    key_valid = torch.ones(B, S, dtype=torch.bool)
    key_valid[B - 1, 4:6] = False  # the last row's text is shorter: padding masked out
    return ids, text_states, key_valid, P, slice(*text)


@torch.no_grad()
def test_cached_decode_equals_full_forward():
    model = _model()
    ids, text, key_valid, P, text_slice = _inputs()
    B, S = ids.shape
    x = model.embed(ids, text, text_slice)
    full = model.logits(model(x, torch.arange(S), prefix_mask(key_valid, P)))  # (B, S, V)

    model.setup_caches(B, 64)
    valid = torch.zeros(B, 64, dtype=torch.bool)
    valid[:, :S] = key_valid
    steps = [model.logits(prefill(model, model.embed(ids[:, :P], text, text_slice), valid, P))]
    for pos in range(P, S - 1):
        steps.append(model.logits(decode_one_token(model, ids[:, pos], pos, valid)))
    cached = torch.stack(steps, dim=1)  # predictions for positions P .. S-1
    torch.testing.assert_close(cached, full[:, P - 1 : S - 1], atol=1e-4, rtol=1e-4)


def test_prefix_mask_is_bidirectional_in_prefix_and_causal_after():
    key_valid = torch.ones(1, 6, dtype=torch.bool)
    key_valid[0, 1] = False
    mask = prefix_mask(key_valid, prefix_len=3)[0, 0]
    assert mask[0, 2] and mask[2, 0]  # prefix positions see each other, both ways
    assert not mask[0, 1] and not mask[4, 1]  # a padded key is seen by nobody
    assert mask[4, 3] and mask[4, 4] and not mask[3, 4] and not mask[4, 5]  # causal after
    assert mask.any(-1).all()  # no query is left with nothing to attend


@torch.no_grad()
def test_output_positions_never_see_later_ones_and_prefix_sees_whole_prefix():
    model = _model()
    ids, text, key_valid, P, text_slice = _inputs(B=1)
    S = ids.shape[1]

    def hidden(ids):
        return model(model.embed(ids, text, text_slice), torch.arange(S), prefix_mask(key_valid, P))

    base = hidden(ids)
    later = ids.clone()
    later[0, 15] = (later[0, 15] + 1) % 50
    changed = hidden(later)
    torch.testing.assert_close(changed[:, :15], base[:, :15])  # nothing before 15 moves
    assert not torch.allclose(changed[:, 15:], base[:, 15:])
    in_prefix = ids.clone()
    in_prefix[0, P - 1] = (in_prefix[0, P - 1] + 1) % 50
    assert not torch.allclose(hidden(in_prefix)[:, 0], base[:, 0])  # position 0 sees P-1


def test_setup_caches_refuses_sequences_longer_than_the_context():
    model = _model()
    try:
        model.setup_caches(1, 65)
    except ValueError as err:
        assert "context of 64" in str(err)
    else:
        raise AssertionError("no error for a sequence past the context")


def _captioned(seed=0):
    """The test model with the caption path (`text_global`), its projection made non-zero."""
    torch.manual_seed(seed)
    model = PrefixLM(
        LMConfig(dim=32, n_layers=2, n_heads=4, vocab_size=50, max_seq_len=64, text_global=True)
    )
    model.init_weights()
    assert not model.text_global.weight.any()  # starts as the model without it
    torch.nn.init.normal_(model.text_global.weight, std=0.5)
    return model.eval()


@torch.no_grad()
def test_caption_path_is_given_at_every_decoding_step():
    model = _captioned()
    ids, text, key_valid, P, text_slice = _inputs()
    B, S = ids.shape
    caption = model.caption_vector(text, key_valid[:, text_slice])
    full = model.logits(
        model(
            model.embed(ids, text, text_slice),
            torch.arange(S),
            prefix_mask(key_valid, P),
            caption=caption,
        )
    )
    # the path changes what the model predicts: without it the outputs differ
    plain = model.logits(
        model(model.embed(ids, text, text_slice), torch.arange(S), prefix_mask(key_valid, P))
    )
    assert (plain - full).abs().max() > 1e-2
    model.setup_caches(B, 64)
    valid = torch.zeros(B, 64, dtype=torch.bool)
    valid[:, :S] = key_valid
    steps = [
        model.logits(prefill(model, model.embed(ids[:, :P], text, text_slice), valid, P, caption))
    ]
    for pos in range(P, S - 1):
        steps.append(model.logits(decode_one_token(model, ids[:, pos], pos, valid, caption)))
    torch.testing.assert_close(
        torch.stack(steps, dim=1), full[:, P - 1 : S - 1], atol=1e-4, rtol=1e-4
    )


@torch.no_grad()
def test_caption_vector_averages_the_rows_own_text_and_is_zero_without_text():
    model = _captioned()
    _, text, key_valid, _, text_slice = _inputs()
    mask = key_valid[:, text_slice]  # row 1 has 2 of 4 text states
    caption = model.caption_vector(text, mask)
    assert caption.shape == (2, 1, 32)
    torch.testing.assert_close(caption[1, 0], model.text_global(text[1, :2].mean(0)))
    torch.testing.assert_close(caption[0, 0], model.text_global(text[0].mean(0)))
    # a row whose text is dropped (classifier-free guidance's unconditional rows): nothing added
    assert not model.caption_vector(torch.zeros_like(text), torch.zeros_like(mask)).any()
    assert _model().caption_vector(text, mask) is None  # a model without the path


@torch.no_grad()
def test_attention_pooled_caption_starts_at_zero_and_reads_only_the_rows_own_words():
    torch.manual_seed(0)
    model = PrefixLM(
        LMConfig(
            dim=32,
            n_layers=2,
            n_heads=4,
            vocab_size=50,
            max_seq_len=64,
            text_global=True,
            text_pool_heads=2,
        )
    )
    model.init_weights()
    _, text, key_valid, _, text_slice = _inputs()
    mask = key_valid[:, text_slice]  # row 1 has 2 of 4 text states
    torch.nn.init.normal_(model.text_global.weight, std=0.5)
    mean_only = model.caption_vector(text, mask)
    torch.testing.assert_close(
        mean_only[1, 0], model.text_global(text[1, :2].mean(0))
    )  # new path: zero
    torch.nn.init.normal_(model.text_pool.weight, std=0.5)
    pooled = model.caption_vector(text, mask)
    assert (pooled - mean_only).abs().max() > 1e-2  # the pooled path now adds to it
    # row 1's pooling sees its 2 states only: what lies past its mask does not change it
    moved = text.clone()
    moved[1, 2:] += 5.0
    torch.testing.assert_close(model.caption_vector(moved, mask)[1], pooled[1])
    # a row without text still gets nothing (classifier-free guidance's unconditional rows)
    assert not model.caption_vector(torch.zeros_like(text), torch.zeros_like(mask)).any()
    with pytest.raises(ValueError, match="text_global"):
        PrefixLM(LMConfig(dim=32, n_layers=2, n_heads=4, vocab_size=50, text_pool_heads=2))


def _gridded(seed=0):
    """The test model with grid positions for 2 latent frames of 2 x 3 tokens, tables made non-zero."""
    torch.manual_seed(seed)
    model = PrefixLM(
        LMConfig(
            dim=32,
            n_layers=2,
            n_heads=4,
            vocab_size=50,
            max_seq_len=64,
            grid_positions=True,
            grid_size=(2, 2, 3),
        )
    )
    model.init_weights()
    assert not any(t.weight.any() for t in model.grid)  # starts as the model without them
    for table in model.grid:
        torch.nn.init.normal_(table.weight[1:], std=0.5)
    return model.eval()


def _grid_coords(S=20, start=8, frames=2, rows=2, cols=3):
    """(S, 3): positions start.. hold frames x rows x cols visual tokens, the rest none."""
    coords = torch.full((S, 3), -1)
    for j in range(frames * rows * cols):
        coords[start + j] = torch.tensor([j // (rows * cols), j // cols % rows, j % cols])
    return coords


@torch.no_grad()
def test_grid_positions_tell_visual_tokens_their_place_at_every_decoding_step():
    model = _gridded()
    ids, text, key_valid, P, text_slice = _inputs()
    B, S = ids.shape
    grid = _grid_coords(S, start=P - 2)  # the segment straddles the prefix and the output
    x = model.embed(ids, text, text_slice)
    full = model.logits(model(x, torch.arange(S), prefix_mask(key_valid, P), grid=grid))
    plain = model.logits(model(x, torch.arange(S), prefix_mask(key_valid, P)))
    assert (plain - full).abs().max() > 1e-2
    model.setup_caches(B, 64)
    valid = torch.zeros(B, 64, dtype=torch.bool)
    valid[:, :S] = key_valid
    steps = [
        model.logits(prefill(model, model.embed(ids[:, :P], text, text_slice), valid, P, grid=grid))
    ]
    for pos in range(P, S - 1):
        steps.append(model.logits(decode_one_token(model, ids[:, pos], pos, valid, grid=grid)))
    torch.testing.assert_close(
        torch.stack(steps, dim=1), full[:, P - 1 : S - 1], atol=1e-4, rtol=1e-4
    )


@torch.no_grad()
def test_grid_vector_sums_frame_row_and_column_and_is_zero_off_the_grid():
    model = _gridded()
    coords = torch.tensor([[-1, -1, -1], [0, 0, 0], [1, 1, 2], [1, 0, 2]])
    v = model.grid_vector(coords)
    assert not v[0].any()
    frame, row, col = model.grid
    torch.testing.assert_close(v[2], frame.weight[2] + row.weight[2] + col.weight[3])
    # the same column in another row and frame shares the column's part
    torch.testing.assert_close(v[2] - v[3], row.weight[2] - row.weight[1])
