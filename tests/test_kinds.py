"""PRM kinds on tiny look-alikes of the published PRMs (exact layouts, random weights): PRM lab's
scores equal a plain reference written from each model card's documented usage, batched and
unbatched with padding; save/load; detection; truncation; one training step per trainable kind."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from prm.models.encoding import IGNORE
from prm.models.kinds import KINDS
from prm.models.prm import load_prm, step_loss
from prm.testing.lookalikes import LOOKALIKES, build_lookalike

Q1 = "Janet has 16 eggs. She eats 3 and bakes with 4. How many are left?"
S1 = ["Step 1: She eats 3, so 16 - 3 = 13 eggs remain.", "Step 2: She bakes with 4, so 13 - 4 = 9.", "Step 3: The answer is 9."]
S1b = ["Step 1: 16 - 3 - 4 = 10.", "Step 2: The answer is 10."]
Q2 = "What is 7 times 6?"
S2 = ["7 * 6 = 42.", "The answer is 42."]
# Q1 twice (shared-prefix path), Q2 once (plain path); lengths differ (padding)
ITEMS = [(Q1, S1), (Q2, S2), (Q1, S1b)]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lookalikes")
    return {name: build_lookalike(name, root) for name in LOOKALIKES}


# --------------------------------------------------------------------------- references
# Each follows the model card's usage, one solution per forward pass.


@torch.no_grad()
def ref_math_shepherd(d, question, steps):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(d), AutoModelForCausalLM.from_pretrained(d).eval()
    good_token, bad_token, step_tag = "+", "-", "ки"
    # the card takes encode(f"{good} {bad}")[1:] after Mistral's BOS; this tokenizer adds no BOS
    candidate_tokens = [tokenizer.encode(good_token)[-1], tokenizer.encode(bad_token)[-1]]
    step_tag_id = tokenizer.encode(f"{step_tag}")[-1]
    output = " ки\n".join(steps) + " ки"
    input_id = torch.tensor([tokenizer.encode(f"{question} {output}")])
    logits = model(input_id).logits[:, :, candidate_tokens]
    scores = logits.softmax(dim=-1)[:, :, 0]
    return scores[input_id == step_tag_id].tolist()


@torch.no_grad()
def ref_rlhflow(d, question, steps):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(d), AutoModelForCausalLM.from_pretrained(d).eval()
    candidate_tokens = [tokenizer.encode("+")[-1], tokenizer.encode("-")[-1]]
    conversation, out = [], []
    for k, step in enumerate(steps):
        conversation.append({"content": question + " " + step if k == 0 else step, "role": "user"})
        conversation.append({"content": "+", "role": "assistant"})
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
        input_ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        logits = model(input_ids).logits[:, -3, candidate_tokens]  # the "+" is predicted at -3
        out.append(logits.softmax(dim=-1)[:, 0][0].item())
    return out


@torch.no_grad()
def ref_openrlhf(d, question, steps):
    """OpenRLHF's ProcessRewardDataset + PRMLoss (placeholder ки, reward tokens + -): the label and
    the prediction sit at every placeholder token; reward token 0 is the good one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(d), AutoModelForCausalLM.from_pretrained(d).eval()

    def convert_token_to_id(token):
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1
        return ids[0]

    placeholder_token_id = convert_token_to_id("ки")
    reward_token_ids = [convert_token_to_id("+"), convert_token_to_id("-")]
    text = f"{question} " + "\n".join(f"{s} ки" for s in steps)  # zhuzilin/Math-Shepherd's "input"
    input_ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    logits = model(input_ids).logits
    placeholder_mask = input_ids == placeholder_token_id
    return logits[placeholder_mask][..., reward_token_ids].softmax(-1)[:, 0].tolist()


class QwenPRMReference(torch.nn.Module):
    """modeling_qwen2_rm.py's Qwen2ForProcessRewardModel: a Qwen2 body and a two-layer score head."""

    def __init__(self, d):
        super().__init__()
        from transformers import AutoConfig, Qwen2Model

        cfg = AutoConfig.from_pretrained(d)
        self.model = Qwen2Model(cfg)
        h = cfg.hidden_size
        self.score = torch.nn.Sequential(torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 2))
        self.load_state_dict(load_file(d / "model.safetensors"))

    def forward(self, input_ids):
        return (self.score(self.model(input_ids=input_ids).last_hidden_state),)


