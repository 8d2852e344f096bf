"""``encshield.config``: every config reader refuses hostile YAML in one line, before any work.

Alias bombs, deep nesting, code-running tags, non-UTF-8 files, malformed ``--set`` values,
non-finite numbers and oversized numbers all become one :class:`ConfigError` line (exit 2 in
the CLI), never a traceback, a long computation or a side effect.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from encshield.cli import main
from encshield.config import MAX_DEPTH, apply_overrides, parse_fractions, read_yaml
from encshield.errors import ConfigError


def _bomb(levels: int) -> str:
    """A "billion laughs" document: each level lists the previous one 7 times by alias."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 7) + "]")
    return "\n".join(lines) + "\n"


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("encshield: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_alias_bombs_are_refused_at_once(tmp_path: Path) -> None:
    """An alias bomb is refused in well under a second, by file and by --set."""
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(4))  # 7**5 leaves when expanded (today's loader builds them all)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"aliases \(\*l0\) are not allowed") as info:
        read_yaml(path)
    assert time.perf_counter() - started < 1.0
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    with pytest.raises(ConfigError, match="aliases"):
        apply_overrides({}, ["a=[&x 1, *x]"])


def test_the_bench_check_refuses_a_bomb_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`bench --check` on a bomb: exit 2, one line, no expansion."""
    path = tmp_path / "bomb.yaml"
    path.write_text("name: bomb\n" + _bomb(4))
    assert main(["bench", "--config", str(path), "--check"]) == 2
    assert "aliases" in _one_line_error(capsys)


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    """Deep nesting is a ConfigError, not a RecursionError; real nesting still loads."""
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError, match=f"nesting deeper than {MAX_DEPTH} levels"):
        read_yaml(path)
    with pytest.raises(ConfigError, match="nesting deeper"):
        apply_overrides({}, ["a=" + "{b: " * 100 + "1" + "}" * 100])
    ok = tmp_path / "ok.yaml"  # real configs nest a few levels: untouched
    ok.write_text("a: {b: {c: [1, {d: 2}]}}\n")
    assert read_yaml(ok) == {"a": {"b": {"c": [1, {"d": 2}]}}}


def test_a_non_utf8_config_is_one_line(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A Latin-1 config: one line naming the byte and the fix (API and CLI)."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 at offset 9\)"):
        read_yaml(path)
    assert main(["bench", "--config", str(path), "--check"]) == 2
    assert "save it as UTF-8" in _one_line_error(capsys)


@pytest.mark.parametrize(("value", "expected"), [
    ("[1, 2", "expected ',' or ']'"),
    ("!!python/object/apply:os.system ['touch {marker}']", "tags such as !!python"),
    ("!!python/name:os.system", "tags such as !!python"),
    (".inf", "inf is not a finite number"),
    ("[0.1, .nan]", r"\[1\]: nan is not a finite number"),
    ("1" * 5000, "too large"),
])
def test_malformed_set_values_are_one_line_and_run_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, expected: str) -> None:
    """Bad --set values: one line, exit 2, and a python/object tag runs nothing."""
    marker = tmp_path / "ran"
    item = "seeds=" + value.format(marker=marker)
    with pytest.raises(ConfigError, match=expected) as info:
        apply_overrides({}, [item])
    assert "\n" not in str(info.value)
    config = tmp_path / "bench.yaml"
    config.write_text("name: x\nencoders: [zoo:simclr-cifar10-r18w16]\ndatasets: [cifar10]\n")
    assert main(["bench", "--config", str(config), "--set", item, "--check"]) == 2
    assert "--set seeds=" in _one_line_error(capsys)
    assert not marker.exists()


def test_non_finite_numbers_in_a_file_name_their_path(tmp_path: Path) -> None:
    """``.inf`` deep in a file is refused with its dotted path."""
    path = tmp_path / "inf.yaml"
    path.write_text("defenses:\n  - name: pgd_at\n    set: {lr: .inf}\n")
    with pytest.raises(ConfigError, match=r"defenses\[0\]\.set\.lr: inf is not a finite number"):
        read_yaml(path)


def test_oversized_fractions_are_config_errors() -> None:
    """Fractions too long to parse or too large for a float are ConfigErrors."""
    with pytest.raises(ConfigError, match="too large"):
        parse_fractions({"eps": "9" * 5000 + "/255"})
    with pytest.raises(ConfigError, match="too large"):
        parse_fractions(["1" + "0" * 400 + "/1"])  # finite text, float overflow
    assert parse_fractions({"eps": "8/255"}) == {"eps": pytest.approx(8 / 255)}


def test_set_reads_scientific_notation_as_numbers_and_never_nan() -> None:
    """``--set lr=5e-3`` is the number 0.005 (YAML 1.1 would read a string); ``nan``/``inf``
    written as words stay text, so no non-finite number enters a config this way."""
    from encshield.config import apply_overrides

    raw = apply_overrides({}, ["a.lr=5e-3", "b=nan", "c=-inf", "d=3"])
    assert raw == {"a": {"lr": 0.005}, "b": "nan", "c": "-inf", "d": 3}
