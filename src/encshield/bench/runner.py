"""``encshield bench``: run a matrix's cells in a process pool, storing each as it finishes.

Scheduling: a cell is ready once all its dependencies are in the store; ready cells are
submitted to a pool of ``workers`` processes (``spawn``; each with ``threads`` torch threads:
the config's, else ``$OMP_NUM_THREADS``, else ``cpu_count // workers``), or run in this process
when ``workers == 1``. Only this process writes to the store, one transaction per finished cell,
so an interrupted run (Ctrl-C, ``kill -9``, power loss) loses at most the cells that were
running; ``--resume`` recomputes exactly those.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from encshield.bench.cells import run_cell
from encshield.bench.spec import (
    BenchConfig,
    Cell,
    expand,
    validate_bench,
)
from encshield.bench.store import CellRecord, ResultsStore, require_resume
from encshield.config import config_hash
from encshield.progress import progress as progress_bar
from encshield.provenance import machine_info, now_iso, version_info
from encshield.workflows.specs import encoder_identity

__all__ = ["BenchSummary", "run_bench"]


@dataclass
class BenchSummary:
    """What :func:`run_bench` did: cells in the matrix, reused from the store, computed now."""

    store: Path
    total: int
    reused: int
    computed: int
    seconds: float


def _env_threads() -> int | None:
    """``$OMP_NUM_THREADS`` when set to a positive integer (the user's thread budget)."""
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return value if value > 0 else None


def _dep_payload(store: ResultsStore, cell: Cell) -> list[dict[str, Any]]:
    payload = []
    for dep in cell.deps:
        record = store.get(dep)
        if record is None:  # pragma: no cover - the scheduler only submits ready cells
            raise RuntimeError(f"dependency {dep} of {cell.id} is not stored")
        payload.append({"id": dep, "params": record.params, "result": record.result,
                        "artifacts": record.artifacts})
    return payload


def _artifacts_present(store: ResultsStore, record: CellRecord) -> bool:
    return all(store.artifact_path(a["path"]).is_file() for a in record.artifacts.values())


def run_bench(
    config: BenchConfig,
    db_path: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> BenchSummary:
    """Run (or resume) the matrix of ``config`` into the store ``db_path``.

    Args:
        config: a validated :class:`BenchConfig` (checked again here before any work).
        db_path: the SQLite results store (created; its artifacts go next to it).
        resume: continue a store that already holds cells (cells already stored are reused,
            never recomputed or duplicated); without it a non-empty store is an error.
        progress: show a progress bar (cells done, current stage, ETA).
        log: one line per finished cell (default: nothing).
    Raises:
        ConfigError: invalid config / missing data or encoder (before any work), a file that
            is not an encshield store (left unchanged), a store another run is writing (at
            once, before any work), or a non-empty store without ``resume``.
    """
    started = time.perf_counter()
    validate_bench(config)
    identities = {spec: encoder_identity(spec) for spec in config.encoders}
    cells = expand(config, identities)
    store = ResultsStore(db_path)  # refuses a foreign file, locks the store until closed
    try:
        require_resume(store, resume)
        store.set_meta("config", config.model_dump(mode="json"))
        store.set_meta("config_hash", config_hash(config))
        store.set_meta("created", store.meta("created") or now_iso())
        store.set_meta("cells", [c.id for c in cells])  # the report shows this matrix's cells
        done = store.done_ids()
        needed = {c.id for c in cells}
        for cell in cells:  # a stored cell whose files vanished must be recomputed
            if cell.id in done:
                record = store.get(cell.id)
                if record is not None and not _artifacts_present(store, record):
                    store.remove(cell.id)
                    done.discard(cell.id)
        pending = [c for c in cells if c.id not in done]
        reused = len(needed) - len(pending)
        _execute(config, store, pending, progress=progress, log=log or (lambda _: None),
                 already=reused, total=len(cells))
        return BenchSummary(store=Path(db_path), total=len(cells), reused=reused,
                            computed=len(pending), seconds=time.perf_counter() - started)
    finally:
        store.close()


#: Which ready cells start first: the trainings (the longest cells: started first, they do not
#: end the run alone on one worker while the others idle), then the attack fits, then the
#: evaluations; config order within a kind.
_START_ORDER = {"finetune": 0, "model": 1, "attack": 2, "evaluate": 3}


def _execute(config: BenchConfig, store: ResultsStore, pending: list[Cell], *, progress: bool,
             log: Callable[[str], None], already: int, total: int) -> None:
    workers = max(1, min(config.workers, len(pending) or 1))
    threads = config.threads or _env_threads() or max(1, (os.cpu_count() or 1) // workers)
    waiting = list(pending)
    done = store.done_ids()
    with progress_bar("bench", total, enabled=progress, completed=already) as bar:
        pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
                if workers > 1 else None)
        running: dict[Future[Any], tuple[Cell, float]] = {}
        try:
            while waiting or running:
                ready = sorted((c for c in waiting if all(d in done for d in c.deps)),
                               key=lambda c: _START_ORDER.get(c.kind, len(_START_ORDER)))
                for cell in ready[: max(0, workers - len(running))]:
                    waiting.remove(cell)
                    args = (cell.kind, cell.params, _dep_payload(store, cell),
                            str(store.artifacts), cell.id, config.data_root, config.device,
                            threads)
                    bar(0, info=cell.title)
                    if pool is None:
                        begin = time.perf_counter()
                        output = run_cell(*args)
                        _store(store, cell, output, time.perf_counter() - begin, config.device)
                        done.add(cell.id)
                        log(f"done {cell.kind} {cell.id}: {cell.title}")
                        bar(1)
                    else:
                        running[pool.submit(run_cell, *args)] = (cell, time.perf_counter())
                if not running:
                    if waiting and not ready:  # pragma: no cover - expand() orders cells
                        raise RuntimeError("bench cells with unmet dependencies")
                    continue
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    cell, begin = running.pop(future)
                    _store(store, cell, future.result(), time.perf_counter() - begin,
                           config.device)
                    done.add(cell.id)
                    log(f"done {cell.kind} {cell.id}: {cell.title}")
                    bar(1, info=", ".join(c.title for c, _ in running.values())[:80])
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)


def _store(store: ResultsStore, cell: Cell, output: Any, seconds: float, device: str) -> None:
    result, artifacts, metrics = output
    record = CellRecord(
        id=cell.id, kind=cell.kind, title=cell.title, params=cell.params, deps=list(cell.deps),
        config_hash=cell.id, result=result, artifacts=artifacts, versions=version_info(),
        machine=machine_info(device), device=device, wall_time_s=round(seconds, 3),
        finished=now_iso())
    store.add(record, metrics)
