"""Shared fixtures.

Real datasets are found through ``$ENCSHIELD_DATA`` (CI points it at ``../shared/data``); tests
that need them skip with a reason where it is absent. Every test run uses its own cache
directory so that results never depend on a cache left by an earlier run; the worker processes
of one parallel run (pytest-xdist, ``make test``) share it, so each dataset is decoded once, and
each worker runs torch on its share of the cores (no OpenMP oversubscription).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, _workers)))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, shared by its workers (each has popen-gwN below)
    cache = base / "encshield-cache"
    cache.mkdir(exist_ok=True)
    os.environ["ENCSHIELD_CACHE"] = str(cache)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real datasets (``$ENCSHIELD_DATA``); skips the test where it is absent."""
    env = os.environ.get("ENCSHIELD_DATA")
    if not env:
        pytest.skip("ENCSHIELD_DATA is not set: the real datasets are not available here")
    root = Path(env)
    if not root.is_dir():
        pytest.skip(f"ENCSHIELD_DATA={env} is not a directory")
    return root
