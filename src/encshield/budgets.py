"""Perturbation budgets: the one parser and the formatters used by specs, configs, CLI and reports.

Budgets are written as plain numbers (``0.03``) or fractions of the 8-bit pixel step
(``8/255``); they are stored as floats in pixel units of [0, 1] images.
"""

from __future__ import annotations

import math

from encshield.errors import ConfigError

__all__ = ["budget_label", "format_budget", "parse_budget"]


def parse_budget(
    text: str | float | int, *, name: str = "eps", maximum: float | None = None,
    positive: bool = False,
) -> float:
    """``"8/255"`` -> 0.03137..., ``"0.03"`` -> 0.03, a float unchanged.

    Args:
        text: the budget as written by the user (or a number).
        name: what to call it in error messages (``"--eps"``, ``"pgd: eps"``).
        maximum: largest allowed value (e.g. 1.0 for L-inf budgets on [0, 1] images); a larger
            one is refused with a hint (``did you mean 10/255?``).
        positive: refuse 0.

    Raises:
        ConfigError: not a number or fraction, division by zero, negative, zero when
            ``positive``, above ``maximum`` or not finite.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        raw = str(text).strip()
        try:
            if "/" in raw:
                num, den = raw.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(raw)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(
                f"{name}: {text!r} is not a budget; write a number (0.03) or a fraction (8/255)"
            ) from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "non-negative"
        raise ConfigError(f"{name}: {text!r} must be a finite, {kind} budget, e.g. 8/255")
    if maximum is not None and value > maximum:
        hint = f" (did you mean {text}/255?)" if value > 1 and "/" not in str(text) else ""
        raise ConfigError(
            f"{name}: {text!r} exceeds {maximum:g}; budgets are in pixel units of [0, 1] "
            f"images{hint}"
        )
    return value


def format_budget(eps: float | None) -> str:
    """``8/255`` for multiples of 1/255 (to 1e-9), else the shortest float repr (``0.05``);
    ``"-"`` for ``None``."""
    if eps is None:
        return "-"
    scaled = eps * 255
    if abs(scaled - round(scaled)) < 1e-9 and round(scaled) != 0:
        return f"{int(round(scaled))}/255"
    return repr(float(eps))


def budget_label(eps: float) -> str:
    """``10/255`` -> ``"10"``: the budget in units of 1/255, as in row names ``uap@10``."""
    value = eps * 255
    return f"{round(value)}" if abs(value - round(value)) < 1e-6 else f"{value:.3g}"
