import json
import string

import datasets
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prm.data import FORMATS, Report, convert_rows, load, to_trl
from prm.data.__main__ import main as cli
from prm.io import write_jsonl
from prm.registry import UnknownName
from prm.schema import DataError, make_record


def test_math_shepherd(fixtures):
    ds = load("math_shepherd", fixtures / "math_shepherd.jsonl")
    r = ds[0]
    assert r["prompt"] == "Tom has 3 apples and buys 2 more. How many?"
    assert r["completions"] == ["Step 1: 3 + 2 = <<3+2=5>>5 apples.", "Step 2: The answer is: 5"]
    assert r["labels"] == [1.0, 1.0] and r["answer"] == "5" and r["meta"] == {"task": "GSM8K"}
    assert ds[1]["labels"] == [0.0, 0.0]


def test_prm800k_ternary_paths(fixtures):
    ds = load("prm800k", fixtures / "prm800k.jsonl", paths="chosen")
    p1, p2, p3 = ds
    # phase 1: chosen, chosen, then the first -1 completion ends the path (found_error)
    assert p1["completions"] == ["First, 3*4 = 12.", "Then 2 + 12 = 14.", "So the answer is 15."]
    assert p1["labels"] == [2.0, 1.0, 0.0] and p1["label_scheme"] == "ternary" and p1["answer"] == "14"
    # phase 2: the pre-generated solution; after the first -1 nothing is labeled
    assert p2["completions"] == ["10/4 = 2.5.", "That is 5/3.", "# Answer\n\n5/3"]
    assert p2["labels"] == [2.0, 0.0, None] and p2["meta"]["phase"] == 2
    # a human completion is a positive step
    assert p3["completions"] == ["1+1 = 2."] and p3["labels"] == [2.0]


@pytest.mark.parametrize(
    "neutral, expected",
    [("negative", [1.0, 0.0, 0.0]), ("positive", [1.0, 1.0, 0.0]), ("ignore", [1.0, None, 0.0])],
)
def test_prm800k_binary_neutral(fixtures, neutral, expected):
    ds = load("prm800k", fixtures / "prm800k.jsonl", paths="chosen", label_scheme="binary", neutral=neutral)
    assert ds[0]["labels"] == expected


def test_prm800k_all_paths_adds_alternatives(fixtures):
    ds = load("prm800k", fixtures / "prm800k.jsonl", label_scheme="binary")
    alts = [r for r in ds if "alternative_at" in r["meta"]]
    texts = {tuple(r["completions"]): r["labels"] for r in alts}
    # the -1 alternative at step 0 and the second wrong final step are their own paths
    assert texts[("First, 2+3 = 5.",)] == [0.0]
    assert texts[("First, 3*4 = 12.", "Then 2 + 12 = 14.", "So the answer is 16.")] == [1.0, 0.0, 0.0]
    # phase 2 alternative "That is 5/2." after the rated prefix
    assert texts[("10/4 = 2.5.", "That is 5/2.")] == [1.0, 1.0]


def test_trl_both_ways(fixtures, tmp_path):
    ds = load("trl", fixtures / "trl.jsonl")
    assert ds[0]["labels"] == [1.0, 1.0] and ds[0]["label_scheme"] == "binary"
    back = [to_trl(r) for r in ds]
    assert back[1] == {"prompt": "What is 3*3?", "completions": ["3*3 = 6.", "The answer is 6."], "labels": [False, False]}
    # float labels must say which scheme they are
    with pytest.raises(DataError, match="numeric labels need an explicit label_scheme"):
        load("trl", fixtures / "trl_soft.jsonl")
    soft = load("trl", fixtures / "trl_soft.jsonl", label_scheme="soft")
    assert soft[0]["labels"] == [0.9, 0.75] and to_trl(soft[0])["labels"] == [0.9, 0.75]


def test_to_trl_drops_trailing_unlabeled_and_refuses_gaps():
    r = make_record("p", ["a", "b", "c"], [1, 0, None], "binary")
    assert to_trl(r)["completions"] == ["a", "b"]
    with pytest.raises(DataError, match="unlabeled step before a labeled one"):
        to_trl(make_record("p", ["a", "b"], [None, 1], "binary"))
    with pytest.raises(DataError, match="only binary or soft"):
        to_trl(make_record("p", ["a"], [2], "ternary"))


