"""Command-line parsing for `exp/` scripts: dataclass fields become flags (HfArgumentParser), then
``--config x.yaml`` supplies values, then flags given on the command line override them.
Unknown keys in the YAML file fail with the list of known ones."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser


def parse(dataclass_types: Any, argv: list[str] | None = None, description: str | None = None) -> tuple:
    """Parse ``argv`` into instances of ``dataclass_types`` (a type or a tuple of types)."""
    types = dataclass_types if isinstance(dataclass_types, (tuple, list)) else (dataclass_types,)
    parser = HfArgumentParser(types, description=description)
    parser.add_argument("--config", type=str, default=None, help="YAML file of option values; flags given on the command line override it")
    argv = list(sys.argv[1:] if argv is None else argv)
    import argparse

    pre_parser = argparse.ArgumentParser(add_help=False)
    pre_parser.add_argument("--config", default=None)
    pre, _ = pre_parser.parse_known_args(argv)
    if pre.config:
        path = Path(pre.config)
        if not path.is_file():
            parser.error(f"--config: no such file: {path}")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            parser.error(f"--config {path}: expected a mapping of option: value")
        known = {f.name for t in types for f in fields(t)}
        unknown = sorted(set(values) - known)
        if unknown:
            parser.error(f"--config {path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for action in parser._actions:
            if action.dest in values:
                action.required = False
        parser.set_defaults(**values)
    out = parser.parse_args_into_dataclasses(args=argv)
    return tuple(o for o in out if o is not None)[: len(types)]


def run(main: Callable[..., Any], dataclass_types: Any, description: str | None = None, argv: list[str] | None = None,
        user_errors: tuple[type[BaseException], ...] = ()) -> Any:
    """``main(*parse(dataclass_types, argv))`` for an `exp/` script: a user's mistake (a missing file,
    a bad data row, an unknown component name, plus ``user_errors``) ends in one line
    ``error: ...`` and exit status 1, not a traceback; anything else still raises."""
    from prm.label.claude import ClaudeAPIError
    from prm.registry import UnknownName
    from prm.schema import DataError

    cfgs = parse(dataclass_types, argv, description=description)
    try:
        return main(*cfgs)
    except (FileNotFoundError, DataError, UnknownName, ClaudeAPIError, *user_errors) as e:
        raise SystemExit(f"error: {e}") from None
