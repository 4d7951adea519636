import os

import pytest
import torch

# The suite's models are tiny: one thread beats two (thread hand-offs cost more than the work).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_leaked_global_seed():
    """`pl.seed_everything` (every pipeline run) leaves PL_GLOBAL_SEED in the environment, and
    Lightning reseeds DDP ranks spawned later from it: a test would then see another test's seed."""
    yield
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        os.environ.pop(name, None)
