"""Ring tests: unique ring names, and no shared-memory object left behind by the suite."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

SHM = Path("/dev/shm")
_counter = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def no_shm_leftovers() -> Iterator[None]:
    """Fails the session when /dev/shm holds rings (`wb-*`) after the suite that it did not
    before (other processes' objects, e.g. multiprocessing semaphores, are not ours to judge)."""
    before = set(SHM.glob("wb-*"))
    yield
    left = sorted(str(p) for p in set(SHM.glob("wb-*")) - before)
    assert not left, f"left in /dev/shm after the test suite: {left}"


@pytest.fixture
def ring_name() -> Iterator[str]:
    """A ring name unique to this process and test. A ring of that name still in /dev/shm after
    the test (its creator did not unlink it) is removed and fails the test."""
    name = f"t{os.getpid()}-{next(_counter)}"
    yield name
    path = SHM / f"wb-{name}"
    if path.exists():
        path.unlink()
        pytest.fail(f"ring {name!r} was left in /dev/shm")
