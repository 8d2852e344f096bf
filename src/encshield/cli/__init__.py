"""The ``encshield`` command line.

Each sub-command group lives in its own module exposing ``register(subparsers)``; the handler
stored as ``func`` on the parsed arguments returns the process exit code. Errors caused by bad
input (:class:`encshield.errors.EncshieldError`) are printed as one clear message, without a
traceback, and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from encshield import __version__
from encshield.errors import EncshieldError


def build_parser() -> argparse.ArgumentParser:
    from encshield.cli import (
        attack_cmd,
        backdoor_cmd,
        bench_cmd,
        data_cmd,
        defend_cmd,
        encoder_cmd,
        evaluate_cmd,
        pretrain_cmd,
        quickstart_cmd,
        report_cmd,
        tune_cmd,
        zoo_cmd,
    )

    parser = argparse.ArgumentParser(
        prog="encshield",
        description="Security of pre-trained self-supervised image encoders.",
    )
    parser.add_argument("--version", action="version", version=f"encshield {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in (
        quickstart_cmd, data_cmd, encoder_cmd, pretrain_cmd, attack_cmd, backdoor_cmd,
        defend_cmd, evaluate_cmd, tune_cmd, bench_cmd, report_cmd, zoo_cmd,
    ):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``encshield`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EncshieldError as error:
        print(f"encshield: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("encshield: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
