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

Safety: a file is inspected read-only (its header, ``application_id``, ``user_version`` and
tables) before anything is written, and refused unless it is an encshield store or a new/empty
file, so another program's database is never converted. New stores carry
:data:`APPLICATION_ID` and :data:`SCHEMA_VERSION`. A writable store is locked (``flock`` on
``<RESULTS>.artifacts/.lock``) for as long as it is open, so a second ``encshield bench`` on the
same store stops at once instead of computing cells it cannot store. Read-only opens (reports)
without a pending write-ahead log use SQLite's ``immutable`` mode, which works in read-only
folders and creates no ``-wal``/``-shm`` files. Every JSON column is strict JSON (non-finite
numbers stored as ``null``).
"""

from __future__ import annotations

import io
import json
import os
import socket
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from encshield.errors import ConfigError
from encshield.provenance import dumps_strict, to_jsonable

try:  # POSIX; elsewhere stores are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "CellRecord", "ResultsStore", "artifacts_dir",
           "check_output", "inspect_store", "require_resume",
           "safe_artifact_path"]

#: SQLite ``PRAGMA application_id`` of encshield results stores (ASCII ``EncS``).
APPLICATION_ID = 0x456E6353
#: ``PRAGMA user_version`` of the current schema (legacy stores without an id have 0).
#: Version 2 added ``metrics.target_hit_rate`` (backdoor rows); a writer upgrades a version-1
#: store in place, a reader of one sees ``None`` there.
SCHEMA_VERSION = 2
_TABLES = frozenset({"meta", "cells", "metrics"})
_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS cells (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, title TEXT NOT NULL, params TEXT NOT NULL,
    deps TEXT NOT NULL, config_hash TEXT NOT NULL, result TEXT NOT NULL, artifacts TEXT NOT NULL,
    versions TEXT NOT NULL, machine TEXT NOT NULL, device TEXT NOT NULL,
    wall_time_s REAL NOT NULL, finished TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS metrics (
    cell_id TEXT NOT NULL REFERENCES cells(id), encoder TEXT NOT NULL, dataset TEXT NOT NULL,
    defense TEXT NOT NULL, seed INTEGER NOT NULL, row TEXT NOT NULL, kind TEXT NOT NULL,
    attack TEXT, eps REAL, num_samples INTEGER NOT NULL, benign_accuracy REAL,
    robust_accuracy REAL, fooling_rate REAL, attack_success_rate REAL, target_hit_rate REAL,
    PRIMARY KEY (cell_id, row))""",
)

METRIC_COLUMNS = ("cell_id", "encoder", "dataset", "defense", "seed", "row", "kind", "attack",
                  "eps", "num_samples", "benign_accuracy", "robust_accuracy", "fooling_rate",
                  "attack_success_rate", "target_hit_rate")


def artifacts_dir(db_path: str | os.PathLike[str]) -> Path:
    """``results.db`` -> ``results.artifacts/`` (perturbations and models of the store)."""
    path = Path(db_path)
    return path.with_name(path.stem + ".artifacts")


def _uri(path: Path, *, immutable: bool) -> str:
    """A read-only SQLite URI for ``path`` (percent-encoded: ``#``, ``?`` and ``%`` are data)."""
    return (f"file:{quote(str(path.absolute()), safe='/')}?mode=ro"
            + ("&immutable=1" if immutable else ""))


def _wal_pending(path: Path) -> bool:
    """Whether ``path`` has a non-empty write-ahead log (changes not yet in the main file)."""
    try:
        return path.with_name(path.name + "-wal").stat().st_size > 0
    except OSError:
        return False


def _denied(path: Path, error: OSError | None = None) -> ConfigError:
    """The one-line error for a store that may not be read or written."""
    why = (error.strerror if error is not None and error.strerror else "permission denied")
    return ConfigError(f"results store {path}: {why.lower()}; fix its permissions or use "
                       "another path")


