import pytest

from prm.schema import DataError, make_record, to_dataset, validate_record


def rec(**kw):
    base = {"prompt": "p", "completions": ["a", "b"], "labels": [1, 0], "label_scheme": "binary"}
    base.update(kw)
    return base


@pytest.mark.parametrize(
    "kw, field, reason",
    [
        # labels and steps must pair up one to one
        ({"labels": [1]}, "labels", "labels/steps length mismatch"),
        # an empty step cannot carry a label
        ({"completions": ["a", "  "]}, "completions", "empty step"),
        # the problem text is required
        ({"prompt": ""}, "prompt", "missing or empty prompt"),
        # a binary scheme accepts only 0/1
        ({"labels": [1, 2]}, "labels", "binary label not in {0, 1}"),
        # ternary class ids are 0, 1, 2 (PRM800K -1/0/+1)
        ({"labels": [3, 0], "label_scheme": "ternary"}, "labels", "ternary label not in {0, 1, 2}"),
        # soft labels are probabilities
        ({"labels": [1.5, 0.2], "label_scheme": "soft"}, "labels", "soft label outside [0, 1]"),
        # the scheme is explicit, never guessed
        ({"label_scheme": None}, "label_scheme", "unknown label scheme"),
        # unlabeled data carries no labels
        ({"labels": [1, None], "label_scheme": "none"}, "labels", "label given but label_scheme is 'none'"),
        # strings are not labels
        ({"labels": ["+", "-"]}, "labels", "label is not a number, bool or null"),
        # a typo in a field name is not silently dropped
        ({"lables": [1, 0]}, "lables", "unknown field"),
        # a labeled record needs steps
        ({"completions": [], "labels": []}, "completions", "no steps in a labeled record"),
    ],
)
def test_validate_rejects(kw, field, reason):
    with pytest.raises(DataError) as e:
        validate_record(rec(**kw))
    assert e.value.field == field and e.value.reason == reason


def test_validate_normalizes():
    out = validate_record(rec(labels=[True, None], answer=42))
    assert out["labels"] == [1.0, None] and out["answer"] == "42" and out["meta"] == {}


def test_soft_labels_stay_float_in_dataset():
    r = make_record("p", ["a", "b"], [0.25, None], "soft")
    ds = to_dataset([r])
    assert ds[0]["labels"] == [0.25, None]
    assert ds.features["meta"].__class__.__name__ == "Json"


def test_error_message_names_place_field_and_reason():
    e = DataError("labels", "labels/steps length mismatch", "1 labels for 2 steps").at("f.jsonl:7")
    assert str(e) == "f.jsonl:7: field 'labels': labels/steps length mismatch (1 labels for 2 steps)"
