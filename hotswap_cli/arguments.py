"""Command-line habits click does not have: global options after the command.

``hs encode "x" --timeout 1`` is how people type; click reads options of the root group
only before the command name. The root's options found later are moved to the front,
unless the command has an option of that name itself, or they come after ``--`` or as the
value of one of the command's own options.
"""

from __future__ import annotations

import math
from typing import Any

import typer

# typer >= 0.20 vendors click as typer._click; earlier releases use click itself. Found by
# name on the exception tree typer exports, so both work.
USAGE_ERRORS: type[Exception] = next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "UsageError")


def _options(command: Any) -> dict[str, bool]:
    """Option spelling -> whether it takes a value."""
    found: dict[str, bool] = {}
    for param in command.params:
        if param.param_type_name == "option":
            for flag in [*param.opts, *param.secondary_opts]:
                found[flag] = not param.is_flag and not param.count
    return found


def hoist_global_options(root: Any, args: list[str]) -> list[str]:
    """``args`` with the root's options that follow the command moved before it."""
    globals_ = _options(root)
    front: list[str] = []
    kept: list[str] = []
    command, index = root, 0
    while index < len(args):
        word = args[index]
        if word == "--":
            kept.extend(args[index:])
            break
        name = word.split("=", 1)[0]
        own = _options(command)
        if word.startswith("-") and name in own and command is not root:
            width = 2 if own[name] and "=" not in word else 1
            kept.extend(args[index : index + width])
        elif word.startswith("-") and name in globals_ and name not in ("--help", "-h"):
            width = 2 if globals_[name] and "=" not in word else 1
            if index + width > len(args):
                raise USAGE_ERRORS(f"Option '{name}' requires an argument.")
            (front if command is not root else kept).extend(args[index : index + width])
        else:
            width = 1
            kept.append(word)
            subcommands = getattr(command, "commands", None)
            if not word.startswith("-") and subcommands:
                if word not in subcommands:  # an unknown command: click says so
                    kept.extend(args[index + 1 :])
                    break
                command = subcommands[word]
        index += width
    return front + kept


def finite(value: float | None) -> float | None:
    """An option callback: click's float ranges let NaN through (every comparison with it is
    false) and take "inf"; neither is a timeout, a share or a duration."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


# Options whose value may be left out (``--ray`` alone: a local Ray; ``--ray auto``: a
# cluster). click has no such option; the word it stands for is put in before parsing.
OPTIONAL_VALUES = {"--ray": "local"}


def fill_optional_values(args: list[str]) -> list[str]:
    filled: list[str] = []
    for index, word in enumerate(args):
        if word == "--":
            return filled + args[index:]
        filled.append(word)
        if word in OPTIONAL_VALUES and (index + 1 == len(args) or args[index + 1].startswith("-")):
            filled.append(OPTIONAL_VALUES[word])
    return filled