def _classify(db: sqlite3.Connection, path: Path) -> str:
    """``"store"`` or ``"new"`` from the header fields and tables of an open SQLite file, else
    ``ConfigError`` (another program's database, or a newer schema)."""
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if app_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise ConfigError(f"results store {path} has schema version {version}, written by a "
                              f"newer encshield (this one reads up to {SCHEMA_VERSION}); upgrade "
                              "encshield")
        return "store"
    if app_id == 0 and version == 0 and tables == _TABLES:
        return "store"  # written before stores carried an application id
    if app_id == 0 and version == 0 and not tables:
        return "new"
    raise ConfigError(f"{path} is a SQLite file but not an encshield results store "
                      f"(application id {app_id:#x}, tables: {sorted(tables)}); it was left "
                      "unchanged: give a new file or an encshield results store")


def inspect_store(path: str | os.PathLike[str]) -> str:
    """What ``path`` holds, found without writing anything (not even ``-wal``/``-shm`` files).

    Returns:
        ``"new"`` (missing, empty file or empty SQLite database) or ``"store"`` (an encshield
        results store).
    Raises:
        ConfigError: permission denied, not a SQLite file, another program's database, or a
            store of a newer schema.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
    except FileNotFoundError:
        return "new"
    except PermissionError as error:
        raise _denied(path, error) from None
    except OSError as error:
        raise ConfigError(f"results store {path} cannot be read: {error.strerror or error}; "
                          "give the path of a results store file") from None
    pending = _wal_pending(path)
    if not header and not pending:
        return "new"
    if header and not header.startswith(_SQLITE_MAGIC):
        raise ConfigError(f"{path} is not a usable SQLite results store: not a SQLite database; "
                          "it was left unchanged: give a new file or an encshield results store")
    try:
        db = sqlite3.connect(_uri(path, immutable=not pending), uri=True, isolation_level=None)
        try:
            return _classify(db, path)
        finally:
            db.close()
    except sqlite3.DatabaseError as error:
        raise ConfigError(f"{path} is not a usable SQLite results store: {error}") from None


def _check_writable(path: Path) -> None:
    """``path`` can be created or written, and so can the ``-wal`` file next to it (checked on
    the nearest existing folder, without creating anything)."""
    folder = path.absolute().parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the results store {path}: permission denied on the "
                          f"folder {existing}; choose another --output")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise _denied(path)


def check_output(path: str | os.PathLike[str], *, resume: bool) -> str:
    """What ``encshield bench`` would refuse about its ``--output``, found read-only (for
    ``bench --check``; the run itself opens the store with :class:`ResultsStore`).

    Returns:
        ``"new"`` or ``"store"`` (see :func:`inspect_store`).
    Raises:
        ConfigError: permission denied, not an encshield store, or a store that already
            holds cells without ``resume`` (see :func:`require_resume`).
    """
    path = Path(path)
    kind = inspect_store(path)
    _check_writable(path)
    if kind == "store":
        with ResultsStore(path, readonly=True) as store:
            require_resume(store, resume)
    return kind


def require_resume(store: ResultsStore, resume: bool) -> None:
    """Refuse to add a run to a store that already holds finished cells unless ``resume``."""
    if not resume and (count := len(store)):
        raise ConfigError(f"{store.path} already holds {count} finished cells; add --resume "
                          "to continue it, or choose another --output")


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
        readonly: open an existing store for reading only (reports): nothing is written, not
            even in the store's folder, which may be read-only.
    Raises:
        ConfigError: permission denied, the file is not a SQLite database or not an encshield
            store (checked before any write), the store is in use by another writer, or (read
            only) it does not exist.
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.artifacts = artifacts_dir(self.path)
        self._lock: io.FileIO | None = None
        kind = inspect_store(self.path)  # read-only, before anything is written
        if readonly:
            if kind == "new":
                what = "does not exist" if not self.path.exists() else "is empty"
                raise ConfigError(f"results store {self.path} {what}; run `encshield bench` "
                                  "first")
            self._db = self._connect_readonly()
            return
        self._prepare_folder()
        self._lock = self._acquire_lock()
        try:
            inspect_store(self.path)  # again, now that no other encshield process writes it
            self._db = self._connect_writable()
        except BaseException:
            self._release_lock()
            raise

    # ------------------------------------------------------------------------- opening
    def _connect_readonly(self) -> sqlite3.Connection:
        """Read-only: immutable (no locks, no ``-shm``) unless a write-ahead log holds changes."""
        pending = _wal_pending(self.path)
        try:
            db = sqlite3.connect(_uri(self.path, immutable=not pending), uri=True, timeout=60,
                                 isolation_level=None)
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as error:
            if pending:
                raise ConfigError(
                    f"results store {self.path} has changes in {self.path.name}-wal that cannot "
                    f"be read here ({error}); make its folder writable, or copy the store with "
                    "its -wal file to a writable folder and report the copy") from None
            raise ConfigError(f"{self.path} is not a usable SQLite results store: "
                              f"{error}") from None
        return db

    def _prepare_folder(self) -> None:
        """The store's folder exists and is writable (SQLite creates ``-wal`` files there)."""
        folder = self.path.absolute().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create the folder {folder} of the results store: "
                              f"{(error.strerror or str(error)).lower()}; choose another "
                              "--output") from None
        _check_writable(self.path)

    def _acquire_lock(self) -> io.FileIO | None:
        """An exclusive ``flock`` on ``<artifacts>/.lock``, held until :meth:`close` or until
        the store object is garbage-collected (released by the kernel if the process dies);
        ``ConfigError`` at once if another process or store object holds it."""
        if fcntl is None:  # pragma: no cover - Windows
            return None
        lock = self.artifacts / ".lock"
        try:
            self.artifacts.mkdir(parents=True, exist_ok=True)
            handle = io.FileIO(lock, "a+")
        except OSError as error:
            raise ConfigError(f"cannot create the lock file {lock} of the results store: "
                              f"{(error.strerror or str(error)).lower()}; choose another "
                              "--output") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(handle.fileno(), 200, 0).decode("utf-8", "replace").strip()
            handle.close()
            raise ConfigError(f"results store {self.path} is in use by another encshield run "
                              f"({holder or 'unknown process'}); wait for it to finish, or "
                              "choose another --output") from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        return handle

    def _release_lock(self) -> None:
        """Release the writer's lock (the ``.lock`` file stays, empty of meaning)."""
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None

    def _connect_writable(self) -> sqlite3.Connection:
        """Create or upgrade the schema (one transaction), then switch to WAL."""
        try:
            db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
        except sqlite3.DatabaseError as error:
            raise ConfigError(f"{self.path} is not a usable SQLite results store: "
                              f"{error}") from None
        try:
            db.execute("BEGIN IMMEDIATE")
            if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            for statement in _SCHEMA:
                db.execute(statement)
            columns = {r[1] for r in db.execute("PRAGMA table_info(metrics)")}
            if "target_hit_rate" not in columns:  # a version-1 store
                db.execute("ALTER TABLE metrics ADD COLUMN target_hit_rate REAL")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as error:
            db.close()
            raise self._failure(error, "open") from None
        return db

    def close(self) -> None:
        """Close the database and release the writer's lock."""
        try:
            self._db.close()
        finally:
            self._release_lock()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------- errors
    def _failure(self, error: Exception, action: str) -> ConfigError:
        """One line for a SQLite error while ``action`` ing the store."""
        text = str(error)
        if "readonly" in text or "permission" in text.lower():
            return _denied(self.path)
        if "malformed" in text or "not a database" in text or isinstance(error, ValueError):
            return ConfigError(f"results store {self.path} is damaged ({text}); restore it from "
                               "a copy, or run the bench again into a new --output")
        return ConfigError(f"cannot {action} the results store {self.path}: {text}")

    def _rows(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """All rows of a read query; SQLite errors (e.g. a damaged page) as one ConfigError."""
        try:
            return self._db.execute(query, args).fetchall()
        except sqlite3.DatabaseError as error:
            raise self._failure(error, "read") from None

    def _decode(self, row: tuple[Any, ...]) -> CellRecord:
        """A ``cells`` row as a :class:`CellRecord`; undecodable JSON means a damaged store."""
        try:
            return _record(row)
        except (ValueError, TypeError) as error:
            raise self._failure(ValueError(f"cell {row[0]!r}: {error}"), "read") from None

    # ------------------------------------------------------------------------------ meta
    def set_meta(self, key: str, value: Any) -> None:
        """Store ``value`` (strict JSON) under ``key`` in the ``meta`` table."""
        try:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, _dump(value)))
        except sqlite3.DatabaseError as error:
            raise self._failure(error, "write") from None

    def meta(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under ``key`` (``default`` when absent)."""
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        if not rows:
            return default
        try:
            return json.loads(rows[0][0])
        except (ValueError, TypeError) as error:
            raise self._failure(ValueError(f"meta {key!r}: {error}"), "read") from None

    # ----------------------------------------------------------------------------- cells
    def done_ids(self) -> set[str]:
        """Ids of every stored (finished) cell."""
        return {r[0] for r in self._rows("SELECT id FROM cells")}

    def __len__(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM cells")[0][0])

    def add(self, record: CellRecord, metrics: Sequence[dict[str, Any]] = ()) -> None:
        """Insert a finished cell and its metric rows in one transaction.

        Raises:
            ConfigError: the cell is already stored (a scheduling bug: cells run once), or
                SQLite cannot write (permission, disk full, damaged file).
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
                    tuple(to_jsonable(row.get(c)) for c in METRIC_COLUMNS))
            self._db.execute("COMMIT")
        except sqlite3.IntegrityError as error:
            self._db.execute("ROLLBACK")
            raise ConfigError(f"cell {record.id} is already in {self.path}: {error}") from None
        except sqlite3.DatabaseError as error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise self._failure(error, "write") from None
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def remove(self, cell_id: str) -> None:
        """Delete a cell and its metrics (used when its artifact went missing)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM metrics WHERE cell_id = ?", (cell_id,))
            self._db.execute("DELETE FROM cells WHERE id = ?", (cell_id,))
            self._db.execute("COMMIT")
        except sqlite3.DatabaseError as error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise self._failure(error, "write") from None

    def get(self, cell_id: str) -> CellRecord | None:
        """The stored cell ``cell_id``, or ``None``."""
        rows = self._rows("SELECT * FROM cells WHERE id = ?", (cell_id,))
        return self._decode(rows[0]) if rows else None

    def cells(self, kind: str | None = None) -> Iterator[CellRecord]:
        """Stored cells (optionally of one kind) in the order they finished."""
        query = "SELECT * FROM cells" + (" WHERE kind = ?" if kind else "") + " ORDER BY rowid"
        for row in self._rows(query, (kind,) if kind else ()):
            yield self._decode(row)

    def metrics(self) -> list[dict[str, Any]]:
        """Every metric row as a dict (columns of the ``metrics`` table)."""
        present = {r[1] for r in self._rows("PRAGMA table_info(metrics)")}
        columns = [c if c in present else f"NULL AS {c}" for c in METRIC_COLUMNS]
        rows = self._rows(f"SELECT {','.join(columns)} FROM metrics "
                          "ORDER BY encoder, dataset, defense, seed, row")
        return [dict(zip(METRIC_COLUMNS, row, strict=True)) for row in rows]

    def artifact_path(self, relative: str) -> Path:
        """``relative`` under the artifacts folder.

        Raises:
            ConfigError: ``relative`` is absolute or leaves the folder (a damaged or hostile
                store); artifact paths are always written relative and inside it.
        """
        path = safe_artifact_path(self.artifacts, relative)
        if path is None:
            raise ConfigError(f"results store {self.path} names the artifact {relative!r} outside "
                              f"{self.artifacts}; the store is damaged: run the bench again "
                              "into a new --output")
        return path


def safe_artifact_path(root: Path, relative: Any) -> Path | None:
    """``root / relative`` when ``relative`` is a relative path without ``..`` parts, else
    ``None`` (artifact paths come from the store, which may be damaged or hostile)."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        return None
    parts = Path(relative).parts
    if Path(relative).is_absolute() or ".." in parts:
        return None
    return root / relative


def _dump(value: Any) -> str:
    """Strict JSON text (non-finite numbers as ``null``; never ``NaN``/``Infinity``)."""
    return dumps_strict(value, indent=None, sort_keys=True)


def _record(row: tuple[Any, ...]) -> CellRecord:
    (cid, kind, title, params, deps, chash, result, artifacts, versions, machine, device,
     wall, finished) = row
    return CellRecord(cid, kind, title, json.loads(params), json.loads(deps), chash,
                      json.loads(result), json.loads(artifacts), json.loads(versions),
                      json.loads(machine), device, wall, finished)