@torch.no_grad()
def ref_qwen(d, question, steps):
    from transformers import AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(d), QwenPRMReference(d).eval()
    messages = [
        {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
        {"role": "user", "content": question},
        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
    ]
    conversation_str = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    input_ids = tokenizer.encode(conversation_str, return_tensors="pt")
    outputs = model(input_ids=input_ids)
    step_sep_id = tokenizer.encode("<extra_0>")[0]
    token_masks = input_ids == step_sep_id
    probabilities = F.softmax(outputs[0], dim=-1) * token_masks.unsqueeze(-1)  # make_step_rewards
    sample = probabilities[0]
    return sample[sample != 0].view(-1, 2)[:, 1].tolist()


@torch.no_grad()
def ref_skywork(d, batch):
    """prepare_input / prepare_batch_input_for_model / derive_step_rewards (a padded batch)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(d)
    lm = AutoModelForCausalLM.from_pretrained(d).eval()
    sd = load_file(d / "model.safetensors")
    v_head = torch.nn.Linear(lm.config.hidden_size, 1)
    v_head.load_state_dict({"weight": sd["v_head.summary.weight"], "bias": sd["v_head.summary.bias"]})
    ids_list, flags_list = [], []
    for problem, steps in batch:
        response, step_token = "\n".join(steps), "\n"
        prompt_ids = tokenizer.encode(tokenizer.bos_token + problem + "\n")
        response_ids, reward_flags = [], [0] * len(prompt_ids)
        step_token_id = tokenizer.encode(step_token)[-1]
        for step in response.split(step_token):
            step_ids = tokenizer.encode(step) + [step_token_id]
            flag = [0] * len(step_ids)
            flag[-1] = 1
            response_ids += step_ids
            reward_flags += flag
        ids_list.append(prompt_ids + response_ids)
        flags_list.append(reward_flags)
    pad = torch.nn.utils.rnn.pad_sequence
    input_ids = pad([torch.LongTensor(x) for x in ids_list], batch_first=True, padding_value=tokenizer.pad_token_id)
    attention_mask = pad([torch.LongTensor([1] * len(x)) for x in ids_list], batch_first=True, padding_value=0)
    flags = pad([torch.LongTensor(x) for x in flags_list], batch_first=True, padding_value=0)
    hidden = lm(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states[-1]
    rewards = v_head(hidden).squeeze(-1).sigmoid()
    return [[rewards[i][j].item() for j in torch.nonzero(flags[i] == 1).view(-1)] for i in range(len(batch))]


@torch.no_grad()
def ref_trl(d, question, steps):
    """TRL PRMTrainer.tokenize_row's layout, read as the token-classification pipeline does."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(d), AutoModelForTokenClassification.from_pretrained(d).eval()
    prompt_ids = tokenizer(question, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None:
        prompt_ids = [tokenizer.bos_token_id] + prompt_ids
    sep = tokenizer.encode("\n", add_special_tokens=False)
    ids, positions = list(prompt_ids), []
    for s in steps:
        ids += tokenizer(s, add_special_tokens=False)["input_ids"] + sep
        positions.append(len(ids) - 1)
    probs = model(torch.tensor([ids])).logits.softmax(-1)[0, :, 1]
    return probs[positions].tolist()


def _per_item(ref):
    return lambda d, items: [ref(d, q, s) for q, s in items]


# name, expected kind, reference(dir, items) -> scores
CASES = [
    ("math-shepherd-mistral-7b-prm", "lm_tokens", _per_item(ref_math_shepherd)),  # ки tags, +/- logits
    ("Llama3.1-8B-PRM-Deepseek-Data", "lm_tokens", _per_item(ref_rlhflow)),  # one chat turn per step
    ("Qwen2.5-Math-PRM-7B", "qwen_prm", _per_item(ref_qwen)),  # <extra_0>, two-layer head, no remote code
    ("Skywork-o1-Open-PRM-Qwen-2.5-1.5B", "value_head", ref_skywork),  # sigmoid value at each "\n"
    ("Qwen2-0.5B-Reward-Math-Sheperd", "token_cls", _per_item(ref_trl)),  # TRL layout, no prm_config.json
    ("Mistral-7b-PRM-Math-Shepherd", "lm_tokens", _per_item(ref_openrlhf)),  # OpenRLHF placeholder, no BOS
]


# one look-alike per layout (the H4 checkpoint has the TRL layout of Qwen2-0.5B-Reward-Math-Sheperd)
PER_LAYOUT = [n for n in LOOKALIKES if n != "Qwen2.5-Math-1.5B-Instruct-PRM-0.2"]


def _close(a, b, tol=1e-4):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert len(x) == len(y) and max(abs(u - v) for u, v in zip(x, y)) < tol, (x, y)


@pytest.mark.slow
@pytest.mark.parametrize("name, kind, ref", CASES, ids=[c[0] for c in CASES])
def test_scores_equal_model_card_usage(dirs, tmp_path, name, kind, ref):
    d = dirs[name]
    prm = load_prm(str(d))
    assert prm.spec.prm_kind == kind
    want = ref(d, ITEMS)
    _close(prm.score_batch(ITEMS, batch_size=16), want)  # batched, padded, Q1's two solutions share a prefix
    _close([prm.score_steps(q, s) for q, s in ITEMS], want)  # unbatched
    _close(prm.score_batch(ITEMS, batch_size=1), want)
    # saved by PRM lab and loaded again (prm_config.json now says the kind)
    prm.save(tmp_path / "saved")
    again = load_prm(str(tmp_path / "saved"))
    assert again.spec.prm_kind == kind and json.loads((tmp_path / "saved" / "prm_config.json").read_text())["prm_kind"] == kind
    _close(again.score_batch(ITEMS), want)


def test_checkpoint_weight_names(dirs):
    # the look-alikes hold the published checkpoints' weight names, which the project classes load
    from transformers import AutoConfig, Qwen2Model

    qwen = set(load_file(dirs["Qwen2.5-Math-PRM-7B"] / "model.safetensors"))
    body = {f"model.{k}" for k in Qwen2Model(AutoConfig.from_pretrained(dirs["Qwen2.5-Math-PRM-7B"])).state_dict()}
    assert qwen == body | {"score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"}
    sky = set(load_file(dirs["Skywork-o1-Open-PRM-Qwen-2.5-1.5B"] / "model.safetensors"))
    assert {"v_head.summary.weight", "v_head.summary.bias", "lm_head.weight"} <= sky
    cfg = json.loads((dirs["Qwen2.5-Math-PRM-7B"] / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForProcessRewardModel"] and "auto_map" in cfg


def test_detection_and_errors(dirs, tmp_path):
    from prm.models.kinds import detect_kind

    # hub ids are known without a download; architectures decide for an unknown name
    assert detect_kind("Qwen/Qwen2.5-Math-PRM-7B")["prm_kind"] == "qwen_prm"
    assert detect_kind("RLHFlow/Llama3.1-8B-PRM-Deepseek-Data")["layout"] == "chat"
    assert detect_kind("OpenRLHF/Mistral-7b-PRM-Math-Shepherd")["layout"] == "openrlhf"
    assert detect_kind("x", {"architectures": ["Qwen2ForPrmModel"]})["prm_kind"] == "value_head"
    assert detect_kind("x", {"architectures": ["LlamaForTokenClassification"]}) == {"prm_kind": "token_cls", "layout": "trl", "separator": "\n"}
    with pytest.raises(ValueError, match="one of: lm_tokens, qwen_prm, step_cls, step_embeddings, token_cls, value_head"):
        detect_kind("some/causal-lm", {"architectures": ["LlamaForCausalLM"]})
    with pytest.raises(KeyError, match="known: lm_tokens"):
        load_prm(str(dirs["Qwen2.5-Math-PRM-7B"]), kind="nope")
    # a causal LM in an unknown folder loads when the kind is forced
    import shutil

    other = tmp_path / "my-prm"
    shutil.copytree(dirs["math-shepherd-mistral-7b-prm"], other)
    with pytest.raises(ValueError, match="pass --kind"):
        load_prm(str(other))
    assert load_prm(str(other), kind="lm_tokens").spec.layout == "math_shepherd"


@pytest.mark.slow
@pytest.mark.parametrize("name", PER_LAYOUT)
def test_truncation_keeps_labels_aligned(dirs, name):
    # every kind: whole trailing steps go with their labels; kept scores equal the untruncated ones
    prm = load_prm(str(dirs[name]))
    labels = [1.0, 0.0, 1.0]
    full = prm.encode(Q1, S1, labels)
    assert [full.labels[p] for p in full.score_positions] == labels
    cut = prm.encode(Q1, S1, labels, max_length=full.score_positions[1] + 1)
    assert cut.n_truncated == 1 and len(cut.input_ids) <= full.score_positions[1] + 1
    assert [cut.labels[p] for p in cut.score_positions] == labels[:2]
    assert all(v == IGNORE for i, v in enumerate(cut.labels) if i not in cut.score_positions)
    assert prm.encode(Q1, S1, labels, max_length=full.score_positions[0]) is None  # no step fits: dropped
    whole = prm.score_steps(Q1, S1)
    prm.spec.max_length = full.score_positions[1] + 1
    _close([prm.score_steps(Q1, S1)], [whole[:2]], 1e-5)


def _mean_loss(prm, records):
    from prm.train.data import StepCollator

    rows = []
    for r in records:
        e = prm.encode(r["prompt"], r["completions"], r["labels"])
        rows.append({"input_ids": e.input_ids, "labels": e.labels})
    batch = StepCollator(prm.tokenizer.pad_token_id)(rows)
    labels = batch.pop("labels")
    with torch.no_grad():
        return float(step_loss(prm.kind.step_logits(prm.model, **batch), labels, prm.spec.label_scheme))


# name, label scheme, labels: the trainable kinds, each trained with PRMTrainer
TRAIN_CASES = [
    ("Qwen2-0.5B-Reward-Math-Sheperd", "binary", [[1, 1, 0], [1, 0]]),  # token_cls, TRL layout
    ("math-shepherd-mistral-7b-prm", "soft", [[0.9, 0.7, 0.2], [0.6, 0.1]]),  # lm_tokens with real soft targets
    ("Llama3.1-8B-PRM-Deepseek-Data", "binary", [[1, 1, 0], [1, 0]]),  # lm_tokens, chat layout
    ("Mistral-7b-PRM-Math-Shepherd", "binary", [[1, 1, 0], [1, 0]]),  # lm_tokens, OpenRLHF placeholder layout
    ("Skywork-o1-Open-PRM-Qwen-2.5-1.5B", "soft", [[0.9, 0.7, 0.2], [0.6, 0.1]]),  # value_head
]


@pytest.mark.slow
@pytest.mark.parametrize("name, scheme, labels", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_steps_lower_the_loss(dirs, tmp_path, name, scheme, labels):
    from prm.schema import make_record, to_dataset
    from prm.train import PRMTrainer, PRMTrainingArguments

    prm = load_prm(str(dirs[name]), label_scheme=scheme)
    records = [make_record(Q1, S1, labels[0], scheme), make_record(Q2, S2, labels[1], scheme)]
    before = _mean_loss(prm, records)
    w0 = {n: p.detach().clone() for n, p in prm.model.named_parameters()}
    args = PRMTrainingArguments(output_dir=str(tmp_path / "out"), max_steps=4, learning_rate=3e-3, per_device_train_batch_size=2,
                                report_to=[], save_strategy="no", use_cpu=True, logging_steps=1, max_length=None, max_prompt_length=None)
    trainer = PRMTrainer(prm=prm, args=args, train_dataset=to_dataset(records))
    trainer.train()
    after = _mean_loss(prm, records)
    assert after < before
    assert any(not torch.equal(w0[n], p) for n, p in prm.model.named_parameters())
    trainer.save_model(str(tmp_path / "model"))
    again = load_prm(str(tmp_path / "model"))
    assert again.spec.prm_kind == prm.spec.prm_kind and abs(_mean_loss(again, records) - after) < 1e-4


def test_kinds_registry_lists_all():
    # the published kinds and the BMUq featurizers are chosen by name
    assert KINDS.names() == ["lm_tokens", "qwen_prm", "step_cls", "step_embeddings", "token_cls", "value_head"]


@pytest.mark.slow
def test_evaluate_processbench_every_published_layout(dirs, tmp_path):
    # exp/evaluate.py loads each published PRM (here its look-alike folder) with no --kind and runs
    # ProcessBench from a local file in the hub copy's row format (id, generator, problem, steps,
    # final_answer_correct, label)
    from exp.evaluate import cli

    rows = [
        {"id": "gsm8k-0", "generator": "m", "problem": Q1, "steps": S1, "final_answer_correct": True, "label": -1},
        {"id": "gsm8k-1", "generator": "m", "problem": Q1, "steps": S1b, "final_answer_correct": False, "label": 0},
        {"id": "math-0", "generator": "m", "problem": Q2, "steps": S2, "final_answer_correct": True, "label": -1},
    ]
    data = tmp_path / "pb.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in LOOKALIKES:
        m = cli(["--model", str(dirs[name]), "--task", "processbench", "--data", str(data), "--threshold", "0.5", "--run_name", name,
                 "--results_dir", str(tmp_path / "results")])
        assert set(m["test"]["subsets"]) == {"gsm8k", "math"}  # subsets from the ids
        preds = [json.loads(x) for x in (tmp_path / "results" / "evaluate" / name / "predictions.jsonl").read_text().splitlines()]
        assert [len(p["step_scores"]) for p in preds] == [3, 2, 2]
    with pytest.raises(SystemExit, match="error: --model .*pass --kind"):
        import shutil

        shutil.copytree(dirs["math-shepherd-mistral-7b-prm"], tmp_path / "unknown-name")
        cli(["--model", str(tmp_path / "unknown-name"), "--task", "processbench", "--data", str(data), "--threshold", "0.5",
             "--results_dir", str(tmp_path / "r2")])


@pytest.mark.parametrize(
    "record, subset",
    [
        ({"meta": {"subset": "math"}, "source": "x", "id": "gsm8k-1"}, "math"),  # meta wins
        ({"meta": {}, "source": "olympiadbench", "id": "7"}, "olympiadbench"),  # the hub split it came from
        ({"meta": {}, "source": "processbench", "id": "omnimath-12"}, "omnimath"),  # a local file: the id's prefix
        ({"meta": {}, "source": "processbench", "id": "row-3"}, "processbench"),  # nothing known: one subset
    ],
)
def test_processbench_subset_of(record, subset):
    from prm.eval.processbench import subset_of

    assert subset_of(record) == subset


def test_load_prm_dtype_and_unknown_subset(dirs):
    from prm.eval.processbench import load_processbench

    # a dtype name casts the weights; an unknown one is one clear error
    prm = load_prm(str(dirs["Qwen2.5-Math-PRM-7B"]), torch_dtype="bf16")
    assert next(prm.model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'fp8'; known: auto"):
        load_prm(str(dirs["Qwen2.5-Math-PRM-7B"]), torch_dtype="fp8")
    with pytest.raises(ValueError, match="unknown ProcessBench subset"):
        load_processbench(None, subsets=["aime"])


A = "Step 1: She eats 3, so 16 - 3 = 13 eggs remain and none are sold yet."
B = "Step 2: She bakes with 4, so 13 - 4 = 9 eggs are left for the market."
TREE = [[A, B, "Step 3: The answer is 9."], [A, B, "Step 3: The answer is 10."], [A, "Step 2: 13 - 4 = 8.", "Step 3: The answer is 8."],
        [A, B, "Step 3: The answer is 9."], ["Step 1: 16 - 7 = 9."], [A, B]]


@pytest.mark.slow
@pytest.mark.parametrize("name", PER_LAYOUT)
def test_prefix_tree_scoring_equals_separate_passes(dirs, name):
    # candidates of one problem share the problem and leading steps (a prefix tree, a duplicate, a
    # candidate that is a prefix of others): scored once per shared run, same scores as one pass each
    prm = load_prm(str(dirs[name]))
    alone = [prm.score_steps(Q1, c) for c in TREE]
    _close(prm.score_candidates(Q1, TREE, batch_size=4), alone, 1e-5)
    _close(prm.score_batch([(Q1, c) for c in TREE] + [(Q2, S2)], batch_size=16)[: len(TREE)], alone, 1e-5)


def test_openrlhf_placeholder_in_text_is_refused(dirs):
    # a step that itself holds the placeholder would take the next step's label: one clear error
    prm = load_prm(str(dirs["Mistral-7b-PRM-Math-Shepherd"]))
    assert prm.spec.layout == "openrlhf" and prm.encode(Q2, S2).input_ids[0] != prm.tokenizer.bos_token_id  # no BOS
    with pytest.raises(ValueError, match="contains the placeholder 'ки'"):
        prm.encode(Q2, ["7 * 6 = 42 ки", "The answer is 42."])