def test_prt(fixtures):
    ds = load("prt", fixtures / "prt.json")
    assert ds[1]["prompt"] == "Find the derivative of 3x." and ds[1]["labels"] == [0.0, 0.0]


def test_dreamprm(fixtures):
    r = load("dreamprm", fixtures / "dreamprm.jsonl")[0]
    assert r["prompt"].startswith("Show that 2 + 2 = 4.") and "theorem t" in r["prompt"]
    assert len(r["completions"]) == 2 and r["completions"][1].startswith("### Step 2")
    assert r["labels"] == [0.8, 0.6] and r["label_scheme"] == "soft" and r["meta"]["meta_label"] == 1.0


def test_dreamprm_math(fixtures):
    train = load("dreamprm_math", fixtures / "dreamprm_train_math.json")
    assert train[1]["completions"] == ["6/4 = 1.4.\nSo it is 1.4.\n\nThe final answer is: $\\boxed{1.4}$"]
    assert train[1]["meta"] == {"meta_label": 0.0, "domain": "gsm8k"} and train[1]["label_scheme"] == "none"
    with pytest.raises(DataError, match="pass prompts=FILE"):
        load("dreamprm_math", fixtures / "dreamprm_meta_math.json")
    meta = load("dreamprm_math", fixtures / "dreamprm_meta_math.json", prompts=str(fixtures / "dreamprm_train_math.json"))
    assert meta[0]["prompt"] == "What is 6/3?" and meta[0]["labels"] == [1.0] and meta[0]["answer"] == "2"


def test_processbench(fixtures):
    a, b = load("processbench", fixtures / "processbench.jsonl")
    assert a["labels"] == [1.0, 0.0, None] and a["meta"]["label"] == 1 and a["id"] == "gsm8k-0"
    assert b["labels"] == [1.0, 1.0] and b["meta"]["final_answer_correct"] is True


def test_problem_sets(fixtures):
    g = load("gsm8k", fixtures / "gsm8k.jsonl")
    assert g[0]["completions"] == ["He has 3+2=<<3+2=5>>5 apples."] and g[0]["answer"] == "5"
    assert g[1]["answer"] == "2000" and g[0]["label_scheme"] == "none" and g[0]["labels"] == [None]
    assert load("gsm8k", fixtures / "gsm8k.jsonl", strip_calculator=True)[0]["completions"] == ["He has 3+2=5 apples."]
    m = load("math", fixtures / "math.jsonl")[0]
    assert m["answer"] == "1" and len(m["completions"]) == 2 and m["meta"]["level"] == "Level 1"
    f = load("minif2f", fixtures / "minif2f.jsonl")
    assert f[0]["prompt"] == "What is $2+2$? Show that it is 4." and f[0]["answer"] == "4" and f[0]["completions"] == []
    assert f[0]["meta"]["formal_statement"].startswith("theorem") and f[1]["completions"] == ["We have 3+3=6.", "So it is 6."]
    o = load("openmathinstruct", fixtures / "openmathinstruct.jsonl")
    assert len(o) == 2 and o[0]["answer"] == "42" and o[1]["meta"]["is_correct"] is False
    assert len(load("openmathinstruct", fixtures / "openmathinstruct.jsonl", only_correct=True)) == 1


def test_champ_packaged():
    fws = load("champ_fws", limit=40)
    assert len(fws) == 40
    r = fws[0]
    first = r["meta"]["label"]
    if first >= 0:
        assert r["labels"][first] == 0.0 and all(v == 1.0 for v in r["labels"][:first])
        assert all(v is None for v in r["labels"][first + 1 :])
    else:
        assert all(v == 1.0 for v in r["labels"])
    probs = load("champ", limit=3)
    assert probs[0]["answer"] and probs[0]["completions"]


# --- errors: file, line, field; strict and lenient -------------------------------------------


def _write(tmp_path, name, rows):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


GOOD = {"input": "Q? Step 1: a ки\nStep 2: b ки", "label": "Q? Step 1: a +\nStep 2: b -"}


