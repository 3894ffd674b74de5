"""Every example a `--help` prints is a command that parses: its subcommand exists, its flags and
values are accepted, and a named dashboard definition is a shipped one."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest

from vpsearch.cli import build_parser

DASHBOARDS = {p.stem for p in (Path(__file__).resolve().parent.parent / "dashboards").glob("*.yaml")}


def parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) for every parser of the tree."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, path + (name,))


def examples() -> list[tuple[tuple[str, ...], str, bool]]:
    """(command words, example, whether it is the parser's first example)."""
    out = []
    for path, p in parsers(build_parser()):
        lines = (p.epilog or "").splitlines()
        if "examples:" not in lines:
            continue
        first = True
        for line in lines[lines.index("examples:") + 1:]:
            command = line.split("  #")[0].strip()
            if command.startswith("vpsearch "):
                out.append((path, command, first))
                first = False
    return out


def test_every_subcommand_has_examples():
    with_examples = {path for path, _, _ in examples()}
    leaves = [path for path, p in parsers(build_parser())
              if path and not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)]
    assert leaves and [p for p in leaves if p not in with_examples] == []


@pytest.mark.parametrize("path,command,first", examples(), ids=[e[1] for e in examples()])
def test_a_help_example_parses(path, command, first):
    argv = shlex.split(command)[1:]
    if first:  # the first example shows the command itself; later ones may show what comes next
        assert tuple(argv[:len(path)]) == path, f"`vpsearch {' '.join(path)} --help` starts with another command"
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"`{command}` does not parse (exit {e.code})")
    assert callable(args.func)
    if getattr(args, "definition", None) and "/" not in args.definition:
        assert args.definition in DASHBOARDS, f"`{command}`: no dashboard definition {args.definition!r}"
