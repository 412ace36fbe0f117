"""prm.rl: the PRM as a TRL reward function, on a tiny real PRM built from a config."""

import pytest
import torch

from prm.eval.aggregate import aggregate
from prm.models.prm import PRM, PRMSpec
from prm.registry import UnknownName
from prm.rl import AnswerReward, PRMReward, completion_text, mixed_reward, problem_from_chat, problem_text

PROBLEM = "Tom has 3 apples and buys 4 more. How many apples does he have?"
GOOD = "He has 3 + 4 = 7 apples.\nThe answer is: 7"
BAD = "He has 3 + 4 = 8 apples.\nThen 8 - 1 = 7.\nThe answer is: 8"


@pytest.fixture(scope="module")
def tiny_prm(tmp_path_factory):
    from exp.benchmarks.common import tiny_backbone

    d = tiny_backbone("llama", tmp_path_factory.mktemp("tiny") / "llama")
    torch.manual_seed(0)
    return PRM.from_backbone(str(d), PRMSpec(label_scheme="binary", separator="\n"), use_pretrained=False)


class CountingPRM:
    """The tiny PRM, counting score_batch calls (batching is part of the contract)."""

    def __init__(self, prm):
        self.prm, self.calls = prm, []

    def score_batch(self, items, batch_size=16):
        self.calls.append(list(items))
        return self.prm.score_batch(items, batch_size)


@pytest.mark.parametrize("prompt,expected", [
    # standard format: the prompt string is the problem
    (PROBLEM, PROBLEM),
    # conversational: the last user message, not the system prompt or a few-shot example
    ([{"role": "system", "content": "Solve it."}, {"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
      {"role": "user", "content": PROBLEM}], PROBLEM),
    # content given as a list of text parts
    ([{"role": "user", "content": [{"type": "text", "text": PROBLEM}]}], PROBLEM),
    # a prompt already rendered with a ChatML template (what OpenRLHF sends): the last user turn
    (f"<|im_start|>system\nSolve.<|im_end|>\n<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>user\n{PROBLEM}<|im_end|>\n<|im_start|>assistant\n", PROBLEM),
    # Llama 3 template
    (f"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{PROBLEM}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", PROBLEM),
])
def test_problem_text(prompt, expected):
    assert problem_text(prompt) == expected


def test_completion_text_conversational():
    # TRL's conversational completion: one assistant message
    assert completion_text([{"role": "assistant", "content": GOOD}]) == GOOD
    assert problem_from_chat("plain text stays") == "plain text stays"


@pytest.mark.parametrize("how", ["min", "prod", "last"])
def test_reward_is_the_aggregate_of_one_batched_call(tiny_prm, how):
    prm = CountingPRM(tiny_prm)
    reward = PRMReward(prm, aggregator=how, split_mode="lines", batch_size=4)
    prompts = [PROBLEM, PROBLEM, [{"role": "user", "content": PROBLEM}]]
    completions = [GOOD, BAD, [{"role": "assistant", "content": BAD}]]
    got = reward(prompts=prompts, completions=completions, answer=["7", "7", "7"])
    assert len(prm.calls) == 1 and len(prm.calls[0]) == 3  # the whole batch in one PRM call
    # split the PRM's way (lines), same problem for both formats
    assert prm.calls[0][1] == (PROBLEM, BAD.split("\n")) and prm.calls[0][2] == prm.calls[0][1]
    ref = tiny_prm.score_batch([(PROBLEM, GOOD.split("\n")), (PROBLEM, BAD.split("\n"))])
    assert got[0] == pytest.approx(aggregate(ref[0], how)) and got[1] == pytest.approx(aggregate(ref[1], how))
    assert got[2] == pytest.approx(got[1])
    assert reward.__name__ == f"prm_{how}"


def test_empty_completion_and_logging(tiny_prm):
    # a completion with no step gets empty_reward without a PRM call for it; step scores are logged
    prm = CountingPRM(tiny_prm)
    extra, metrics = {}, {}
    reward = PRMReward(prm, split_mode="lines", empty_reward=-1.0)
    got = reward([PROBLEM, PROBLEM], ["   \n", GOOD], log_extra=lambda k, v: extra.setdefault(k, v),
                 log_metric=lambda k, v: metrics.setdefault(k, v))
    assert got[0] == -1.0 and 0.0 < got[1] < 1.0
    assert len(prm.calls[0]) == 1
    assert extra["prm_min_steps"][0] == "" and len(extra["prm_min_steps"][1].split()) == 2
    assert metrics["prm_min/no_step_frac"] == 0.5 and metrics["prm_min/steps_per_completion"] == 1.0


def test_step_scores_and_max_steps(tiny_prm):
    # per-step scores for dense-reward trainers; max_steps keeps the leading steps only
    reward = PRMReward(tiny_prm, split_mode="lines", max_steps=2)
    (s,) = reward.step_scores([PROBLEM], [BAD])
    assert len(s) == 2 and s == pytest.approx(tiny_prm.score_batch([(PROBLEM, BAD.split("\n")[:2])])[0])


def test_answer_reward_and_mix():
    r = AnswerReward("answer")
    # right answer, wrong answer, no stated answer, no gold answer
    assert r([PROBLEM] * 4, [GOOD, BAD, "I do not know", GOOD], answer=["7", "7", "7", None]) == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(KeyError, match="column 'answer'.*columns: \\['gold'\\]"):
        r([PROBLEM], [GOOD], gold=["7"])
    assert mixed_reward(0.25, True, 1.0, 0.5) == 0.75 and mixed_reward(0.25, None, 2.0, 0.5) == 0.5


@pytest.mark.parametrize("kw,err", [
    ({"aggregator": "median"}, UnknownName),  # unknown aggregator lists the known ones
    ({"split_mode": "sentences"}, ValueError),  # unknown split mode
])
def test_bad_settings(tiny_prm, kw, err):
    with pytest.raises(err, match="known"):
        PRMReward(tiny_prm, **kw)
