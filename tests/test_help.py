"""Every subcommand's --help, as a user meets it: each option says what it does and its default,
each page ends with examples, a study name is always NAME, and the top-level page speaks to users."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from vpsearch.cli import build_parser


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(command path, parser) of every subcommand, leaves and groups alike."""
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += walk(sub, (*path, name))
    return out


COMMANDS = walk(build_parser())[1:]
IDS = [" ".join(p) for p, _ in COMMANDS]


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
            and a.help != argparse.SUPPRESS]


def test_every_subcommand_is_walked():
    names = set(IDS)
    for expected in ("train", "evaluate", "predict", "data make pushing", "config list", "config show", "study run",
                     "study status", "study list", "worker", "ui", "sync", "report", "export-best", "dashboard",
                     "replay"):
        assert expected in names, expected


@pytest.mark.parametrize("path,parser", COMMANDS, ids=IDS)
def test_every_option_has_help_with_its_default(path, parser):
    for action in _options(parser):
        name = "/".join(action.option_strings) or action.dest
        assert action.help and len(action.help) > 10, f"vpsearch {' '.join(path)} {name}: no help text"
        if action.option_strings and not action.required and not isinstance(action, argparse._VersionAction):
            assert "default" in action.help or "(required)" in action.help, f"vpsearch {' '.join(path)} {name}: help does not say its default"


@pytest.mark.parametrize("path,parser", COMMANDS, ids=IDS)
def test_every_help_page_ends_with_examples(path, parser):
    text = parser.format_help().rstrip().splitlines()
    start = max(i for i, line in enumerate(text) if line.startswith("examples:"))
    cmds = [line.strip() for line in text[start + 1:]]
    assert 1 <= len(cmds) <= 2, (path, cmds)
    for cmd in cmds:
        assert cmd.startswith("vpsearch "), (path, cmd)
    # the example runs a command of this group (or, for a dataset, the training that uses it)
    assert any(cmd.startswith("vpsearch " + " ".join(path[:1])) for cmd in cmds), (path, cmds)


@pytest.mark.parametrize("path,parser", COMMANDS, ids=IDS)
def test_a_study_name_is_always_NAME(path, parser):
    for action in _options(parser):
        text = f"{action.help} {action.dest} {' '.join(action.option_strings)}".lower()
        if "study name" in text:
            assert action.metavar == "NAME", (path, action.dest, action.metavar)


def test_top_level_help_speaks_to_users():
    text = build_parser().format_help()
    assert "video prediction" in text and "vpsearch study run studies/quickstart.yaml" in text
    for developer_word in ("thin subcommands", "library code", "EXTENSIONS", "add_commands"):
        assert developer_word not in text


def test_version():
    import vpsearch

    proc = subprocess.run([sys.executable, "-m", "vpsearch.cli", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"vpsearch {vpsearch.__version__}"


def test_help_pages_render_through_the_entry_point():
    proc = subprocess.run([sys.executable, "-m", "vpsearch.cli", "study", "status", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    assert re.search(r"usage: vpsearch study status .*NAME", proc.stdout, re.S)
    assert proc.stdout.rstrip().endswith("vpsearch study status quickstart --json")
