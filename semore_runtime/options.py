"""Command-line options from a typed model: one option per pydantic field.

Every semore-* command builds its options here, so a setting's name, unit, default, help and check
are written once, on its field, and a setting that means the same in two tools is spelled the same.

- ``--field-name`` unless ``json_schema_extra={"flag": ...}`` names another; ``"metavar"`` names
  the value in the help; ``"positional": True`` makes a required field a positional argument.
- The field's description is the help; a Literal gives the choices.
- A bool is a flag that flips its default.
- A list takes one or more values (``--arms a b``); with ``"repeat": True`` the option takes one
  value and may be given again (``--set a=1 --set b=2``).
- An option left out is left out of the result too (``SUPPRESS``), so the model's own default
  applies and is written nowhere else.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

Model = typing.TypeVar("Model", bound=BaseModel)


class CommandOptions(BaseModel):
    """What a command can be told: an unknown setting is an error, and the parsed options do not change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _extra(model: type[BaseModel], name: str) -> dict:
    return model.model_fields[name].json_schema_extra or {}


def flag(model: type[BaseModel], name: str) -> str:
    """How the command line spells field ``name``: its option, or a positional argument's name."""
    extra = _extra(model, name)
    if extra.get("positional"):
        return name.upper()
    return extra.get("flag", "--" + name.replace("_", "-"))


def add_options(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    for name, field in model.model_fields.items():
        extra = _extra(model, name)
        option = flag(model, name)
        if extra.get("positional"):
            parser.add_argument(name, metavar=option, help=field.description)
            continue
        if field.annotation is bool:
            parser.add_argument(
                option,
                dest=name,
                action="store_false" if field.default else "store_true",
                default=argparse.SUPPRESS,
                help=field.description,
            )
            continue
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        shown = " (required)" if field.is_required() else ""
        if default not in (None, []):
            shown = f" (default: {default})"
        kind = field.annotation
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None
            (kind,) = (t for t in typing.get_args(kind) if t is not type(None))
        many = {}
        if typing.get_origin(kind) is list:
            many = {"action": "append"} if extra.get("repeat") else {"nargs": "+"}
            (kind,) = typing.get_args(kind)
        choices = list(typing.get_args(kind)) if typing.get_origin(kind) is typing.Literal else None
        parser.add_argument(
            option,
            dest=name,
            required=field.is_required(),
            default=argparse.SUPPRESS,
            choices=choices,
            metavar=None
            if choices
            else extra.get("metavar", option.removeprefix("--").replace("-", "_").upper()),
            help=f"{field.description}{shown}",
            **many,
        )


def problems(model: type[BaseModel], error: ValidationError) -> str:
    """A validation error in the options' own words: ``--batch-wait-us: ...; --tls-key: ...``."""
    parts = []
    for problem in error.errors():
        message = problem["msg"].removeprefix("Value error, ")
        location = problem["loc"]
        if location and location[0] in model.model_fields:
            message = f"{flag(model, str(location[0]))}: {message}"
        parts.append(message)
    return "; ".join(parts)


def parse(parser: argparse.ArgumentParser, model: type[Model], options: dict) -> Model:
    """``model`` from parsed options; a bad value ends the program as argparse does (exit 2)."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        parser.error(problems(model, exc))


def parse_command(model: type[Model], prog: str, description: str, argv: Sequence[str] | None) -> Model:
    """A command whose options are exactly ``model``'s fields, parsed from ``argv``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_options(parser, model)
    return parse(parser, model, vars(parser.parse_args(argv)))
