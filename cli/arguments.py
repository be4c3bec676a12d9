"""Command-line habits click does not have: global options after the command.

``hs encode "x" --timeout 1`` is how people type; click reads options of the root group
only before the command name. The root's options found later are moved to the front,
unless the command has an option of that name itself, or they come after ``--`` or as the
value of one of the command's own options.
"""

from __future__ import annotations

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
    command, position = root, 0
    # Walk to the leaf command: leading root options, then group names.
    while position < len(args):
        word = args[position]
        if word == "--":
            return args
        if word.startswith("-"):
            takes_value = globals_.get(word.split("=", 1)[0], False) and "=" not in word and command is root
            position += 2 if takes_value else 1
            continue
        subcommands = getattr(command, "commands", None)
        if not subcommands or word not in subcommands:
            break
        command = subcommands[word]
        position += 1
        if not getattr(command, "commands", None):
            break
    if command is root:
        return args
    own = _options(command)
    head, rest, tail = args[:position], args[position:], []
    index = 0
    while index < len(rest):
        word = rest[index]
        if word == "--":
            tail.extend(rest[index:])
            break
        name = word.split("=", 1)[0]
        if name in own:
            takes_value = own[name] and "=" not in word
            tail.extend(rest[index : index + (2 if takes_value else 1)])
            index += 2 if takes_value else 1
        elif name in globals_ and name not in ("--help", "-h"):
            takes_value = globals_[name] and "=" not in word
            front.extend(rest[index : index + (2 if takes_value else 1)])
            index += 2 if takes_value else 1
        else:
            tail.append(word)
            index += 1
    return front + head + tail