@pytest.mark.parametrize(
    "bad, field, reason",
    [
        # invalid JSON is reported at its line
        ('{"input": "Q?', None, "invalid JSON"),
        # a required field is missing
        ({"input": GOOD["input"]}, "label", "missing field"),
        # the label text does not line up with the step tags
        ({"input": GOOD["input"], "label": "Q? Step 1: a x\nStep 2: b -"}, "label", "no '+'/'-' where the input has a step tag"),
        # no 'Step 1:' to split the problem from the first step
        ({"input": "Q? a ки", "label": "Q? a +"}, "input", "cannot find 'Step 1:' separating the problem from the first step"),
    ],
)
def test_bad_row_error_names_file_line_field(tmp_path, bad, field, reason):
    p = _write(tmp_path, "in.jsonl", [GOOD, bad, GOOD])
    with pytest.raises(DataError) as e:
        load("math_shepherd", p)
    assert e.value.where == f"{p}:2" and e.value.field == field and e.value.reason == reason
    # lenient mode keeps the good rows and counts the bad one by kind
    report = Report()
    ds = load("math_shepherd", p, strict=False, report=report)
    assert len(ds) == 2 and report.rows == 3 and report.n_rejected == 1
    assert report.rejected[e.value.kind] == 1


@pytest.mark.parametrize(
    "row, field, reason",
    [
        # PRM800K ratings are -1, 0 or +1
        ({"question": {"problem": "q"}, "label": {"steps": [{"completions": [{"text": "a", "rating": 2}], "chosen_completion": 0}]}}, "label.steps[0].completions[0].rating", "rating out of range"),
        # chosen_completion must point at a completion
        ({"question": {"problem": "q"}, "label": {"steps": [{"completions": [{"text": "a", "rating": 1}], "chosen_completion": 3}]}}, "label.steps[0].chosen_completion", "index out of range"),
        # empty step text
        ({"question": {"problem": "q"}, "label": {"steps": [{"completions": [{"text": " ", "rating": 1}], "chosen_completion": 0}]}}, "label.steps[0].completions[0].text", "empty step"),
        # missing problem
        ({"question": {}, "label": {"steps": []}}, "question.problem", "missing field"),
    ],
)
def test_prm800k_errors(row, field, reason):
    with pytest.raises(DataError) as e:
        list(convert_rows("prm800k", [("x.jsonl:1", row)]))
    assert (e.value.field, e.value.reason, e.value.where) == (field, reason, "x.jsonl:1")


def test_length_mismatch_names_field(tmp_path):
    p = _write(tmp_path, "pb.jsonl", [{"problem": "q", "steps": ["a"], "label": 3}])
    with pytest.raises(DataError, match=r"pb.jsonl:1: field 'label': first-error index out of range"):
        load("processbench", p)
    p = _write(tmp_path, "d.jsonl", [{"informal_prefix": "q", "cot_response": "a\n\nb", "cot_steps": [{"pi": 1}]}])
    with pytest.raises(DataError, match=r"d.jsonl:1: field 'cot_steps': labels/steps length mismatch"):
        load("dreamprm", p)


def test_unknown_format_and_option(fixtures):
    with pytest.raises(UnknownName, match="unknown data format 'shepherd'; known: .*math_shepherd"):
        load("shepherd", fixtures / "math_shepherd.jsonl")
    with pytest.raises(TypeError, match="format 'math_shepherd' has no option 'tag'; its options: step_tag, source"):
        load("math_shepherd", fixtures / "math_shepherd.jsonl", tag="x")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load("math_shepherd", "nope/missing.jsonl")


def test_gz_and_streaming_and_local_dataset_dir(fixtures, tmp_path):
    import gzip

    gz = tmp_path / "ms.jsonl.gz"
    gz.write_bytes(gzip.compress((fixtures / "math_shepherd.jsonl").read_bytes()))
    plain = load("math_shepherd", fixtures / "math_shepherd.jsonl").to_list()
    assert load("math_shepherd", gz).to_list() == plain
    streamed = load("math_shepherd", gz, streaming=True)
    assert isinstance(streamed, datasets.IterableDataset) and list(streamed) == plain
    # a dataset folder goes through datasets.load_dataset, as a hub id does
    d = tmp_path / "repo"
    d.mkdir()
    (d / "train.jsonl").write_bytes((fixtures / "math_shepherd.jsonl").read_bytes())
    assert load("math_shepherd", d).to_list() == plain
    assert list(load("math_shepherd", d, streaming=True)) == plain


