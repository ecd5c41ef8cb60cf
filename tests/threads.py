"""One intra-op thread for tests of tiny tensors and small networks: on shared cores the threads only contend with
each other (about 15x slower for the attack tests). A folder's conftest takes the fixture with its scope."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch


def single_thread_fixture(scope: str) -> Callable[[], Iterator[None]]:
    """An autouse fixture that runs its ``scope`` (module, package) with one torch thread, then restores the count."""

    @pytest.fixture(autouse=True, scope=scope)
    def single_thread() -> Iterator[None]:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(threads)

    return single_thread
