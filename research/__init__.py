"""Research: the probes and doc tools behind docs/training_log.md and the README's pictures.

Not part of the served product: the API, the workers and the `videopoet` command never import
it. Each module is a script with an argparse `main(argv)` that reads a checkpoint (or a running
server) through the public names of `models` and prints a table or writes a picture:

    python -m research.word_probe --help
    python -m research.word_probe --model demo --n 24

Probes (what a checkpoint has learnt): audio_code_probe, caption_probe, condition_probe,
control_probe, phrasing_probe, placement_probe, token_probe, vocab_probe, word_probe. Doc tools (pictures
under docs/): contact_sheet (docs/demo_sheet.png) and screenshot (docs/playground.png).
"""

from pathlib import Path

# Where the doc tools write by default: the repository's docs/ folder, wherever they run from.
DOCS = Path(__file__).resolve().parent.parent / "docs"
