"""`python -m models.train STAGE ...`: see `models.train`."""

from models.train.cli import main_train

main_train()
