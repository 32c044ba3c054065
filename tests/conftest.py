"""Shared test settings."""

import torch

# One intra-op thread: results do not depend on the thread count, and parallel test runs on a
# small machine do not oversubscribe its cores.
torch.set_num_threads(1)
