"""The one exception training code raises for a mistake the user can fix."""

from __future__ import annotations


class TrainingError(ValueError):
    """A run that cannot start or go on: a bad flag, checkpoint folder or data file.

    The message says what is wrong and what to do; `main_train` prints it as one line."""
