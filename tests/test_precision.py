"""bf16 autocast runs only where the device has native bf16; float32 (one warning) elsewhere."""

from __future__ import annotations

import warnings

import pytest
import torch

from encshield import precision


@pytest.fixture(autouse=True)
def _fresh_caches():
    precision.bf16_native.cache_clear()
    precision._warn_emulated.cache_clear()
    yield
    precision.bf16_native.cache_clear()
    precision._warn_emulated.cache_clear()


def _matmul_dtype() -> torch.dtype:
    a = torch.randn(4, 4)
    with precision.autocast("cpu", True):
        return (a @ a).dtype


def test_native_bf16_cpu_autocasts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "bf16_native", lambda kind: True)
    assert precision.effective_amp("cpu", True) is True
    assert _matmul_dtype() == torch.bfloat16


def test_emulated_bf16_cpu_runs_float32_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "bf16_native", lambda kind: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _matmul_dtype() == torch.float32
        assert _matmul_dtype() == torch.float32
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "no native bf16" in messages[0]


def test_disabled_amp_never_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "bf16_native", lambda kind: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.effective_amp("cpu", False) is False
        with precision.autocast("cpu", False):
            pass


def test_accelerators_count_as_native() -> None:
    assert precision.bf16_native("cuda") is True
    assert isinstance(precision.bf16_native("cpu"), bool)
