import os

import pytest
import torch

# Two cores here and in CI: keep torch from oversubscribing them.
torch.set_num_threads(int(os.environ.get("HQLT_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
