"""Shared test setup. Tests run on CPU; a couple of threads keeps the suite steady on the 2-core CI machine."""

import torch

torch.set_num_threads(2)
