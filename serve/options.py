"""Command-line options from a typed config: one option per pydantic field.

semore-serve (``ServeConfig``) and semore-fleet (``fleet.config``) both build their options here,
so a setting's name, unit, default, help and check are written once, on its field, and a setting
that means the same in both tools is spelled the same.

- ``--field-name`` unless ``json_schema_extra={"flag": ...}`` names another; ``"metavar"`` names
  the value in the help.
- The field's description is the help; a Literal gives the choices.
- A bool is a flag that flips its default.
- An option left out is left out of the result too (``SUPPRESS``), so the model's own default
  applies and is written nowhere else.
"""

from __future__ import annotations

import argparse
import types
import typing

from pydantic import BaseModel, ValidationError


def flag(model: type[BaseModel], name: str) -> str:
    """The option that sets field ``name``."""
    return (model.model_fields[name].json_schema_extra or {}).get("flag", "--" + name.replace("_", "-"))


def add_options(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra or {}
        option = flag(model, name)
        if field.annotation is bool:
            parser.add_argument(
                option,
                dest=name,
                action="store_false" if field.default else "store_true",
                default=argparse.SUPPRESS,
                help=field.description,
            )
            continue
        shown = " (required)" if field.is_required() else ""
        if field.default is not None and not field.is_required():
            shown = f" (default: {field.default})"
        kind = field.annotation
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None
            (kind,) = (t for t in typing.get_args(kind) if t is not type(None))
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


def parse(parser: argparse.ArgumentParser, model: type[BaseModel], options: dict) -> BaseModel:
    """``model`` from parsed options; a bad value ends the program as argparse does (exit 2)."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        parser.error(problems(model, exc))
