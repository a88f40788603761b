import torch

from research import token_probe as probe


def test_token_probe_reads_what_the_codes_hold_and_reports_every_attribute(capsys):
    """The probe finds a label the codes carry, and not one they lack; on `tiny` it prints a
    row per attribute."""
    g = torch.Generator().manual_seed(0)
    labels = [["a", "b", "c"][i % 3] for i in range(150)]
    codes = torch.randint(3, 16, (150, 20), generator=g)
    codes[:, 0] = torch.tensor([i % 3 for i in range(150)])  # codes 0-2 name the label
    bag = probe.bags(codes, 16)
    assert torch.allclose(bag.sum(1), torch.ones(150))
    assert probe.probe_accuracy(bag, labels) == 1.0
    blind = probe.bags(torch.randint(0, 16, (150, 20), generator=g), 16)
    assert probe.probe_accuracy(blind, labels) < 0.6
    result = probe.main(["--model", "tiny", "--n", "20"])
    assert set(result) == set(probe.ATTRIBUTES)
    assert all(0 <= acc <= 1 and 0 < chance <= 1 for acc, chance in result.values())
    assert "| shape | video |" in capsys.readouterr().out

    # the grid probe reads an arrangement that every bag of codes hides: the same two codes,
    # side by side (label a) or one above the other (label b), anywhere on a 6 x 6 grid
    grid = -torch.ones(200, 2, 6, 6)
    labels = []
    for i in range(200):
        y, x = (int(v) for v in torch.randint(0, 5, (2,), generator=g))
        dy, dx = (0, 1) if i % 2 == 0 else (1, 0)
        grid[i, 0, y, x] = grid[i, 1, y + dy, x + dx] = 1
        labels.append("ab"[i % 2])
    flat = ((grid[:, 0] > 0) * 1 + (grid[:, 1] > 0) * 2).flatten(1)
    assert probe.probe_accuracy(probe.bags(flat, 3), labels) < 0.7
    assert probe.grid_probe_accuracy(grid, labels, epochs=30, width=16) > 0.9
    result = probe.main(["--model", "tiny", "--n", "20", "--grid"])
    assert {"shape (grid)", "colour (grid)"} <= set(result)
    assert "| shape (grid) | video, grid |" in capsys.readouterr().out
