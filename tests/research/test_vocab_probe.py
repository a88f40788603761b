import torch

from models import captions as cap
from models.text_encoder import load_text_encoder
from research import vocab_probe as probe


def test_spans_find_the_colour_phrase_tokens():
    encoder = load_text_encoder("minilm")
    texts = ["A Ball Coloured Red on white", "a red-colored box, 8k"]
    where = probe.spans(encoder, texts, ["red", "red"], 16)
    tokens = [encoder.tokenizer.encode(t).tokens for t in texts]
    assert [[tok for tok, w in zip(ts, row) if w] for ts, row in zip(tokens, where)] == [
        ["red"],
        ["red"],
    ]  # not the "red" of "coloured", nor of "colored"


def test_probe_prints_each_reader_and_held_out_name(capsys):
    """A few captions and steps: the shape of the answer only (accuracies in [0, 1], a row per
    reader and per held-out name)."""
    result = probe.main(["--train", "60", "--heldout", "12", "--steps", "5"])
    printed = capsys.readouterr().out
    for reader in ("word in caption", "token reader", "mean", "attention x4"):
        assert f"| {reader} |" in printed
        assert all(0 <= v <= 1 for v in result["colour"][reader].values())
    for names in cap.HELD_OUT_COLOURS.values():
        assert all(f"| {n} |" in printed for n in names)
    assert set(result["motion"]) == {
        f"{r}, {c} captions" for c in ("template", "broad") for r in ("mean", "attention x4")
    }
    assert 0 <= result["word alone"]["word alone (nearest word)"] <= 1


def test_the_token_reader_reads_the_hue_where_it_is_sure():
    reader = probe.TokenReader(4)
    with torch.no_grad():
        reader.out.weight.zero_()
        reader.out.bias.zero_()
        reader.out.weight[2, 0] = 5.0  # channel 0 says green
    s = torch.zeros(1, 3, 4)
    s[0, 1, 0] = 1.0
    m = torch.tensor([[True, True, False]])
    with torch.no_grad():
        assert int(reader(s, m).argmax(1)) == 2
        s[0, 1, 0] = 0.0
        s[0, 2, 0] = 1.0  # the sure token is padding: not read
        assert int(reader(s, m).argmax(1)) != 2
