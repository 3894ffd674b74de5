"""Command-line pieces every layer's ``cli`` module shares: the one-line parser and value types.

Below every layer (like errors.py), so search/tracking/reporting subcommands use them
without importing the top-level cli.
"""

from __future__ import annotations

import argparse
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `vpsearch: error: argument --port: ... (see vpsearch ui --help)`,
    and help pages that keep the line breaks of their examples (see examples()).

    Subparsers are made with the parent's class, so every subcommand gets the same.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        line = " ".join(message.split())
        self.exit(2, f"vpsearch: error: {line} (see {self.prog} --help)\n")


def examples(*commands: str) -> str:
    """The epilog every subcommand's help ends with: one or two commands to copy."""
    return "examples:\n" + "\n".join(f"  {c}" for c in commands)


def _int(value: str, low: int, high: int | None, what: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = None
    if n is None or n < low or (high is not None and n > high):
        raise argparse.ArgumentTypeError(f"expected {what}, got {value if n is not None else repr(value)}")
    return n


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1 (counts of samples, workers, threads, sequences)."""
    return _int(value, 1, None, "an integer >= 1")


def port_number(value: str) -> int:
    """argparse type: a TCP port, 0 meaning any free one."""
    return _int(value, 0, 65535, "a port number 0..65535")

