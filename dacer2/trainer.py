"""Kept for `from dacer2.trainer import train` (the public training entry point): the loop lives in
dacer2/train/trainer.py."""

from dacer2.train.trainer import *  # noqa: F401,F403
from dacer2.train.trainer import __all__, train  # noqa: F401
