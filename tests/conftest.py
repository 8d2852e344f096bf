"""Shared fixtures.

Real datasets are found through ``$ENCSHIELD_DATA`` (CI points it at ``../shared/data``); tests
that need them skip with a reason where it is absent. Every test session uses its own cache
directory so that results never depend on a cache left by an earlier run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["ENCSHIELD_CACHE"] = str(tmp_path_factory.mktemp("encshield-cache"))


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
