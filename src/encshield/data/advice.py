"""One-line errors that say what is missing or damaged, where encshield looked, and the fix.

Every message built here is a single line (the CLI prints it after ``encshield: error:``), names
each place once and gives each fix once. Where the data root is an archive or a file, the advice
never asks to put files "inside" it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from encshield import paths
from encshield.data.base import DatasetFormat
from encshield.data.bounded import one_line
from encshield.errors import DatasetCorruptError, DatasetNotFoundError


def describe_root(root: Path, *, explicit: bool, foreign: bool = False) -> str:
    """A data root as it appears in a message: ``archive X``, ``X (does not exist)``, or ``X``
    labelled with where it comes from when it was not given explicitly. ``foreign``: the root is
    another dataset's folder (skipped)."""
    if root.is_file():
        return f"{'archive' if _is_archive(root) else 'file'} {root}"
    if not root.exists():
        return f"{root} (does not exist)"
    if foreign:
        return f"{root} (another dataset's folder, skipped)"
    if explicit:
        return str(root)
    env = os.environ.get("ENCSHIELD_DATA")
    if env and Path(env).expanduser() == root:
        return f"{root} ($ENCSHIELD_DATA)"
    return f"{root} (the default data root)"


def _is_archive(path: Path) -> bool:
    """Whether ``path`` has an archive suffix (imported late: files imports nothing from here)."""
    from encshield.data.files import archive_kind

    return archive_kind(path) is not None


def obtain_advice(
    fmt: DatasetFormat, root: Path | None, *, explicit: bool, receiving: Path | None = None
) -> str:
    """How to get ``fmt``'s files so that a next run finds them.

    ``root`` is the data root searched first (``None``: the default roots). ``receiving`` is the
    folder to suggest instead when files cannot be put in ``root`` (an archive, a file, another
    dataset's folder): the advice then says to use it as ``--root``.
    """
    if fmt.needs_explicit_root:
        return fmt.obtain_note
    if root is not None and receiving is not None and receiving != root:
        own = receiving.name.lower() in fmt.folder_names
        data_root, target = (
            (receiving.parent, receiving) if own else (receiving, receiving / fmt.name)
        )
        return (
            f"point --root at the folder or archive that holds the {fmt.title} files, or "
            + fmt.how_to_obtain(
                f"{target}/", f"encshield data download {fmt.name} --root {data_root}"
            )
            + f"; then use --root {data_root}"
        )
    default = paths.data_roots()[0]
    target = root if root is not None else default
    command = f"encshield data download {fmt.name}"
    if explicit or target != default:
        command += f" --root {target}"
    return fmt.how_to_obtain(f"{target}/{fmt.name}/", command)


def not_found_error(
    fmt: DatasetFormat,
    roots: Sequence[Path],
    partial: dict[str, str],
    skipped: Sequence[str],
    *,
    explicit: bool,
    foreign: frozenset[Path] = frozenset(),
    receiving: Path | None = None,
) -> DatasetNotFoundError:
    """``dataset X not found in <roots>[ (skipped ...)][; incomplete ...]; <how to get it>``.

    ``foreign``: the roots that are another dataset's folder (skipped); ``receiving``: see
    :func:`obtain_advice`.
    """
    places = " or ".join(
        describe_root(r, explicit=explicit, foreign=r in foreign) for r in roots
    ) or "no data root"
    text = f"dataset {fmt.name!r} ({fmt.title}) not found in {places}"
    if skipped:
        text += f" (skipped {', '.join(skipped)})"
    for split, why in partial.items():
        text += f"; incomplete {split} split: {why}"
    first = roots[0] if roots else None
    advice = obtain_advice(fmt, first, explicit=explicit, receiving=receiving)
    return DatasetNotFoundError(one_line(f"{text}; {advice}"))


def split_missing_error(
    fmt: DatasetFormat, root: Path, split: str, why: str, available: Sequence[str],
    *, explicit: bool, receiving: Path | None = None,
) -> DatasetNotFoundError:
    """A split of a dataset that was found is missing (e.g. STL-10 ``unlabeled``)."""
    return DatasetNotFoundError(one_line(
        f"split {split!r} of {fmt.name} is not available in {describe_root(root, explicit=True)}: "
        f"{why} (available there: {', '.join(available)}); "
        + obtain_advice(fmt, root, explicit=explicit, receiving=receiving)
    ))


def with_advice(fmt: DatasetFormat, error: DatasetCorruptError) -> DatasetCorruptError:
    """Add what to do about a corrupt file: delete, re-download, expected checksum (one line;
    nothing is added to a message that already gives the download command)."""
    message = one_line(str(error))
    path: Path | None = getattr(error, "path", None)
    if "encshield data download" in message:
        advice = []
    elif path is not None:
        expected = fmt.expected_checksum(path.name)
        advice = [f"Delete {path} and download it again"]
        if expected:
            advice.append(f"(expected {expected})")
    else:
        advice = ["Delete the damaged file and download it again"]
    if advice and fmt.resources:
        advice.append(f"with: encshield data download {fmt.name}")
    elif advice and fmt.homepage:
        advice.append(f"from {fmt.homepage}")
    new = DatasetCorruptError(f"{message} {' '.join(advice)}." if advice else message)
    new.path = path  # type: ignore[attr-defined]
    return new
