import pytest

from models import shapes_av as av
from research import placement_probe as probe


def test_placement_probe_reads_the_start_and_the_motion_of_each_prompt(capsys):
    """The start test agrees with shapes_av's boxes on true clips, and a run prints a row per
    prompted motion (a tiny random LM, so only the shape of the answer)."""
    for s in range(6):
        clip = av.generate_clip(s, split="train")
        lab = clip.labels
        assert probe.start_fits(clip.frames[0], lab["size"], lab["motion"], 1.0)  # its own box
        if lab["motion"] in ("left", "right"):
            other = "right" if lab["motion"] == "left" else "left"
            assert not probe.start_fits(clip.frames[0], lab["size"], other, 1.0)
    assert probe.chance_of_fit("large", "still") == 1.0
    assert 0.2 < probe.chance_of_fit("large", "left") < 0.6

    table = probe.main(["--model", "tiny", "--n", "4"])
    assert sum(r["clips"] for k, r in table.items() if k != probe.MOVING) == 4
    assert all(0 <= r["start fits"] <= 1 and 0 <= r["motion right"] <= 1 for r in table.values())
    assert "| prompted motion |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no grid"):  # tiny has no grid tables to zero
        probe.main(["--model", "tiny", "--n", "1", "--without", "grid"])
