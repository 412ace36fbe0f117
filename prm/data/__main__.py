"""Convert a data file (or hub dataset) to stepwise JSONL.

    python -m prm.data --format math_shepherd --input samples_math-shepherd.jsonl --output out.jsonl
    python -m prm.data --format prm800k --input phase2_train.jsonl --output out.jsonl \\
        --option label_scheme=binary --option neutral=positive --no-strict
    python -m prm.data --format champ_fws --output champ.jsonl        # packaged data, no --input
    python -m prm.data --list                                         # formats and their options
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
from pathlib import Path

from prm.data import FORMATS, Report, check_limit, check_options, convert_rows, iter_source, parse_option, to_trl
from prm.io import write_jsonl
from prm.schema import DataError, OptionError


def _formats_help() -> str:
    lines = []
    for name in FORMATS.names():
        conv = FORMATS.get(name)
        opts = [f"{p}={v.default!r}" for p, v in inspect.signature(conv).parameters.items() if v.kind == v.KEYWORD_ONLY]
        summary = (inspect.getdoc(conv) or "").split("\n")[0]
        lines.append(f"{name:16s} {summary}\n{'':16s} options: {', '.join(opts) or 'none'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m prm.data",
        description="Convert step-labeled or problem data to this project's stepwise JSONL records.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Use --list to see every format and its options.",
    )
    ap.add_argument("--format", help="input format (see --list)")
    ap.add_argument("--input", help="local JSON/JSONL(.gz) file or Hugging Face dataset id; omit for packaged data (CHAMP)")
    ap.add_argument("--output", help="output JSONL path (written atomically)")
    ap.add_argument("--to", choices=("stepwise", "trl"), default="stepwise", help="output format (default: stepwise records)")
    ap.add_argument("--split", default="train", help="hub split (default: train)")
    ap.add_argument("--name", default=None, help="hub config name")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="converter option, repeatable (JSON when that fits the option: true, 3, null; else the text as given)")
    ap.add_argument("--no-strict", dest="strict", action="store_false", help="skip and count bad rows instead of stopping at the first")
    ap.add_argument("--limit", type=int, default=None, help="stop after this many records")
    ap.add_argument("--list", action="store_true", help="list formats and their options")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.list:
        print(_formats_help())
        return 0
    if not args.format or not args.output:
        ap.error("--format and --output are required (or --list)")
    options = {}
    for kv in args.option:
        if "=" not in kv:
            ap.error(f"--option expects KEY=VALUE, got '{kv}'")
        k, v = kv.split("=", 1)
        options[k] = parse_option(args.format, k, v)
    problem = output_problem(args.output)
    if problem:
        return _fail(problem)

    report = Report()
    try:
        check_limit(args.limit)
        check_options(args.format, options)
        rows = iter_source(args.format, args.input, split=args.split, name=args.name)
        records = list(convert_rows(args.format, rows, strict=args.strict, report=report, limit=args.limit, **options))
        if args.to == "trl":
            records = [to_trl(r) for r in records]
    except OptionError as e:
        return _fail(f"--option {e.option}: {e.reason}" if e.option not in ("limit", "source") else
                     f"--limit {args.limit}: give a positive number of records" if e.option == "limit" else f"--input: {e.reason}")
    except (DataError, FileNotFoundError, KeyError) as e:
        return _fail(str(e))
    if not records:
        where = args.input or "packaged data"
        if not report.rows:
            return _fail(f"{where}: no rows in the input; nothing to write")
        if report.n_rejected:
            return _fail(f"no records: all {report.rows} rows of {where} were rejected: {report.first_reasons()}")
        return _fail(f"no records: none of the {report.rows} rows of {where} gave a record (check the options)")
    try:
        n = write_jsonl(args.output, records, strict=True)
    except OSError as e:
        return _fail(f"--output {args.output}: cannot write it ({e.strerror or e})")
    print(f"wrote {n} records to {args.output}")
    print(report.summary())
    for ex in report.examples:
        print(f"  e.g. {ex}")
    return 0


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def output_problem(path: str) -> str | None:
    """Why ``path`` cannot be written as an output file, checked before any work; None if it can."""
    p = Path(path)
    if p.is_dir():
        return f"--output {p} is a folder; give a file path"
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"--output {p}: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--output {p}: no permission to write in {parent}"
    return None


if __name__ == "__main__":
    sys.exit(main())
