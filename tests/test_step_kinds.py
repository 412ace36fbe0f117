"""The BMUq featurizers as PRM kinds (`prm.models.step_kinds`) on a tiny BERT and a tiny
sentence-transformers model built from configs with the real MiniLM tokenizer: scores through the one
path equal a plain reference (one example or one vector sequence per solution, as the old module
computed them), batched and unbatched with padding; save/load; truncation keeps labels aligned; one
training run of the one trainer lowers the loss."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification

from prm.models.backbones import minilm_path
from prm.models.encoding import IGNORE
from prm.models.prm import PRM, PRMSpec, load_prm, step_loss

Q1 = "Janet has 16 eggs. She eats 3 and bakes with 4. How many are left?"
S1 = ["She eats 3, so 16 - 3 = 13 eggs remain.", "She bakes with 4, so 13 - 4 = 9.", "The answer is 9."]
Q2 = "What is 7 times 6?"
S2 = ["7 * 6 = 42.", "The answer is 42."]
ITEMS = [(Q1, S1), (Q2, S2), (Q1, S1[:2])]  # Q1 twice, different lengths (padding)
LAYOUTS = ["problem+previous+step", "step"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer

    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(7)
    d = tmp_path_factory.mktemp("bert")
    BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64, max_position_embeddings=256)).save_pretrained(d)
    tok.save_pretrained(d)
    d24 = tmp_path_factory.mktemp("bert24")  # sentence vectors of size 24: the encoder (32) needs the projection
    BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=48, max_position_embeddings=256)).save_pretrained(d24)
    tok.save_pretrained(d24)
    st = tmp_path_factory.mktemp("st")
    SentenceTransformer(modules=[Transformer(str(d24)), Pooling(24)], device="cpu").save(str(st))
    return {"bert": str(d), "st": str(st)}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRM_CACHE_DIR", str(tmp_path / "cache"))


def new_prm(tiny, kind, layout, scheme="ternary", **extra) -> PRM:
    torch.manual_seed(0)
    spec = PRMSpec(label_scheme=scheme, prm_kind=kind, layout=layout, extra={"featurizer_model": tiny["st"], **extra})
    return PRM.from_backbone(tiny["bert"], spec)


def _close(a, b, tol=1e-4):
    assert [len(x) for x in a] == [len(x) for x in b]
    assert max(abs(u - v) for x, y in zip(a, b) for u, v in zip(x, y)) < tol, (a, b)


# --------------------------------------------------------------------------- references


@torch.no_grad()
def ref_step_cls(d, layout, items, max_length=None, positive=2):
    """One sequence-classification example per step: (context, step) pairs, context cut from the left."""
    tok, model = AutoTokenizer.from_pretrained(d), AutoModelForSequenceClassification.from_pretrained(d).eval()
    tok.truncation_side = "left"
    out = []
    for q, steps in items:
        row = []
        for i, s in enumerate(steps):
            ctx = "\n".join([q, *steps[:i]]) if layout != "step" else None
            enc = (tok(s, truncation=max_length is not None, max_length=max_length, return_tensors="pt") if ctx is None
                   else tok(ctx, s, truncation="longest_first" if max_length else False, max_length=max_length, return_tensors="pt"))
            row.append(model(**enc).logits.softmax(-1)[0, positive].item())
        out.append(row)
    return out


@torch.no_grad()
def ref_step_embeddings(d, st_dir, layout, items, positive=2):
    """The old module's path: sentence vectors of [problem, step_1, ...] (SentenceTransformer.encode)
    as inputs_embeds of the encoder, one sequence per solution (each step alone for layout "step")."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoConfig

    from prm.models.step_kinds import StepEmbeddingModel

    st = SentenceTransformer(st_dir, device="cpu")
    model = StepEmbeddingModel.from_pretrained(d, config=AutoConfig.from_pretrained(d)).eval()
    out = []
    for q, steps in items:
        texts = list(steps) if layout == "step" else [q, *steps]
        vec = torch.from_numpy(st.encode(texts, convert_to_numpy=True))
        if layout == "step":
            probs = model(inputs_embeds=vec[:, None]).logits[:, 0].softmax(-1)
        else:
            probs = model(inputs_embeds=vec[None]).logits[0, 1:].softmax(-1)
        out.append(probs[:, positive].tolist())
    return out


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("layout", LAYOUTS)
def test_step_cls_scores_equal_reference_and_reload(tiny, tmp_path, layout):
    prm = new_prm(tiny, "step_cls", layout)
    prm.save(tmp_path / "m")
    want = ref_step_cls(tmp_path / "m", layout, ITEMS)
    _close(prm.score_batch(ITEMS, batch_size=16), want)  # batched, padded
    _close([prm.score_steps(q, s) for q, s in ITEMS], want)  # unbatched
    again = load_prm(str(tmp_path / "m"))
    assert again.spec.prm_kind == "step_cls" and again.spec.layout == layout
    _close(again.score_batch(ITEMS, batch_size=2), want)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_step_embeddings_scores_equal_reference_and_reload(tiny, tmp_path, layout):
    prm = new_prm(tiny, "step_embeddings", layout)
    assert prm.model.config.step_input_dim == 24 and isinstance(prm.model.proj, torch.nn.Linear)
    assert prm.model.config.is_decoder == (layout != "step")  # a step sees only the problem and earlier steps
    prm.save(tmp_path / "m")
    want = ref_step_embeddings(tmp_path / "m", tiny["st"], layout, ITEMS)
    _close(prm.score_batch(ITEMS, batch_size=16), want)
    _close([prm.score_steps(q, s) for q, s in ITEMS], want)
    again = load_prm(str(tmp_path / "m"))
    assert again.spec.prm_kind == "step_embeddings"
    _close(again.score_batch(ITEMS, batch_size=2), want)


