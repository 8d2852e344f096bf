"""The results store of ``encshield bench``: one SQLite file, one row per finished cell.

Tables:

* ``meta(key, value)``: ``config`` (the bench config as JSON, latest run), ``created``.
* ``cells(id, kind, title, params, deps, config_hash, result, artifacts, versions, machine,
  device, wall_time_s, finished)``: one row per **finished** cell (a cell that is not in the
  table has not finished). ``params``/``deps``/``result``/``artifacts``/``versions``/``machine``
  are JSON. ``artifacts`` maps names to ``{"path": relative to the artifacts folder, "sha256"}``.
* ``metrics(cell_id, encoder, dataset, defense, seed, row, kind, attack, eps, num_samples,
  benign_accuracy, robust_accuracy, fooling_rate, attack_success_rate)``: one row per evaluated
  attack row of an ``evaluate`` cell, for queries and reports.

A cell and its metrics are written in one transaction (WAL journal, ``synchronous=FULL``), so a
run killed at any point (Ctrl-C, ``kill -9``, power loss) leaves either the whole cell or none of
it; the ``id`` primary key makes duplicates impossible. Artifacts (perturbations, defended
models) live in ``<RESULTS>.artifacts/`` next to the database and are written atomically before
their cell's row.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from encshield.errors import ConfigError

__all__ = ["CellRecord", "ResultsStore", "artifacts_dir"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, title TEXT NOT NULL, params TEXT NOT NULL,
    deps TEXT NOT NULL, config_hash TEXT NOT NULL, result TEXT NOT NULL, artifacts TEXT NOT NULL,
    versions TEXT NOT NULL, machine TEXT NOT NULL, device TEXT NOT NULL,
    wall_time_s REAL NOT NULL, finished TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS metrics (
    cell_id TEXT NOT NULL REFERENCES cells(id), encoder TEXT NOT NULL, dataset TEXT NOT NULL,
    defense TEXT NOT NULL, seed INTEGER NOT NULL, row TEXT NOT NULL, kind TEXT NOT NULL,
    attack TEXT, eps REAL, num_samples INTEGER NOT NULL, benign_accuracy REAL,
    robust_accuracy REAL, fooling_rate REAL, attack_success_rate REAL,
    PRIMARY KEY (cell_id, row));
"""

METRIC_COLUMNS = ("cell_id", "encoder", "dataset", "defense", "seed", "row", "kind", "attack",
                  "eps", "num_samples", "benign_accuracy", "robust_accuracy", "fooling_rate",
                  "attack_success_rate")


def artifacts_dir(db_path: str | os.PathLike[str]) -> Path:
    """``results.db`` -> ``results.artifacts/`` (perturbations and models of the store)."""
    path = Path(db_path)
    return path.with_name(path.stem + ".artifacts")


@dataclass(frozen=True)
class CellRecord:
    """A finished cell as stored (JSON columns decoded)."""

    id: str
    kind: str
    title: str
    params: dict[str, Any]
    deps: list[str]
    config_hash: str
    result: dict[str, Any]
    artifacts: dict[str, dict[str, str]]
    versions: dict[str, str]
    machine: dict[str, Any]
    device: str
    wall_time_s: float
    finished: str


class ResultsStore:
    """A SQLite results store (created on first use).

    Args:
        path: the ``.db`` file.
        readonly: open an existing store for reading only (reports).
    Raises:
        ConfigError: the file is not a SQLite database or not an encshield store.
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and not self.path.is_file():
            raise ConfigError(f"results store {self.path} does not exist; run `encshield bench` first")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{self.path}?mode=ro" if readonly else str(self.path)
        try:
            self._db = sqlite3.connect(uri, uri=readonly, timeout=60, isolation_level=None)
            if not readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as error:
            raise ConfigError(f"{self.path} is not a usable SQLite results store: {error}") from None
        if not {"meta", "cells", "metrics"} <= tables:
            raise ConfigError(f"{self.path} is a SQLite file but not an encshield results store "
                              f"(tables: {sorted(tables)})")
        self.artifacts = artifacts_dir(self.path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------ meta
    def set_meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # ----------------------------------------------------------------------------- cells
    def done_ids(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT id FROM cells")}

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM cells").fetchone()[0])

    def add(self, record: CellRecord, metrics: list[dict[str, Any]] = ()) -> None:
        """Insert a finished cell and its metric rows in one transaction.

        Raises:
            ConfigError: the cell is already stored (a scheduling bug: cells run once).
        """
        values = (record.id, record.kind, record.title, _dump(record.params), _dump(record.deps),
                  record.config_hash, _dump(record.result), _dump(record.artifacts),
                  _dump(record.versions), _dump(record.machine), record.device,
                  float(record.wall_time_s), record.finished)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(f"INSERT INTO cells VALUES ({','.join('?' * len(values))})", values)
            for row in metrics:
                self._db.execute(
                    f"INSERT INTO metrics VALUES ({','.join('?' * len(METRIC_COLUMNS))})",
                    tuple(row.get(c) for c in METRIC_COLUMNS))
            self._db.execute("COMMIT")
        except sqlite3.IntegrityError as error:
            self._db.execute("ROLLBACK")
            raise ConfigError(f"cell {record.id} is already in {self.path}: {error}") from None
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def remove(self, cell_id: str) -> None:
        """Delete a cell and its metrics (used when its artifact went missing)."""
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("DELETE FROM metrics WHERE cell_id = ?", (cell_id,))
        self._db.execute("DELETE FROM cells WHERE id = ?", (cell_id,))
        self._db.execute("COMMIT")

    def get(self, cell_id: str) -> CellRecord | None:
        row = self._db.execute("SELECT * FROM cells WHERE id = ?", (cell_id,)).fetchone()
        return None if row is None else _record(row)

    def cells(self, kind: str | None = None) -> Iterator[CellRecord]:
        """Stored cells (optionally of one kind) in the order they finished."""
        query = "SELECT * FROM cells" + (" WHERE kind = ?" if kind else "") + " ORDER BY rowid"
        for row in self._db.execute(query, (kind,) if kind else ()):
            yield _record(row)

    def metrics(self) -> list[dict[str, Any]]:
        """Every metric row as a dict (columns of the ``metrics`` table)."""
        cursor = self._db.execute(f"SELECT {','.join(METRIC_COLUMNS)} FROM metrics "
                                  "ORDER BY encoder, dataset, defense, seed, row")
        return [dict(zip(METRIC_COLUMNS, row, strict=True)) for row in cursor]

    def artifact_path(self, relative: str) -> Path:
        return self.artifacts / relative


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _record(row: tuple[Any, ...]) -> CellRecord:
    (cid, kind, title, params, deps, chash, result, artifacts, versions, machine, device,
     wall, finished) = row
    return CellRecord(cid, kind, title, json.loads(params), json.loads(deps), chash,
                      json.loads(result), json.loads(artifacts), json.loads(versions),
                      json.loads(machine), device, wall, finished)
