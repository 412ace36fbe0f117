"""Monte-Carlo step labels, Claude as the Method 2 generator (against the loopback fake API), and
waiting for a GPU."""

import pytest

from prm.device import wait_for_gpu
from prm.label.generate.claude import APPROACHES, ClaudeGenerator
from prm.label.verify import MCVerifier, make_verifier
from prm.label.verify.rules import check_step

KEY = "sk-ant-test-GEN-456"


class ArithmeticCompleter:
    """Continues a prefix to the right answer iff all of its computations are right (the answer is
    the last number of the prefix); records what it was asked."""

    def __init__(self, right_share: float = 1.0):
        self.calls = []

    def __call__(self, problems, prefixes, n):
        self.calls.append((list(problems), list(prefixes), n))
        out = []
        for pre in prefixes:
            ok = all(check_step(s).verdict is not False for s in pre.split("\n"))
            last = pre.replace(".", " ").split()[-1]
            out.append([f"The answer is {last if ok else 'wrong'}." for _ in range(n)])
        return out


ITEMS = [
    ("What is 2+3+4?", ["2 + 3 = 5", "5 + 4 = 9", "The answer is 9."], "9"),
    ("What is 2+3+4?", ["2 + 3 = 6", "6 + 4 = 10", "The answer is 10."], "9"),
]


def test_mc_verifier_labels_from_rollouts():
    comp = ArithmeticCompleter()
    v = MCVerifier(comp, num_completions=3)
    g_right, g_wrong = v.grade_many(ITEMS)
    # one batched call for every prefix but the last of every solution
    assert len(comp.calls) == 1 and comp.calls[0][1] == ["2 + 3 = 5", "2 + 3 = 5\n5 + 4 = 9", "2 + 3 = 6", "2 + 3 = 6\n6 + 4 = 10"]
    assert g_right.step_correct == [False, True, True]  # prefix "2 + 3 = 5" ends on 5, not on the answer 9
    assert g_wrong.step_correct == [False, False, False] and g_wrong.solution_correct is False
    assert g_right.estimates == {"mc_soft": [0.0, 1.0, 1.0], "mc_hard": [0.0, 1.0, 1.0]}
    assert isinstance(make_verifier("mc", completer=comp), MCVerifier)


def test_mc_soft_needs_half():
    def half(problems, prefixes, n):
        return [["The answer is 9."] * (n // 2) + ["The answer is 1."] * (n - n // 2) for _ in prefixes]

    hard = MCVerifier(half, 4, "hard").grade(*ITEMS[0])
    soft = MCVerifier(half, 3, "soft").grade(*ITEMS[0])
    assert hard.step_correct[:2] == [True, True] and hard.estimates["mc_soft"][:2] == [0.5, 0.5]
    assert soft.step_correct[:2] == [False, False]  # 1 of 3 < half
    with pytest.raises(ValueError, match="hard' or 'soft"):
        MCVerifier(half, 3, "median")


@pytest.mark.slow
def test_mc_verifier_with_the_embedded_model():
    from prm.label.generate import LocalGenerator

    gen = LocalGenerator("smollm2", max_new_tokens=24, batch_size=8)
    g = MCVerifier(gen.complete, num_completions=2).grade(*ITEMS[0])
    assert len(g.step_correct) == 3 and all(0.0 <= e <= 1.0 for e in g.estimates["mc_soft"])
    assert g.step_correct[2] is True  # the last step is judged by the solution's own answer


@pytest.mark.api
@pytest.mark.parametrize("batch", [False, True])
def test_claude_generator_varies_prompts_and_caches(fake_api, tmp_path, batch):
    def make():
        return ClaudeGenerator("claude-sonnet-4-6", api_key=KEY, base_url=fake_api.url, cache_path=tmp_path / "gen.jsonl",
                               batch=batch, poll_interval=0.01)

    gen = make()
    out = gen.generate(["Tom has 3 bags of 4 apples. How many apples?", "Ann has 2 cats and 5 dogs. How many pets?"], n=3)
    assert [len(o) for o in out] == [3, 3]
    assert out[0][0].endswith("The answer is: 12") and out[0][1].endswith("The answer is: 7")  # approach 1 vs 2
    users = [r["messages"][0]["content"] for r in fake_api.requests]
    assert len(set(users)) == 6 and all(any(a in u for a in APPROACHES) for u in users)
    assert fake_api.requests[0]["system"][0]["cache_control"] == {"type": "ephemeral"} and "temperature" not in fake_api.requests[0]
    n = len(fake_api.requests)
    assert make().generate(["Tom has 3 bags of 4 apples. How many apples?"], n=3) == [out[0]] and len(fake_api.requests) == n
    assert make().generate(["Tom has 3 bags of 4 apples. How many apples?"], n=4)[0][:3] == out[0] and len(fake_api.requests) == n + 1
    assert gen.usage.batch is batch and gen.usage.requests == 6
    assert all(KEY not in f.read_text() for f in tmp_path.iterdir())


def test_wait_for_gpu():
    assert wait_for_gpu(10, 1, probe=list) is None  # no GPU: go on at once
    free = iter([[2.0, 3.0], [2.0, 12.0]])
    slept = []
    assert wait_for_gpu(10, 5, poll_s=7, probe=lambda: next(free), sleep=slept.append) == 1 and slept == [7]
    with pytest.raises(TimeoutError, match="no GPU reached 10 GiB"):
        wait_for_gpu(10, 0, probe=lambda: [1.0], sleep=lambda s: None)


def test_credentials_from_env_or_dotenv(tmp_path, monkeypatch):
    import os

    from prm.io import secret, use_hf_token

    monkeypatch.chdir(tmp_path)
    for k in ("HF_TOKEN", "HF_AUTH_TOKEN", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    assert secret("HF_AUTH_TOKEN") is None and use_hf_token() is False
    (tmp_path / ".env").write_text("HF_AUTH_TOKEN=hf_from_dotenv\nANTHROPIC_API_KEY=sk-ant-dotenv\n")
    assert secret("ANTHROPIC_API_KEY") == "sk-ant-dotenv"
    assert use_hf_token() is True and os.environ["HF_TOKEN"] == "hf_from_dotenv"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env")
    assert secret("ANTHROPIC_API_KEY") == "sk-ant-env"  # the environment wins
