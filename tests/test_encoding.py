"""Invariants 1 and 2: one tokenization for training and inference; labels stay on their steps
under truncation. Uses the real MiniLM (WordPiece) tokenizer that the set-up installs."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from prm.models.backbones import minilm_path
from prm.models.encoding import IGNORE, encode_steps, separator_ids


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(minilm_path())


def test_layout(tok):
    enc = encode_steps(tok, "What is 2+2?", ["2+2 = 4.", "The answer is 4."], [1, 0])
    # WordPiece drops a bare newline: the separator becomes [SEP] rather than vanishing
    assert separator_ids(tok, "\n") == [tok.sep_token_id]
    assert enc.input_ids[0] == tok.cls_token_id
    assert [enc.labels[p] for p in enc.score_positions] == [1.0, 0.0]
    assert sum(v != IGNORE for v in enc.labels) == 2 and enc.n_truncated == 0


_word = st.text(alphabet="abcdefghij0123456789+=. ", min_size=1, max_size=25).filter(lambda s: s.strip())


@settings(max_examples=60, deadline=None)
@given(
    prompt=_word,
    steps=st.lists(_word, min_size=1, max_size=6),
    data=st.data(),
    max_length=st.one_of(st.none(), st.integers(4, 80)),
    max_completion_length=st.one_of(st.none(), st.integers(1, 60)),
)
def test_labels_sit_on_last_token_of_their_step(tok, prompt, steps, data, max_length, max_completion_length):
    labels = data.draw(st.lists(st.sampled_from([0.0, 1.0, 0.25, None]), min_size=len(steps), max_size=len(steps)))
    sep = separator_ids(tok, "\n\n")
    kw = dict(separator="\n\n", max_length=max_length, max_completion_length=max_completion_length)
    enc = encode_steps(tok, prompt, steps, labels, **kw)
    if enc is None:
        return
    if max_length is not None:
        assert len(enc.input_ids) <= max_length
    # whole steps are kept in order, the rest counted
    assert enc.n_steps + enc.n_truncated == len(steps)
    # step k's tokens (plus separator) end exactly at its score position, its label sits there
    for k, pos in enumerate(enc.score_positions):
        piece = tok(steps[k], add_special_tokens=False)["input_ids"] + sep
        assert enc.input_ids[pos - len(piece) + 1 : pos + 1] == piece
        assert enc.labels[pos] == (IGNORE if labels[k] is None else labels[k])
    assert sum(v != IGNORE for v in enc.labels) == sum(v is not None for v in labels[: enc.n_steps])
    # inference (no labels) finds the same positions in the same tokens
    inf = encode_steps(tok, prompt, steps, None, **kw)
    assert inf.input_ids == enc.input_ids and inf.score_positions == enc.score_positions


def test_truncation_keeps_prompt_head_and_drops_whole_steps(tok):
    prompt = " ".join(f"w{i}" for i in range(40))
    enc = encode_steps(tok, prompt, ["one two", "three four", "five six"], [1, 1, 0], max_length=30)
    head = tok(prompt, add_special_tokens=False)["input_ids"][:15]  # default prompt budget: max_length // 2
    assert enc.input_ids[1:16] == head
    assert enc.n_steps + enc.n_truncated == 3 and len(enc.input_ids) <= 30
    # a row where no step fits is dropped, not trained on as all -100
    assert encode_steps(tok, prompt, ["x " * 50], [1], max_length=30) is None
    # with require_label, a row whose kept steps are all unlabeled is dropped
    assert encode_steps(tok, "q", ["a", "b"], [None, None], require_label=True) is None


def test_train_on_last_step_only(tok):
    enc = encode_steps(tok, "q", ["a", "b", "c"], [1, 1, 0], train_on_last_step_only=True)
    assert [enc.labels[p] for p in enc.score_positions] == [IGNORE, IGNORE, 0.0]
