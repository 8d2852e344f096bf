"""The one progress mechanism: a rich progress bar on stderr, or nothing in quiet mode.

Every long loop (SSL pre-training, attack fitting, defense training, bench cells, downloads)
reports through :func:`progress`::

    with progress("pgd_at", total=epochs, enabled=show) as bar:
        for epoch in range(epochs):
            ...
            bar(info=f"loss {loss:.4f}")      # one step done, with a status text

Quiet mode: ``enabled=False``, or the environment variable ``ENCSHIELD_QUIET=1`` (CI logs,
benchmarks), turns every bar into a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Protocol

__all__ = ["Advance", "progress", "quiet"]


class Advance(Protocol):
    """Moves a bar: ``n`` steps forward (or to ``completed``), with an optional status text."""

    def __call__(self, n: int = 1, *, completed: int | None = None, info: str | None = None,
                 description: str | None = None) -> None: ...


def quiet() -> bool:
    """Whether ``ENCSHIELD_QUIET`` asks for no progress output."""
    return os.environ.get("ENCSHIELD_QUIET", "").strip().lower() in ("1", "true", "yes", "on")


def _noop(n: int = 1, *, completed: int | None = None, info: str | None = None,
          description: str | None = None) -> None:
    return None


@contextlib.contextmanager
def progress(description: str, total: int | None, *, enabled: bool = True,
             completed: int = 0) -> Iterator[Advance]:
    """A progress bar (description, bar, done/total, status text, elapsed, remaining) on stderr.

    Args:
        description: the bar's label.
        total: number of steps (``None``: unknown).
        enabled: ``False`` (or ``ENCSHIELD_QUIET=1``) -> a no-op.
        completed: steps already done (a resumed run).
    Yields:
        :class:`Advance`.
    """
    if not enabled or quiet():
        yield _noop
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total, completed=completed, info="")

        def advance(n: int = 1, *, completed: int | None = None, info: str | None = None,
                    description: str | None = None) -> None:
            fields: dict[str, str] = {} if info is None else {"info": info}
            if description is not None:
                fields["description"] = description
            if completed is not None:
                bar.update(task, completed=completed, **fields)  # type: ignore[arg-type]
            else:
                bar.update(task, advance=n, **fields)  # type: ignore[arg-type]

        yield advance
