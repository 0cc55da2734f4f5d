"""Fixtures shared by several test modules."""
from __future__ import annotations

import pytest
import torch

from meltr.cli import main


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add synchronisation, which stalls badly on a loaded 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_tiny_msrvtt(root, n_train: int = 8, n_test: int = 4):
    """A small synthetic MSRVTT under root/raw, prepared into root/prep."""
    assert main(["synth", "--out", str(root / "raw"), "--n-train", str(n_train), "--n-test", str(n_test),
                 "--seconds", "2", "--size", "32", "--captions-per-video", "2"]) == 0
    assert main(["prepare", "--root", str(root / "raw"), "--out", str(root / "prep")]) == 0
    return root
