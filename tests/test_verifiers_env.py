"""End-to-end differential test: one verifiers 0.1.x environment file, built with verifiers and with verity.

tests/data/vf01_env.py is a 0.1.x-style environment (``get_format_str()`` in the system prompt,
alternative tags, lambda rewards, ``Rubric.get_reward_func_names()``); the verifiers build is the
same file with its import line changed. Both run ``generate`` against the same mocked
OpenAI-compatible endpoint, which answers each question with a fixed completion, and must
produce the same prompts, completions, rewards and per-function metrics for every rollout.
verity's own eval path (``rollout_batch``, used by ``verity eval``/``train``) must give the same
rewards. A completion-mode (``message_type="completion"``) environment is checked the same way.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

vf = pytest.importorskip("verifiers", reason="differential tests need the compat extra: pip install -e .[compat]")
import httpx  # noqa: E402
import openai  # noqa: E402

import verity  # noqa: E402
from verity.types import Completion  # noqa: E402

ENV_FILE = Path(__file__).parent / "data" / "vf01_env.py"

# Fixed model answers, cycled over the questions: right, wrong, alternatives, padding, junk, unclosed, empty.
ANSWERS = [
    "<reasoning>\n{a} plus {b}\n</reasoning>\n<answer>\n{s}\n</answer>",
    "<reasoning>easy</reasoning><answer>{w}</answer>",
    "<reasoning>\nhmm\n</reasoning>\n<final>\n{s}\n</final>",
    "Sure! <answer>   {s}   </answer> done",
    "{s}",
    "<reasoning>unclosed <answer>{s}",
    "",
    "<answer>{w}</answer><answer>{s}</answer>",
    "<reasoning>\n<answer>{s}</answer>\n</reasoning>",
    "<REASONING>x</REASONING>\n<answer>\n\u00a0{s}\u3000\n</answer>",
]


def answer_for(question: str) -> str:
    a, b = (int(x) for x in question.removeprefix("What is ").rstrip("?").split(" + "))
    return ANSWERS[(5 * a + b) % len(ANSWERS)].format(a=a, b=b, s=a + b, w=a + b + 1)


def load(package: str, path: Path = ENV_FILE, **kwargs):
    src = path.read_text()
    if package == "verifiers":
        assert src.count("\nimport verity as vf\n") == 1
        src = src.replace("\nimport verity as vf\n", "\nimport verifiers as vf\n")
    ns: dict = {}
    exec(compile(src, str(path), "exec"), ns)
    return ns["load_environment"](**kwargs)


def mock_client() -> openai.AsyncOpenAI:
    """An AsyncOpenAI client whose transport answers /models, /chat/completions and /completions locally."""
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [
                {"id": "m", "object": "model", "created": 0, "owned_by": "t"}]})
        body = json.loads(request.content)
        chat = "messages" in body
        prompt = body["messages"][-1]["content"] if chat else body["prompt"].split("Q: ")[-1]
        text = answer_for(prompt)
        choice = ({"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}} if chat
                  else {"index": 0, "finish_reason": "stop", "text": text})
        return httpx.Response(200, json={
            "id": "c", "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": body["model"], "choices": [choice],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    return openai.AsyncOpenAI(api_key="test", base_url="http://mock/v1", max_retries=0,
                              http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))


def generate_both(env_a, env_b, inputs_a, inputs_b):
    out_a = asyncio.run(env_a.generate(inputs_a, client=mock_client(), model="m", use_tqdm=False))
    out_b = asyncio.run(env_b.generate(inputs_b, client=mock_client(), model="m", use_tqdm=False))
    return out_a, out_b


def test_same_env_file_same_prompts_and_rewards_through_generate():
    env_a, env_b = load("verifiers"), load("verity")
    assert env_b.system_prompt == env_a.system_prompt and "<[ answer | final ]>" in env_b.system_prompt
    assert env_b.reward_table == env_a.reward_table  # built from Rubric.get_reward_func_names()
    assert env_b.get_dataset().to_list() == env_a.get_dataset().to_list()  # prompt + example_id columns
    out_a, out_b = generate_both(env_a, env_b, env_a.get_dataset(), env_b.get_dataset())
    n = len(out_a.prompt)
    assert n == 16
    assert out_b.prompt == out_a.prompt
    assert out_b.completion == out_a.completion
    assert out_b.example_id == out_a.example_id and out_b.answer == out_a.answer
    assert out_b.reward == out_a.reward  # bit for bit, every rollout
    assert dict(out_b.metrics) == out_a.metrics  # every reward function, every rollout
    assert len(set(out_b.reward)) >= 5  # the fixed answers exercise different scores
    assert [s["turn"] for s in out_b.state] == [1] * n


class ReplaySampler:
    """A verity sampler answering like the mocked endpoint (for the eval/train path)."""

    name = "replay"

    async def generate(self, prompts, args):
        return [Completion(text=answer_for(p[-1]["content"])) for p in prompts]


def test_verity_eval_path_gives_the_same_rewards():
    env_a, env_b = load("verifiers"), load("verity")
    out_a = asyncio.run(env_a.generate(env_a.get_dataset(), client=mock_client(), model="m", use_tqdm=False))
    res = env_b.evaluate(ReplaySampler(), num_examples=16, rollouts_per_example=1)
    by_id = {r["example_id"]: r for r in res.records}
    assert [by_id[i]["reward"] for i in out_a.example_id] == out_a.reward
    for name, values in out_a.metrics.items():
        # verity keeps both lambdas ('<lambda>', '<lambda>_2'); verifiers' metrics keep the last one
        key = name if name != "<lambda>" else "<lambda>_2"
        assert [by_id[i]["scores"][key] for i in out_a.example_id] == values
    assert res.summary["reward_errors"] == {}


COMPLETION_ENV = '''
from datasets import Dataset
import verity as vf


def load_environment():
    parser = vf.XMLParser(["answer"])
    rows = [{"prompt": f"Add.\\nQ: What is {a} + {b}?", "answer": str(a + b)} for a in range(3) for b in range(3)]
    rubric = vf.Rubric(funcs=[lambda completion, answer: float(parser.parse_answer(completion) == answer),
                              parser.get_format_reward_func()], weights=[1.0, 0.5], parser=parser)
    return vf.SingleTurnEnv(dataset=Dataset.from_list(rows), parser=parser, rubric=rubric, message_type="completion")
'''


def test_completion_mode_env(tmp_path):
    path = tmp_path / "completion_env.py"
    path.write_text(COMPLETION_ENV)
    env_a, env_b = load("verifiers", path), load("verity", path)
    out_a, out_b = generate_both(env_a, env_b, env_a.get_dataset(), env_b.get_dataset())
    assert all(isinstance(c, str) for c in out_b.completion)
    assert (out_b.prompt, out_b.completion) == (out_a.prompt, out_a.completion)
    assert (out_b.reward, dict(out_b.metrics)) == (out_a.reward, out_a.metrics)
    with pytest.raises(ValueError):
        verity.SingleTurnEnv(dataset=env_b.dataset, system_prompt="x", message_type="completion")


def test_rollout_signature_returns_completion_and_state():
    env = load("verity")
    prompt = env.get_dataset()[0]["prompt"]
    completion, state = asyncio.run(env.rollout(mock_client(), "m", prompt, answer="0"))
    assert completion == [{"role": "assistant", "content": answer_for("What is 0 + 0?")}]
    assert state["completion"] is completion and state["answer"] == "0" and state["turn"] == 1
    assert len(state["responses"]) == 1 and state["timing"]["generation_ms"] >= 0
    out = env.generate_sync({"prompt": [prompt], "answer": ["0"]}, client=mock_client(), model="m", use_tqdm=False)
    assert out.reward == [1.0 + 0.2 * 1.0]