def test_truncation_keeps_labels_aligned(tiny, tmp_path):
    labels = [2.0, 0.0, 1.0]
    # step_cls: every step keeps its own example, cut to max_length tokens from the context's left
    cls = new_prm(tiny, "step_cls", "problem+previous+step")
    full = cls.encode(Q1, S1, labels)
    cut = cls.encode(Q1, S1, labels, max_length=16)
    for e in (full, cut):
        assert e.n_truncated == 0 and [e.labels[p] for p in e.score_positions] == labels
        assert all(v == IGNORE for i, v in enumerate(e.labels) if i not in e.score_positions)
    starts = [i for i, t in enumerate(cut.input_ids) if t == cls.tokenizer.cls_token_id]
    assert all(e - s <= 16 for s, e in zip(starts, starts[1:] + [len(cut.input_ids)]))
    cls.spec.max_length = 16
    cls.save(tmp_path / "cls")
    _close([cls.score_steps(Q1, S1)], ref_step_cls(tmp_path / "cls", "problem+previous+step", [(Q1, S1)], max_length=16))
    # step_embeddings: whole trailing steps go with their labels (positions or tokens); kept scores
    # equal the untruncated ones (causal encoder)
    emb = new_prm(tiny, "step_embeddings", "problem+previous+step")
    whole = emb.score_steps(Q1, S1)
    emb.spec.extra["max_positions"] = 3  # the problem and two steps
    e = emb.encode(Q1, S1, labels)
    assert e.n_truncated == 1 and [e.labels[p] for p in e.score_positions] == labels[:2]
    _close([emb.score_steps(Q1, S1)], [whole[:2]], 1e-5)
    emb.spec.extra["max_positions"] = None
    full = emb.encode(Q1, S1, labels)
    e = emb.encode(Q1, S1, labels, max_length=full.score_positions[0] + 1)
    assert e.n_truncated == 2 and [e.labels[p] for p in e.score_positions] == labels[:1]
    assert emb.encode(Q1, S1, labels, max_length=full.score_positions[0]) is None  # no step fits: dropped


def _loss(prm, records):
    from prm.train.data import StepCollator

    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in (prm.encode(r["prompt"], r["completions"], r["labels"]) for r in records)]
    batch = StepCollator(prm.tokenizer.pad_token_id)(rows)
    labels = batch.pop("labels")
    with torch.no_grad():
        return float(step_loss(prm.kind.step_logits(prm.model, **batch), labels, prm.spec.label_scheme))


@pytest.mark.parametrize("kind", ["step_cls", "step_embeddings"])
def test_one_trainer_trains_and_saves(tiny, tmp_path, kind):
    from prm.schema import make_record, to_dataset
    from prm.train import PRMTrainer, PRMTrainingArguments

    prm = new_prm(tiny, kind, "problem+previous+step", scheme="binary")
    records = [make_record(Q1, S1, [1, 1, 0], "binary"), make_record(Q2, S2, [1, 0], "binary")]
    before = _loss(prm, records)
    args = PRMTrainingArguments(output_dir=str(tmp_path / "out"), max_steps=4, learning_rate=3e-3, per_device_train_batch_size=2,
                                report_to=[], save_strategy="no", use_cpu=True, logging_steps=1, max_length=64, max_prompt_length=None)
    trainer = PRMTrainer(prm=prm, args=args, train_dataset=to_dataset(records))
    trainer.train()
    after = _loss(prm, records)
    assert after < before
    trainer.save_model(str(tmp_path / "model"))
    again = load_prm(str(tmp_path / "model"))
    assert again.spec.prm_kind == kind and abs(_loss(again, records) - after) < 1e-4


def test_step_token_in_text_is_refused(tiny):
    prm = new_prm(tiny, "step_cls", "step")
    with pytest.raises(ValueError, match="contains the tokenizer's segment token"):
        prm.encode(Q2, ["7 * 6 = 42 [CLS] oops"])
