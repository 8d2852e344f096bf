"""``encshield bench``: the benchmark matrix, its SQLite results store and its runner.

* :mod:`encshield.bench.spec`: :class:`BenchConfig` (YAML), :func:`validate_bench`,
  :func:`expand` into content-addressed :class:`Cell` s.
* :mod:`encshield.bench.store`: :class:`ResultsStore` (one row per finished cell).
* :mod:`encshield.bench.cells`: what an ``attack`` / ``model`` / ``evaluate`` cell does.
* :mod:`encshield.bench.runner`: :func:`run_bench` (process pool, resume, progress).
"""

from encshield.bench.runner import BenchSummary, run_bench
from encshield.bench.spec import (
    BenchConfig,
    Cell,
    expand,
    load_bench_config,
    validate_bench,
)
from encshield.bench.store import CellRecord, ResultsStore, artifacts_dir

__all__ = [
    "BenchConfig",
    "BenchSummary",
    "Cell",
    "CellRecord",
    "ResultsStore",
    "artifacts_dir",
    "expand",
    "load_bench_config",
    "run_bench",
    "validate_bench",
]
