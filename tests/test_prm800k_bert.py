"""The BERT-style PRM (`prm.bert_prm`, `exp/prm800k_bert.py`) on tiny real models built from configs
with the real MiniLM tokenizer: both featurizers (and the token-level mode) x both initializations x
both label counts, labels and label maps, the embedding cache, save/reload in a fresh process, the
PRM800K loader on local files, and the script."""

import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from prm.bert_prm import (
    BertPRMConfig,
    EmbeddingCache,
    LabelError,
    PRMTrainer,
    SentenceEmbedder,
    load_prm800k,
    parse_label_map,
)
from prm.io import iter_json_rows
from prm.models.backbones import minilm_path
from prm.models.prm import load_prm
from prm.schema import make_record, to_dataset

MODES = [("tokens", "step"), ("tokens", "single_pass"), ("embeddings", "step")]
GOOD, BAD, UNSURE = "Then 3 + 4 = 7 apples in total.", "So the wrong result 3 x 4 = 99 follows.", "Maybe it is somewhere around there."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """A 2-layer BERT (hidden 32) checkpoint and a tiny sentence-transformers model on it."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer

    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(123)  # not the trainers' seed: random init must differ from the checkpoint
    d = tmp_path_factory.mktemp("tiny_bert")
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=256)
    BertForSequenceClassification(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    st = tmp_path_factory.mktemp("tiny_st")
    # sentence vectors of size 24, so the encoder (32) needs the projection
    cfg24 = BertConfig(vocab_size=len(tok), hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48, max_position_embeddings=256)
    d24 = tmp_path_factory.mktemp("tiny_bert24")
    BertForSequenceClassification(cfg24).save_pretrained(d24)
    tok.save_pretrained(d24)
    SentenceTransformer(modules=[Transformer(str(d24)), Pooling(24)], device="cpu").save(str(st))
    return {"bert": str(d), "st": str(st)}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny models: with 2 threads on a busy machine, thread hand-offs cost 10x the arithmetic
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PRM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def toy(num_labels: int, n: int = 12) -> datasets.Dataset:
    """Solutions whose step class shows in the text (learnable by any featurizer)."""
    recs = []
    for i in range(n):
        if num_labels == 3:
            steps, labels = [GOOD, UNSURE, BAD][: 1 + i % 3], [2, 1, 0][: 1 + i % 3]
            recs.append(make_record(f"Problem {i}: how many apples?", steps, labels, "ternary", id=str(i)))
        else:
            steps, labels = [GOOD, BAD][: 1 + i % 2], [1, 0][: 1 + i % 2]
            recs.append(make_record(f"Problem {i}: how many apples?", steps, labels, "binary", id=str(i)))
    return to_dataset(recs)


def config(tiny, tmp_path, featurizer, mode, **kw) -> BertPRMConfig:
    base = dict(model_name_or_path=tiny["bert"], featurizer_type=featurizer, token_mode=mode, featurizer_model=tiny["st"],
                output_dir=str(tmp_path / "out"), num_train_epochs=12, per_device_train_batch_size=8, learning_rate=5e-3,
                logging_steps=100, max_length=64, seed=0)
    return BertPRMConfig(**{**base, **kw})


# one case per featurizer stays in the fast set; the rest of the matrix is marked slow
MATRIX = [pytest.param(f, m, p, n, marks=() if (p, n) == (True, 3) else pytest.mark.slow, id=f"{f}-{m}-{'pretrained' if p else 'random'}-{n}")
          for f, m in MODES for p in (True, False) for n in (2, 3)]


@pytest.mark.parametrize("featurizer,mode,pretrained,num_labels", MATRIX)
def test_featurizer_init_labels_matrix(tiny, tmp_path, featurizer, mode, pretrained, num_labels):
    # every featurizer x initialization x label count trains, learns a rule visible in the text,
    # evaluates with per-class figures, and predicts names from the label map
    trainer = PRMTrainer(config(tiny, tmp_path, featurizer, mode, use_pretrained=pretrained, num_labels=num_labels))
    enc = trainer.model
    emb = enc.get_input_embeddings().weight if featurizer == "tokens" else enc.model.encoder.layer[0].attention.self.query.weight
    saved = BertForSequenceClassification.from_pretrained(tiny["bert"])
    ref = saved.get_input_embeddings().weight if featurizer == "tokens" else saved.bert.encoder.layer[0].attention.self.query.weight
    # pretrained: the checkpoint's weights; random: the same shapes, other values
    assert emb.shape == ref.shape and torch.equal(emb, ref) == pretrained
    data = trainer.prepare_dataset(toy(num_labels))
    trainer.train(data)
    m = trainer.evaluate(data)
    assert m["accuracy"] >= 0.8 and m["accuracy"] > m["majority_baseline"]["accuracy"]
    names = trainer.config.names
    assert m["label_names"] == names and sum(map(sum, m["confusion_matrix"])) == m["n_steps"]
    assert all(f"{n}_f1" in m for n in names) and {"f1", "precision", "recall"} <= set(m)
    # predict() agrees with evaluate() on every record, in label names
    recs = data.to_list()
    sols = trainer.predict([(r["prompt"], r["completions"]) for r in recs])
    assert [[p["label_id"] for p in sol] for sol in sols] == [r["pred"] for r in trainer.last_predictions]
    assert all(p["label"] == names[p["label_id"]] and len(p["probs"]) == num_labels for sol in sols for p in sol)
    # saved as any PRM of its kind (prm_config.json), loadable by the one loader
    saved = Path(trainer.config.output_dir) / "final_model"
    kind = {"embeddings": "step_embeddings", "step": "step_cls", "single_pass": "token_cls"}[mode if featurizer == "tokens" else featurizer]
    assert json.loads((saved / "prm_config.json").read_text())["prm_kind"] == kind
    items = [(r["prompt"], r["completions"]) for r in recs[:3]]
    again, now = load_prm(str(saved)).score_batch(items), trainer.prm.score_batch(items)
    assert [len(x) for x in again] == [len(x) for x in now]
    assert max(abs(a - b) for x, y in zip(again, now) for a, b in zip(x, y)) < 1e-5


@pytest.mark.parametrize(
    "case,make,message",
    [
        # a label name that is not in the map names itself and the known ones
        ("bad name", lambda t: t.prepare_dataset([{"text": "x", "label": "postive"}]), "row 0: label 'postive' is not in label_map"),
        # ternary data into a 2-class model says how to fix it
        ("ternary into 2", lambda t: t.prepare_dataset(toy(3)), "ternary labels (3 classes) but num_labels=2"),
        # a label map whose ids do not fit num_labels
        ("map ids", lambda t: t.prepare_dataset(toy(2), label_map={"a": 0, "b": 1, "c": 2}), "does not fit num_labels=2"),
        # a class id out of range
        ("id range", lambda t: t.prepare_dataset([{"text": "x", "label": 5}]), "nor a class id < 2"),
    ],
)
def test_label_errors_are_one_line(tiny, tmp_path, case, make, message):
    trainer = PRMTrainer(config(tiny, tmp_path, "tokens", "step", num_labels=2))
    with pytest.raises(LabelError) as e:
        make(trainer)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_config_rejects_mismatched_label_map_and_loaded_num_labels(tiny, tmp_path):
    with pytest.raises(LabelError, match="does not fit num_labels=3"):
        BertPRMConfig(num_labels=3, label_map="correct=0,incorrect=1")
    with pytest.raises(ValueError, match="featurizer_type 'words' unknown; known: tokens, embeddings"):
        BertPRMConfig(featurizer_type="words")
    t3 = PRMTrainer(config(tiny, tmp_path, "tokens", "step", num_labels=3))
    t3.save_model(tmp_path / "m3")
    t2 = PRMTrainer(config(tiny, tmp_path, "tokens", "step", num_labels=2))
    with pytest.raises(LabelError, match=r"m3: saved model has num_labels=3 but this trainer has num_labels=2"):
        t2.load_model(tmp_path / "m3")


def test_custom_label_map_on_prm800k_ratings(tiny, tmp_path, shared_data):
    # PRM800K's ternary classes reach a custom map through the documented aliases
    from prm.data import load

    ds = load("prm800k", shared_data / "samples" / "samples_prm800k.jsonl")
    lm = {"correct": 0, "unclear": 1, "incorrect": 2}
    trainer = PRMTrainer(config(tiny, tmp_path, "tokens", "step", num_labels=3, label_map=json.dumps(lm)))
    prep = trainer.prepare_dataset(ds)
    orig = [v for ls in ds["labels"] for v in ls]
    new = [v for ls in prep["labels"] for v in ls]
    assert [{None: None, 2.0: 0.0, 1.0: 1.0, 0.0: 2.0}[v] for v in orig] == new
    # flat text/label rows with the custom names (the old module's custom-data example)
    flat = trainer.prepare_dataset(datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": ["correct", "unclear", "incorrect"]}))
    assert [ls[0] for ls in flat["labels"]] == [0.0, 1.0, 2.0]
    assert parse_label_map("correct=0,unclear=1,incorrect=2", 3) == lm


def test_embedding_cache_skips_the_encoder(tiny, tmp_path, cache_dir):
    texts = [GOOD, BAD, UNSURE, GOOD]
    e1 = SentenceEmbedder(tiny["st"])
    v1 = e1.embed(texts)
    assert e1.stats["computed"] == 3 and v1.shape == (4, 24)
    e1.embed(texts)  # a second epoch: memory only
    assert e1.stats["computed"] == 3 and e1.stats["memory"] >= 5
    e2 = SentenceEmbedder(tiny["st"])  # a rerun: the disk cache, no encoder loaded
    assert torch.equal(torch.from_numpy(e2.embed(texts)), torch.from_numpy(v1))
    assert e2.stats["computed"] == 0 and e2.stats["disk"] == 3 and e2._model is None
    # keyed by model: another model name misses
    good = tuple(e2.tokenize(GOOD))
    assert EmbeddingCache("other-model").get([good]) == {} and len(EmbeddingCache(tiny["st"]).get([good])) == 1
    # training twice over the same data: the second epoch computes nothing new
    trainer = PRMTrainer(config(tiny, tmp_path, "embeddings", "step", num_labels=2, num_train_epochs=2))
    trainer.train(toy(2, n=8))
    assert len(trainer.epoch_seconds) == 2 and trainer.embedder.stats["computed"] == 8  # the problems; steps were cached


@pytest.mark.slow
def test_saved_models_reload_in_a_fresh_process(tiny, tmp_path, cache_dir):
    # a saved model (each featurizer) predicts identically in a new process
    items = [("Problem 1: how many apples?", [GOOD, UNSURE, BAD]), ("Another problem?", [BAD])]
    expected = {}
    for featurizer, mode in MODES:
        t = PRMTrainer(config(tiny, tmp_path / mode / featurizer, featurizer, mode, num_labels=3, num_train_epochs=3))
        t.train(toy(3))
        t.save_model(tmp_path / f"{featurizer}_{mode}")
        expected[f"{featurizer}_{mode}"] = t.predict(items)
    code = (
        "import json, sys\nfrom prm.bert_prm import PRMTrainer\nitems = json.loads(sys.argv[2])\n"
        "print(json.dumps({k: PRMTrainer.from_saved(sys.argv[1] + '/' + k).predict([tuple(x) for x in items]) for k in json.loads(sys.argv[3])}))"
    )
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path), json.dumps(items), json.dumps(list(expected))],
                         capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "PRM_CACHE_DIR": str(cache_dir)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == expected


def test_prm800k_loader_on_local_files(tmp_path, shared_data):
    # the raw release's file layout, read from a local folder (the hub path uses the same names)
    samples = shared_data / "samples"
    for phase in (1, 2):
        rows = [r for _, r in iter_json_rows(samples / f"prm800k-phase{phase}-train-example.json")]
        (tmp_path / f"phase{phase}_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = (samples / "samples_prm800k.jsonl").read_text()
    (tmp_path / "phase1_test.jsonl").write_text(rows)
    (tmp_path / "phase2_test.jsonl").write_text(rows)
    both = load_prm800k(source=str(tmp_path))
    assert set(both) == {"train", "test"} and len(both["train"]) == 123 + 4 and len(both["test"]) == 2 * 36
    assert set(both["train"]["label_scheme"]) == {"ternary"}
    binary = load_prm800k(split="train", source=str(tmp_path), phases=(2,), label_scheme="binary")
    assert set(binary) == {"train"} and set(binary["train"]["label_scheme"]) == {"binary"} and len(binary["train"]) == 4
    stream = load_prm800k(split="test", source=str(tmp_path), streaming=True)["test"]
    assert isinstance(stream, datasets.IterableDataset) and len(list(stream.take(5))) == 5
    with pytest.raises(FileNotFoundError, match="phase1_valid.jsonl"):
        load_prm800k(split="valid", source=str(tmp_path))


@pytest.mark.slow
def test_script_writes_run_directory_and_figure(tiny, tmp_path, shared_data):
    import exp.prm800k_bert as script
    from prm.config import parse
    from prm.plots.classify import confusion_figures

    sc, ma, bo, ra = parse(script.TYPES, ["--config", str(Path(__file__).resolve().parents[1] / "exp/configs/prm800k_bert/samples.yaml"), "--model", tiny["bert"],
                                               "--results_dir", str(tmp_path / "results"), "--num_labels", "3"])
    metrics = script.main(sc, ma, bo, ra)
    run = tmp_path / "results" / "prm800k_bert" / "prm800k_samples"
    for f in ("config.json", "metrics.json", "log.jsonl", "predictions.jsonl", "confusion.png", "model/prm_config.json"):
        assert (run / f).is_file(), f
    assert metrics["label_names"] == ["negative", "neutral", "positive"] and metrics["n_steps"] == 214
    made = confusion_figures(tmp_path / "results", tmp_path / "figures")
    assert [m.stem.name for m in made] == ["prm800k_bert_prm800k_samples_confusion"]


@torch.no_grad()
def test_models_saved_by_the_old_module_still_load(tiny, tmp_path):
    # directories as the old bert_prm.save_model wrote them (bert_prm.json, no prm_config.json):
    # a sequence classifier + tokenizer (step mode), encoder/ + projection.safetensors (embeddings)
    from dataclasses import asdict

    from safetensors.torch import save_file
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForTokenClassification

    items = [("Problem 1: how many apples?", [GOOD, UNSURE, BAD])]
    tok = AutoTokenizer.from_pretrained(tiny["bert"])
    torch.manual_seed(5)
    old = tmp_path / "old_step"
    seq = BertForSequenceClassification.from_pretrained(tiny["bert"], num_labels=3, ignore_mismatched_sizes=True).eval()
    seq.save_pretrained(old)
    tok.save_pretrained(old)
    cfg = asdict(config(tiny, tmp_path, "tokens", "step", num_labels=3))
    (old / "bert_prm.json").write_text(json.dumps({"config": cfg, "input_dim": None, "train_majority": 2}))
    tok.truncation_side = "left"
    want = []
    for i, s in enumerate(items[0][1]):
        ctx = "\n".join([items[0][0], *items[0][1][:i]])
        want.append(seq(**tok(ctx, s, truncation="longest_first", max_length=64, return_tensors="pt")).logits.softmax(-1)[0].tolist())
    got = PRMTrainer.from_saved(old).predict(items)[0]
    assert max(abs(a - b) for g, w in zip(got, want) for a, b in zip(g["probs"], w)) < 1e-5

    old = tmp_path / "old_embeddings"
    enc = AutoModelForTokenClassification.from_pretrained(tiny["bert"], num_labels=3, is_decoder=True, ignore_mismatched_sizes=True).eval()
    enc.save_pretrained(old / "encoder")
    proj = torch.nn.Linear(24, 32)
    save_file({k: v.contiguous() for k, v in proj.state_dict().items()}, str(old / "projection.safetensors"))
    cfg = asdict(config(tiny, tmp_path, "embeddings", "step", num_labels=3))
    (old / "bert_prm.json").write_text(json.dumps({"config": cfg, "input_dim": 24, "train_majority": None}))
    vec = torch.from_numpy(SentenceTransformer(tiny["st"], device="cpu").encode([items[0][0], *items[0][1]]))
    want = enc(inputs_embeds=proj(vec)[None]).logits.softmax(-1)[0, 1:].tolist()
    t = PRMTrainer.from_saved(old)
    got = t.predict(items)[0]
    assert max(abs(a - b) for g, w in zip(got, want) for a, b in zip(g["probs"], w)) < 1e-5
    t.save_model(tmp_path / "converted")  # saved again: the one format
    assert json.loads((tmp_path / "converted" / "prm_config.json").read_text())["prm_kind"] == "step_embeddings"
    assert PRMTrainer.from_saved(tmp_path / "converted").predict(items)[0] == got
