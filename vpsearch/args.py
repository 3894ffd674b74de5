"""Command-line pieces every layer's ``cli`` module shares: the one-line parser and value types.

Below every layer (like errors.py), so search/tracking/reporting subcommands use them
without importing the top-level cli.
"""

from __future__ import annotations

import argparse
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `vpsearch: error: argument --port: ... (see vpsearch ui --help)`.

    Subparsers are made with the parent's class, so every subcommand gets the same.
    """

    def error(self, message: str) -> NoReturn:
        line = " ".join(message.split())
        self.exit(2, f"vpsearch: error: {line} (see {self.prog} --help)\n")


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

