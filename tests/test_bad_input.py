"""Malformed input and faults, in one table: every case is a real file (or flag) given to
``python -m prm.data``; a user's mistake must end in one ``error: ...`` line naming the file/line,
field or flag (exit non-zero), never a traceback and never a silently wrong output.

The property tests at the end feed random bytes and random JSON shapes to EVERY registered format
(``prm.data.FORMATS``), so a new format inherits them: records or a `DataError`, nothing else.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import re
import string
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FIXTURES = Path(__file__).parent / "fixtures"


def _rows(name: str) -> list[dict]:
    """The rows of a fixture file (JSON array or JSONL), read with the standard library only."""
    text = (FIXTURES / name).read_text(encoding="utf-8")
    if name.endswith(".json"):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def jl(*rows) -> bytes:
    """JSON Lines bytes; a str or bytes row is written as is."""
    out = b""
    for r in rows:
        out += (r if isinstance(r, bytes) else r.encode() if isinstance(r, str) else json.dumps(r).encode()) + b"\n"
    return out


def _with(row: dict, **kw) -> dict:
    return {**row, **kw}


MS = {"input": "Q? Step 1: a ки\nStep 2: b ки", "label": "Q? Step 1: a +\nStep 2: b -"}
MS_JSONL = jl(MS, MS, MS)
DEEP = "[" * 100_000 + "]" * 100_000
PRM800K = _rows("prm800k.jsonl")[0]
DREAM = _rows("dreamprm.jsonl")[0]
DREAM_MATH = _rows("dreamprm_train_math.json")[0]
OMI = _rows("openmathinstruct.jsonl")
MATH = _rows("math.jsonl")[0]
PB = _rows("processbench.jsonl")[0]
TRL = _rows("trl.jsonl")[0]


def _truncated_gz() -> bytes:
    data = gzip.compress(MS_JSONL * 50)
    return data[: len(data) // 2]


@dataclass
class Case:
    """One malformed input. ``files``: name -> bytes (a name ending in '/' is an empty folder);
    ``args``: CLI arguments, ``{d}`` is the case's folder. ``expect`` is "error" (exit non-zero, one
    ``error:`` line holding every string of ``needs``) or "ok" (exit 0, ``records`` records written,
    the first one holding ``first``)."""

    name: str
    files: dict[str, bytes]
    args: list[str]
    expect: str = "error"
    needs: list[str] = field(default_factory=list)
    records: int | None = None
    first: dict = field(default_factory=dict)
    kind: str = "traceback"  # what the old code did wrong: "traceback" or "silent" (a wrong result, exit 0)


def ms(*extra: str, data: bytes = MS_JSONL, name: str = "in.jsonl", fmt: str = "math_shepherd") -> list[str]:
    return ["--format", fmt, "--input", "{d}/" + name, "--output", "{d}/out.jsonl", *extra]


CASES = [
    # --- reading files -------------------------------------------------------------------------
    # a non-UTF-8 byte names its line and what to do
    Case("non_utf8_strict", {"in.jsonl": jl(MS, b'{"input": "Q\xff\xfe"}', MS)}, ms(), needs=["in.jsonl:2", "UTF-8"]),
    # --no-strict: the bad line is skipped and counted, the rest of the file is kept
    Case("non_utf8_lenient", {"in.jsonl": jl(MS, b'{"input": "Q\xff\xfe"}', MS)}, ms("--no-strict"), "ok", records=2),
    # a Latin-1 encoded JSON file is refused with a hint, not a UnicodeDecodeError
    Case("latin1_json", {"in.json": json.dumps([_with(MATH, problem="Café: " + MATH["problem"])], ensure_ascii=False).encode("latin-1")},
         ms(name="in.json", fmt="math"), needs=["in.json", "UTF-8"]),
    # a truncated download
    Case("gz_truncated", {"in.jsonl.gz": _truncated_gz()}, ms(name="in.jsonl.gz"), needs=["in.jsonl.gz", "gzip"]),
    # gzip magic followed by garbage
    Case("gz_corrupt", {"in.jsonl.gz": b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4}, ms(name="in.jsonl.gz"), needs=["in.jsonl.gz", "gzip"]),
    # plain text named .gz
    Case("gz_not_gzip", {"in.jsonl.gz": MS_JSONL}, ms(name="in.jsonl.gz"), needs=["in.jsonl.gz", "gzip"]),
    # JSON nested deeper than the parser's recursion limit (RecursionError before)
    Case("deep_nesting_strict", {"in.jsonl": jl(MS, DEEP, MS)}, ms(), needs=["in.jsonl:2", "nested"]),
    # ... in --no-strict it is one bad line among good ones
    Case("deep_nesting_lenient", {"in.jsonl": jl(MS, DEEP, MS)}, ms("--no-strict"), "ok", records=2),
    # ... and in a .json file
    Case("deep_nesting_json", {"in.json": DEEP.encode()}, ms(name="in.json"), needs=["in.json", "nested"]),
    # a UTF-8 byte-order mark must not cost the first row
    Case("bom_jsonl", {"in.jsonl": b"\xef\xbb\xbf" + MS_JSONL}, ms("--no-strict"), "ok", records=3, kind="silent"),
    Case("bom_json", {"in.json": b"\xef\xbb\xbf" + json.dumps([MS, MS]).encode()}, ms(name="in.json"), "ok", records=2),
    # a missing path shaped like a hub id, offline: one line, not a hub library traceback
    Case("hub_id_offline", {}, ["--format", "math_shepherd", "--input", "nobody/no-such-data", "--output", "{d}/out.jsonl"],
         needs=["nobody/no-such-data", "not a local file"]),
    # a format without packaged data needs --input
    Case("no_input", {}, ["--format", "math_shepherd", "--output", "{d}/out.jsonl"], needs=["--input"]),
    # a folder with no data files in it
    Case("input_empty_folder", {"empty/": b""}, ms(name="empty"), needs=["empty"]),
    # a folder of files with different columns (a data folder given instead of its file): one line naming the files
    Case("input_mixed_folder", {"data/a.jsonl": MS_JSONL, "data/b.jsonl": jl(PRM800K)}, ms(name="data"),
         needs=["data", "give one of its files", "a.jsonl, b.jsonl"]),
    # an empty file gives no records: an error, not an empty output with exit 0
    Case("empty_file", {"in.jsonl": b""}, ms(), needs=["in.jsonl", "no rows"], kind="silent"),
    # --- options -------------------------------------------------------------------------------
    # a bad option value is refused up front, even in --no-strict (was: every row rejected, empty output, exit 0)
    Case("option_label_scheme_lenient", {"in.jsonl": jl(PRM800K)}, ms("--option", "label_scheme=foo", "--no-strict", fmt="prm800k"),
         needs=["label_scheme", "foo"], kind="silent"),
    Case("option_neutral", {"in.jsonl": jl(PRM800K)}, ms("--option", "neutral=foo", fmt="prm800k"), needs=["neutral", "foo"]),
    # a number given to a text option is that text (the tag "5"), not a crash on an int
    Case("option_step_tag_number", {"in.jsonl": MS_JSONL}, ms("--option", "step_tag=5"), needs=["in.jsonl:1", "step tag '5'"]),
    # an unknown split mode
    Case("option_split_mode", {"in.jsonl": jl(MATH)}, ms("--option", "split_mode=foo", fmt="math"), needs=["split_mode", "foo"]),
    # a yes/no option given something else ("maybe" was read as true)
    Case("option_bool", {"in.jsonl": jl(*OMI)}, ms("--option", "only_correct=maybe", fmt="openmathinstruct"), needs=["only_correct"],
         kind="silent"),
    # an integer option given text
    Case("option_int", {"in.jsonl": (FIXTURES / "gsm8k.jsonl").read_bytes()},
         ms("--option", "seed=abc", fmt="gsm8k_errors"), needs=["seed"]),
    # an option the format does not have
    Case("option_unknown", {"in.jsonl": MS_JSONL}, ms("--option", "tag=x"), needs=["tag", "step_tag"]),
    # --limit must be positive (0 and -1 wrote an empty file and exited 0)
    Case("limit_zero", {"in.jsonl": MS_JSONL}, ms("--limit", "0"), needs=["--limit"], kind="silent"),
    Case("limit_negative", {"in.jsonl": MS_JSONL}, ms("--limit", "-1"), needs=["--limit"], kind="silent"),
    # --no-strict with every row rejected: an error, not an empty output with exit 0
    Case("all_rejected_lenient", {"in.jsonl": jl({"input": "x"}, {"input": "y"})}, ms("--no-strict"), needs=["no records", "label"],
         kind="silent"),
    # --- output --------------------------------------------------------------------------------
    # --output names a folder
    Case("output_is_folder", {"in.jsonl": MS_JSONL, "outdir/": b""}, ["--format", "math_shepherd", "--input", "{d}/in.jsonl", "--output", "{d}/outdir"],
         needs=["--output", "outdir"]),
    # --output lies under a file
    Case("output_under_file", {"in.jsonl": MS_JSONL}, ["--format", "math_shepherd", "--input", "{d}/in.jsonl", "--output", "{d}/in.jsonl/out.jsonl"],
         needs=["--output"]),
    # --output where nobody may write (a read-only system folder, even for root)
    Case("output_unwritable", {"in.jsonl": MS_JSONL}, ["--format", "math_shepherd", "--input", "{d}/in.jsonl", "--output", "/sys/prm-out.jsonl"],
         needs=["--output"]),
    # --- values that used to be stored wrong ---------------------------------------------------
    # NaN, infinity and out-of-range solution scores are refused, naming the field
    Case("meta_label_nan", {"in.jsonl": jl(json.dumps(DREAM).replace('"meta_label": 1.0', '"meta_label": NaN'))}, ms(fmt="dreamprm"),
         needs=["in.jsonl:1", "meta_label"], kind="silent"),
    Case("meta_label_inf", {"in.jsonl": jl(json.dumps(DREAM).replace('"meta_label": 1.0', '"meta_label": Infinity'))}, ms(fmt="dreamprm"),
         needs=["in.jsonl:1", "meta_label"], kind="silent"),
    Case("meta_label_out_of_range", {"in.jsonl": jl(_with(DREAM, meta_label=1.7))}, ms(fmt="dreamprm"), needs=["meta_label"], kind="silent"),
    Case("accuracy_nan_string", {"in.jsonl": jl(_with(DREAM_MATH, accuracy="nan"))}, ms(fmt="dreamprm_math"), needs=["accuracy"], kind="silent"),
    Case("accuracy_out_of_range", {"in.jsonl": jl(_with(DREAM_MATH, accuracy=-3))}, ms(fmt="dreamprm_math"), needs=["accuracy"], kind="silent"),
    # any other NaN copied from the input (here MATH's 'level') never reaches the output
    Case("meta_nan_elsewhere", {"in.jsonl": jl(json.dumps(MATH).replace('"Level 1"', "NaN"))}, ms(fmt="math"), needs=["level"], kind="silent"),
    # is_correct "false" (a string) is false, not a truthy string
    Case("is_correct_string", {"in.jsonl": jl(OMI[0], _with(OMI[1], is_correct="false"))}, ms("--option", "only_correct=true", fmt="openmathinstruct"),
         "ok", records=1, kind="silent"),
    # ... and a value that is no yes/no at all is refused
    Case("is_correct_garbage", {"in.jsonl": jl(_with(OMI[1], is_correct="maybe"))}, ms("--option", "only_correct=true", fmt="openmathinstruct"),
         needs=["is_correct"], kind="silent"),
    # an answer that is a JSON object (was written as its Python repr)
    Case("dict_answer_math", {"in.jsonl": jl(_with(MATH, answer={"value": 1}))}, ms(fmt="math"), needs=["answer"], kind="silent"),
    Case("dict_answer_omi", {"in.jsonl": jl(_with(OMI[0], expected_answer={"value": 42}))}, ms(fmt="openmathinstruct"), needs=["expected_answer"],
         kind="silent"),
    # a NaN answer (was the text "nan")
    Case("nan_answer", {"in.jsonl": jl(json.dumps(_with(MATH, answer=0.5)).replace("0.5", "NaN"))}, ms(fmt="math"), needs=["answer"], kind="silent"),
    # ProcessBench label true is not "first error at step 1"
    Case("processbench_label_bool", {"in.jsonl": jl(_with(PB, label=True))}, ms(fmt="processbench"), needs=["label"], kind="silent"),
    # PRM800K chosen_completion true is not index 1
    Case("prm800k_chosen_bool", {"in.jsonl": jl(json.loads(json.dumps(PRM800K).replace('"chosen_completion": 0', '"chosen_completion": true', 1)))},
         ms(fmt="prm800k"), needs=["chosen_completion"], kind="silent"),
    # MATH answer 0 is an answer (was replaced by the boxed one)
    Case("math_answer_zero", {"in.jsonl": jl(_with(MATH, answer=0))}, ms(fmt="math"), "ok", records=1, first={"answer": "0"}, kind="silent"),
    # TRL bool labels read under label_scheme=ternary would turn true into "neutral"
    Case("trl_bool_ternary", {"in.jsonl": jl(TRL)}, ms("--option", "label_scheme=ternary", fmt="trl"), needs=["labels"], kind="silent"),
]


def _materialize(case: Case, d: Path) -> list[str]:
    for name, data in case.files.items():
        p = d / name
        if name.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    return [a.replace("{d}", str(d)) for a in case.args]


def judge(case: Case, rc: int, out: str, err: str, d: Path) -> str:
    """"ok", "traceback" or "wrong: <why>" for one run of ``case``."""
    if "Traceback (most recent call last)" in err:
        return "traceback"
    if case.expect == "error":
        lines = [x for x in err.strip().splitlines() if x.strip()]
        if rc == 0:
            return "wrong: exit 0"
        if not lines or not lines[-1].startswith("error:") or sum(x.startswith("error:") for x in lines) != 1:
            return f"wrong: no single error line: {err.strip()[-300:]!r}"
        missing = [n for n in case.needs if n not in lines[-1]]
        return f"wrong: error line lacks {missing}: {lines[-1]!r}" if missing else "ok"
    if rc != 0:
        return f"wrong: exit {rc}: {err.strip()[-300:]!r}"
    text = (d / "out.jsonl").read_text(encoding="utf-8")
    for token in ("NaN", "Infinity"):
        if token in text:
            return f"wrong: {token} in the output"
    recs = [json.loads(x) for x in text.splitlines()]
    if case.records is not None and len(recs) != case.records:
        return f"wrong: {len(recs)} records, expected {case.records}"
    for k, v in case.first.items():
        if recs[0].get(k) != v:
            return f"wrong: first record {k}={recs[0].get(k)!r}, expected {v!r}"
    return "ok"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cli_case(case: Case, tmp_path: Path) -> None:
    from prm.data.__main__ import main

    if case.name == "output_unwritable" and os.access("/sys", os.W_OK) and not _sys_readonly():
        pytest.skip("/sys is writable here")
    args = _materialize(case, tmp_path)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main(args)
        except SystemExit as e:  # argparse errors
            rc = e.code if isinstance(e.code, int) else 1
            if isinstance(e.code, str):
                print(e.code, file=err)
    verdict = judge(case, rc, out.getvalue(), err.getvalue(), tmp_path)
    assert verdict == "ok", verdict


def _sys_readonly() -> bool:
    try:
        import tempfile

        fd, p = tempfile.mkstemp(dir="/sys")
    except OSError:
        return True
    os.close(fd)
    os.unlink(p)
    return False


# The same mistakes through the Python API (`prm.data.load`): a DataError naming the input.
API_CASES = [
    # a hub-shaped id offline, read at once or streamed
    ("hub_id_offline", "nobody/no-such-data", {}, "not a local file"),
    pytest.param("hub_id_offline_streaming", "nobody/no-such-data", {"streaming": True}, "not a local file", marks=pytest.mark.slow),
    # limits of 0 or less, and a bool, are refused
    ("limit_zero", "in.jsonl", {"limit": 0}, "limit"),
    ("limit_bool", "in.jsonl", {"limit": True}, "limit"),
    # a bad option value, even with strict=False
    ("bad_option_lenient", "in.jsonl", {"step_tag": 5, "strict": False}, "step_tag"),
    # every row rejected with strict=False: an error, not an empty dataset
    ("all_rejected", "bad.jsonl", {"strict": False}, "every row (2) was rejected"),
]


@pytest.mark.parametrize("name, source, kw, needs", API_CASES, ids=[(c.values if hasattr(c, "values") else c)[0] for c in API_CASES])
def test_load_case(tmp_path: Path, name: str, source: str, kw: dict, needs: str) -> None:
    from prm.data import load
    from prm.schema import DataError

    (tmp_path / "in.jsonl").write_bytes(MS_JSONL)
    (tmp_path / "bad.jsonl").write_bytes(jl({"input": "x"}, {"input": "y"}))
    src = source if "/" in source else tmp_path / source
    with pytest.raises(DataError, match=re.escape(needs)):
        ds = load("math_shepherd", src, **kw)
        list(ds)  # a streamed source fails when read


# --- every registered format: random bytes and random JSON shapes ----------------------------

_keys = st.sampled_from(["input", "label", "question", "problem", "steps", "prompt", "completions", "labels", "text", "rating",
                         "cot_steps", "cot_response", "pi", "meta_label", "value", "answer", "solution", "full_solution", "accuracy",
                         "generated_solution", "is_correct", "expected_answer", "informal_prefix", "formal_statement", "chosen_completion",
                         "label_scheme", "step_labels", "fws_annotations", "_raw_text", "start_idx", "informal_statement"])
_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
            | st.text(alphabet=string.printable + "ки\ufeffé", max_size=12))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=5), max_leaves=16)


def _formats() -> list[str]:
    from prm.data import FORMATS

    return FORMATS.names()


@settings(max_examples=200, deadline=None)
@given(fmt=st.sampled_from(_formats()), row=_json)
def test_random_json_shapes_give_records_or_data_error(fmt: str, row) -> None:
    from prm.data import convert_rows
    from prm.schema import DataError

    try:
        recs = list(convert_rows(fmt, [("r.jsonl:1", row)]))
    except DataError as e:
        assert e.where == "r.jsonl:1"
        return
    for rec in recs:  # what is accepted is finite and well formed
        assert len(rec["labels"]) == len(rec["completions"])
        json.dumps(rec, allow_nan=False)
        assert all(v is None or math.isfinite(v) for v in rec["labels"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(_formats()), data=st.binary(max_size=300), suffix=st.sampled_from([".jsonl", ".json", ".jsonl.gz", ".json.gz"]),
       strict=st.booleans())
def test_random_bytes_give_records_or_data_error(tmp_path: Path, fmt: str, data: bytes, suffix: str, strict: bool) -> None:
    from prm.data import load
    from prm.schema import DataError

    p = tmp_path / f"in{suffix}"
    p.write_bytes(gzip.compress(data) if suffix.endswith(".gz") and data[:1] == b"{" else data)
    try:
        load(fmt, p, strict=strict)
    except DataError as e:
        assert str(p) in str(e)


@pytest.mark.parametrize("fmt", _formats())
def test_every_format_refuses_bad_option_values_up_front(fmt: str) -> None:
    """Each keyword option of each format is checked against its annotation before any row is
    read, even with strict=False (no row is ever converted under a bad option)."""
    import inspect

    from prm.data import FORMATS, convert_rows
    from prm.schema import OptionError

    def rows():
        raise AssertionError("a row was read")
        yield

    params = [n for n, v in inspect.signature(FORMATS.get(fmt)).parameters.items() if v.kind == v.KEYWORD_ONLY]
    for name in params:
        with pytest.raises(OptionError, match=name):
            list(convert_rows(fmt, rows(), strict=False, **{name: {"not": "valid"}}))


# --- append-only work files: a torn last line (a kill mid-write) ------------------------------

TORN = [
    # a row cut in the middle: dropped (its work is redone), counted in a warning
    (b'{"id": "c", "val', 2, True),
    # cut inside a multi-byte character
    ('{"id": "c", "text": "\u043a'.encode()[:-1], 2, True),
    # cut just before the newline: the row is whole, kept
    (b'{"id": "c"}', 3, False),
    # a clean file
    (b"", 2, False),
]


@pytest.mark.parametrize("tail, n_rows, warned", TORN)
def test_torn_last_line_is_dropped_and_counted(tmp_path: Path, caplog, tail: bytes, n_rows: int, warned: bool) -> None:
    import logging

    from prm.io import append_jsonl, read_appended

    p = tmp_path / "work.jsonl"
    p.write_bytes(jl({"id": "a"}, {"id": "b"}) + tail)
    with caplog.at_level(logging.WARNING):
        rows = read_appended(p)
    assert [r["id"] for r in rows] == ["a", "b", "c"][:n_rows]
    assert ("dropped 1 unreadable line" in caplog.text) == warned
    # the next append repairs the tail instead of fusing with it
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        append_jsonl(p, {"id": "d"})
    assert ("torn last line" in caplog.text) == warned
    assert [json.loads(x)["id"] for x in p.read_text(encoding="utf-8").splitlines()] == ["a", "b", "c"][:n_rows] + ["d"]


def test_pipeline_rerun_after_a_torn_graded_line(tmp_path: Path) -> None:
    """A killed grading stage leaves a torn last line: the rerun redoes that one solution only."""
    from prm.label.pipeline import grade
    from prm.label.verify.rules import RulesVerifier

    sols = [{"id": f"q{i}", "prompt": f"What is {i}+1?", "answer": str(i + 1), "solutions": [f"{i} + 1 = {i + 1}\nThe answer is {i + 1}"]}
            for i in range(3)]
    path = tmp_path / "graded.jsonl"
    first = grade(sols, RulesVerifier(), path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]) + lines[2][:25])  # killed while writing the third row

    class Counting(RulesVerifier):
        calls = 0

        def grade(self, *a):
            Counting.calls += 1
            return super().grade(*a)

    again = grade(sols, Counting(), path)
    assert again == first and Counting.calls == 1
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3
