"""Shared test settings."""

import contextlib
import logging

import pytest
import torch

# One intra-op thread: results do not depend on the thread count, and parallel test runs on a
# small machine do not oversubscribe its cores.
torch.set_num_threads(1)


@pytest.fixture
def restore_logging():
    """`spfl run` configures the root logger for its run: close the handlers a test added and give the test
    session's handlers and level back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            with contextlib.suppress(OSError):
                handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def fresh_grid_tables():
    """Each test starts without the grid tables the allocation solver keeps per link (they change no
    number, but a test that counts what a solve computes must see it computed)."""
    from spfl.simulator.allocation import clear_shared_tables

    clear_shared_tables()