def test_cli(fixtures, tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    bad = _write(tmp_path, "in.jsonl", [GOOD, {"input": "x"}])
    assert cli(["--format", "math_shepherd", "--input", str(bad), "--output", str(out), "--no-strict"]) == 0
    text = capsys.readouterr().out
    assert "wrote 1 records" in text and "1 x label: missing field" in text
    assert cli(["--format", "math_shepherd", "--input", str(bad), "--output", str(out)]) == 2
    assert "in.jsonl:2: field 'label': missing field" in capsys.readouterr().err
    assert cli(["--format", "trl", "--input", str(fixtures / "trl.jsonl"), "--output", str(out), "--to", "trl"]) == 0
    assert json.loads(out.read_text().splitlines()[0])["labels"] == [True, True]
    assert cli(["--list"]) == 0 and "prm800k" in capsys.readouterr().out


# --- property tests ---------------------------------------------------------------------------

_text = st.text(alphabet=string.ascii_letters + string.digits + " +-*/=.$\\{}ки\n", min_size=1, max_size=30).filter(lambda s: s.strip())


@st.composite
def records(draw):
    n = draw(st.integers(1, 6))
    scheme = draw(st.sampled_from(["binary", "ternary", "soft", "none"]))
    label = {
        "binary": st.sampled_from([0.0, 1.0, None]),
        "ternary": st.sampled_from([0.0, 1.0, 2.0, None]),
        "soft": st.one_of(st.none(), st.floats(0, 1)),
        "none": st.none(),
    }[scheme]
    return make_record(
        draw(_text), [draw(_text) for _ in range(n)], [draw(label) for _ in range(n)], scheme,
        answer=draw(st.one_of(st.none(), _text)), id=draw(_text), source="t", meta={"k": draw(st.integers(-(2**53), 2**53))},
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(records(), min_size=1, max_size=5))
def test_stepwise_roundtrip(tmp_path, recs):
    p = tmp_path / "r.jsonl"
    write_jsonl(p, recs)
    assert load("stepwise", p).to_list() == recs


@settings(max_examples=60, deadline=None)
@given(records())
def test_trl_roundtrip(rec):
    try:
        t = to_trl(rec)
    except DataError:
        return  # ternary, unlabeled or gapped labels: not expressible in TRL, refused clearly
    scheme = "binary" if rec["label_scheme"] == "binary" else "soft"
    back = next(convert_rows("trl", [("t", t)], label_scheme=None if scheme == "binary" else "soft"))
    assert back["completions"] == rec["completions"][: len(t["labels"])]
    assert back["labels"] == rec["labels"][: len(t["labels"])]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["input", "label", "question", "problem", "steps", "prompt", "completions", "labels", "text", "rating", "cot_steps", "cot_response", "value", "answer", "solution"]), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(FORMATS.names()), _json)
def test_garbage_raises_only_data_error(fmt, row):
    try:
        list(convert_rows(fmt, [("g.jsonl:1", row)]))
    except DataError as e:
        assert e.where == "g.jsonl:1"


# Valid rows of each format with one value somewhere replaced by arbitrary JSON.
_VALID = {
    "math_shepherd": "math_shepherd.jsonl", "prm800k": "prm800k.jsonl", "trl": "trl.jsonl", "prt": "prt.json",
    "dreamprm": "dreamprm.jsonl", "processbench": "processbench.jsonl", "gsm8k": "gsm8k.jsonl", "math": "math.jsonl",
    "minif2f": "minif2f.jsonl", "openmathinstruct": "openmathinstruct.jsonl", "dreamprm_math": "dreamprm_train_math.json",
}


def _paths(obj, prefix=()):
    yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield from _paths(v, prefix + (k,))


@st.composite
def mutated_rows(draw):
    from conftest import FIXTURES

    from prm.io import read_jsonl

    fmt = draw(st.sampled_from(sorted(_VALID)))
    row = json.loads(json.dumps(draw(st.sampled_from(read_jsonl(FIXTURES / _VALID[fmt])))))
    path = draw(st.sampled_from([p for p in _paths(row) if p]))
    cur = row
    for k in path[:-1]:
        cur = cur[k]
    if draw(st.booleans()) and isinstance(cur, dict):
        del cur[path[-1]]
    else:
        cur[path[-1]] = draw(_json)
    return fmt, row


@settings(max_examples=300, deadline=None)
@given(mutated_rows())
def test_mutated_rows_raise_only_data_error(case):
    fmt, row = case
    try:
        for rec in convert_rows(fmt, [("m.jsonl:1", row)]):
            assert isinstance(rec["prompt"], str) and len(rec["labels"]) == len(rec["completions"])
    except DataError as e:
        assert e.where == "m.jsonl:1"
