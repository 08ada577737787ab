"""MultiTurnEnv / ToolEnv: tool schemas and call parsing, stop reasons, the last env response at
max_turns, hook errors and timeouts, and token identity + loss masks on multi-turn rollouts."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Literal

import pytest
from datasets import Dataset

from verity.envs.multiturn import MultiTurnEnv
from verity.envs.tool_env import StatefulToolEnv, ToolEnv, tool_schema
from verity.models.chat import parse_tool_calls
from verity.rollout.tokens import audit_rollout, context_ids
from verity.rubrics.rubric import Rubric
from verity.types import Completion, SamplingArgs

# A Qwen3-style template: earlier assistant turns lose their <think> block when re-rendered.
THINK_STRIPPING = (
    "{% for m in messages %}{% set c = m['content'] %}"
    "{% if m['role'] == 'assistant' and not loop.last and '</think>' in c %}{% set c = c.split('</think>')[-1] %}"
    "{% endif %}<|{{ m['role'] }}|>\n{{ c }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _ds(n=2):
    return Dataset.from_list([{"question": f"q{i}", "answer": str(i + 3)} for i in range(n)])


class ScriptedSampler:
    """A local-model stand-in: fixed texts per turn, recording the token context of every call."""

    def __init__(self, tokenizer, script, finish="stop"):
        self.tokenizer, self.script, self.finish = tokenizer, script, finish
        self.name, self.calls = "scripted", []

    def generate_ids(self, prompt_ids, args):
        out = []
        for ids in prompt_ids:
            self.calls.append(list(ids))
            turn = sum(1 for c in self.calls if list(ids)[:len(c)] == c) - 1  # earlier contexts of this rollout
            text = self.script[min(turn, len(self.script) - 1)]
            toks = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            toks = toks + ([self.tokenizer.eos_token_id] if self.finish == "stop" else [])
            finish = "length" if len(toks) > args.max_tokens else self.finish
            toks = toks[:args.max_tokens]
            out.append(Completion(text=text, finish_reason=finish, prompt_ids=tuple(ids),
                                  completion_ids=tuple(toks), logprobs=tuple(-0.5 for _ in toks)))
        return out


class Guess(MultiTurnEnv):
    async def is_completed(self, messages, state, **kw):
        return state["answer"] in (messages[-1].get("content") or "")

    async def env_response(self, messages, state, **kw):
        return [{"role": "user", "content": f"no, try again (turn {state['turn']})"}], state


def _guess_env(max_turns=3, **kw):
    def saw_last_feedback(completion) -> float:
        return float(completion[-1]["role"] == "user")

    return Guess(max_turns=max_turns, dataset=_ds(), rubric=Rubric([saw_last_feedback]), **kw)


@pytest.fixture()
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _run(env, sampler, n=2, args=None):
    jobs = [(ex, 0) for ex in env.get_examples("train", n)]
    return asyncio.run(env.rollout_batch(sampler, jobs, args or SamplingArgs(max_tokens=48)))


# ---------------------------------------------------------------- schemas and tool-call parsing
def test_tool_schema_from_hints_and_docstring():
    def lookup(city: str, days: int = 1, unit: Literal["c", "f"] = "c", tags: list[str] | None = None,
               session: str = "") -> str:
        """Weather forecast for a city.

        Args:
            city: the city name
            days (int): how many days,
                at most 7.
            unit: temperature unit
        """

    s = tool_schema(lookup, skip=["session"])
    fn = s["function"]
    assert s["type"] == "function" and fn["name"] == "lookup" and fn["description"] == "Weather forecast for a city."
    props = fn["parameters"]["properties"]
    assert props["city"] == {"type": "string", "description": "the city name"}
    assert props["days"] == {"type": "integer", "description": "how many days, at most 7.", "default": 1}
    assert props["unit"]["enum"] == ["c", "f"]
    assert props["tags"]["anyOf"] == [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]
    assert "session" not in props and fn["parameters"]["required"] == ["city"]


def test_parse_tool_calls_good_and_malformed():
    p = parse_tool_calls('ok <tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call> done', id_prefix="c")
    assert p.content == "ok  done" and p.errors == ()
    assert p.calls == ({"id": "c0", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},)
    p = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"x": 1</tool_call>')
    assert not p.calls and "not valid JSON" in p.errors[0]
    p = parse_tool_calls('<tool_call>{"name": "f", "arguments": [1]}</tool_call>')
    assert not p.calls and "must be a JSON object" in p.errors[0]
    p = parse_tool_calls('<tool_call>["f"]</tool_call>')
    assert "string \"name\"" in p.errors[0]
    p = parse_tool_calls('thinking <tool_call>{"name": "f"')
    assert p.content == "thinking" and "unclosed" in p.errors[0]
    plain = parse_tool_calls("no calls here")
    assert plain.content == "no calls here" and plain.calls == () and plain.errors == ()


# ---------------------------------------------------------------- stop reasons, last env response
def test_max_turns_appends_last_env_response_and_reward_sees_it(tok):
    env = _guess_env(max_turns=3)
    rs = _run(env, ScriptedSampler(tok, ["1", "2"]))
    for r in rs:
        assert r.stop_reason == "max_turns" and len(r.turns) == 3
        assert [m["role"] for m in r.completion] == ["assistant", "user"] * 3
        assert r.completion[-1]["content"] == "no, try again (turn 3)"
        assert r.reward == 1.0  # the reward function saw the final feedback


def test_completed_stop_and_max_tokens_stop(tok):
    env = _guess_env(max_turns=5)
    rs = _run(env, ScriptedSampler(tok, ["1", "2", "3", "9"]))  # answers: "3" and "4"
    assert rs[0].stop_reason == "completed" and len(rs[0].turns) == 3 and rs[0].completion[-1]["role"] == "assistant"
    assert rs[1].stop_reason == "max_turns" and len(rs[1].turns) == 5
    rs = _run(_guess_env(max_turns=2), ScriptedSampler(tok, ["xx"], finish="length"))
    assert all(r.stop_reason == "max_tokens" and len(r.turns) == 2 for r in rs)


def test_context_window_stops_the_rollout(tok):
    sampler = ScriptedSampler(tok, ["1"])
    sampler.model = type("M", (), {"config": type("C", (), {"max_position_embeddings": 60})()})()
    r = _run(_guess_env(max_turns=10), sampler, n=1)[0]
    assert r.stop_reason == "context" and 1 <= len(r.turns) < 10
    assert len(r.prompt_ids) + len(r.completion_ids) <= 60


def test_hook_errors_and_timeouts_end_only_that_rollout(tok):
    class Flaky(Guess):
        async def env_response(self, messages, state, **kw):
            if state["example_id"] == 0:
                raise RuntimeError("boom")
            return await super().env_response(messages, state)

    class Slow(Guess):
        def env_response(self, messages, state, **kw):  # sync hook that hangs
            time.sleep(30 if state["example_id"] == 0 else 0)
            return [{"role": "user", "content": "x"}], state

    rs = _run(Flaky(max_turns=3, dataset=_ds(), rubric=Rubric([lambda: 1.0])), ScriptedSampler(tok, ["1"]))
    assert rs[0].stop_reason == "error" and "env_response raised RuntimeError: boom" in rs[0].error
    assert rs[0].reward == 0.0 and rs[1].stop_reason == "max_turns" and rs[1].error is None
    t0 = time.perf_counter()
    rs = _run(Slow(max_turns=3, env_timeout=0.5, dataset=_ds(), rubric=Rubric([lambda: 1.0])),
              ScriptedSampler(tok, ["1"]))
    assert time.perf_counter() - t0 < 10
    assert rs[0].stop_reason == "error" and "timed out after 0.5 s" in rs[0].error
    assert rs[1].stop_reason == "max_turns"


# ---------------------------------------------------------------- tools
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def crash(x: int) -> int:
    """Always fails."""
    raise ValueError("bad x")


def hang(x: int) -> int:
    """Never returns in time."""
    time.sleep(30)
    return x


def _tool_env(**kw):
    return ToolEnv(tools=[add, crash, hang], max_turns=kw.pop("max_turns", 6), tool_timeout=0.5, dataset=_ds(1),
                   rubric=Rubric([lambda completion: float(len(completion))]), **kw)


def test_tool_failures_come_back_as_tool_messages(tok):
    call = '<tool_call>{{"name": "{}", "arguments": {}}}</tool_call>'.format
    script = [call("add", '{"a": 2, "b": 3}'), call("nope", "{}"), call("crash", '{"x": 1}'),
              call("hang", '{"x": 1}'), '<tool_call>{"name": "add", "arguments": {"a": 1,</tool_call>',
              call("add", '{"a": 1}'), "the answer is 5"]
    r = _run(_tool_env(max_turns=8), ScriptedSampler(tok, script), n=1)[0]
    assert r.stop_reason == "completed" and r.error is None and len(r.turns) == 7
    tool_msgs = [m["content"] for m in r.completion if m["role"] == "tool"]
    assert tool_msgs[0] == "5"
    assert "unknown tool 'nope'" in tool_msgs[1] and "available: add, crash, hang" in tool_msgs[1]
    assert tool_msgs[2] == "Error: ValueError: bad x"
    assert tool_msgs[3] == "Error: tool hang timed out after 0.5 s"
    assert "not valid JSON" in tool_msgs[4]
    assert "bad arguments for add" in tool_msgs[5]
    assert r.completion[0]["tool_calls"][0]["function"]["name"] == "add"
    assert r.completion[-1] == {"role": "assistant", "content": "the answer is 5"}


def test_tool_schemas_reach_the_prompt(tok):
    sampler = ScriptedSampler(tok, ["done"])
    _run(_tool_env(), sampler, n=1)
    prompt = tok.decode(sampler.calls[0])
    assert '"name": "add"' in prompt and "<tool_call>" in prompt  # non-tool-aware template: system message


def test_stateful_tool_env_injects_hidden_args(tok):
    def fetch(key: str, session: str) -> str:
        """Read a value."""
        return f"{session}:{key}"

    class Env(StatefulToolEnv):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.add_tool(fetch, args_to_skip=["session"])

        def update_tool_args(self, tool_name, tool_args, messages, state, **kw):
            return {**tool_args, "session": f"s{state['example_id']}"}

    env = Env(dataset=_ds(1), rubric=Rubric([lambda: 1.0]))
    assert env.oai_tools[0]["function"]["parameters"]["required"] == ["key"]
    script = ['<tool_call>{"name": "fetch", "arguments": {"key": "k", "session": "forged"}}</tool_call>', "ok"]
    r = _run(env, ScriptedSampler(tok, script), n=1)[0]
    assert [m["content"] for m in r.completion if m["role"] == "tool"] == ["s0:k"]


# ---------------------------------------------------------------- tokens: identity and masks
@pytest.mark.parametrize("template", ["plain", "think-stripping"])
def test_trained_sequence_is_exactly_the_sampled_one(tok, template):
    if template == "think-stripping":
        tok.chat_template = THINK_STRIPPING
    sampler = ScriptedSampler(tok, ["<think>maybe 1</think>1", "<think>then 2</think>2"])
    r = _run(_guess_env(max_turns=3), sampler, n=1)[0]
    assert len(r.turns) == 3 and len(sampler.calls) == 3
    for t, seen in zip(r.turns, sampler.calls, strict=True):
        assert context_ids(r, t.index) == seen  # what the model was conditioned on, token for token
        sampled = r.completion_ids[t.start:t.start + t.num_sampled]
        assert list(r.completion_mask[t.start:t.start + t.num_sampled]) == [1] * t.num_sampled
        assert tok.decode(sampled, skip_special_tokens=True) == r.completion[t.message_index]["content"]
        assert list(r.completion_logprobs[t.start:t.start + t.num_sampled]) == [-0.5] * t.num_sampled
    assert sum(r.completion_mask) == sum(t.num_sampled for t in r.turns)
    env_tokens = [i for i, m in zip(r.completion_ids, r.completion_mask, strict=True) if m == 0]
    assert "no, try again (turn 1)" in tok.decode(env_tokens)
    assert all(lp == 0.0 for lp, m in zip(r.completion_logprobs, r.completion_mask, strict=True) if m == 0)
    audit = audit_rollout(tok, r)
    if template == "plain":
        assert all(a.matches for a in audit)
    else:  # re-rendering drops the earlier <think> blocks: a re-tokenising trainer would drift here
        assert audit[0].matches and not audit[1].matches and not audit[2].matches
        assert audit[1].first_diff is not None and audit[1].rendered_len < audit[1].sampled_len


# A template that numbers messages: what follows an assistant turn depends on its position, which the
# bridge (rendered after a fixed one-message anchor) cannot know -- re-rendering breaks between turns.
NUMBERING = ("{% for m in messages %}<|{{ m['role'] }} {{ loop.index }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|assistant {{ messages | length + 1 }}|>\n{% endif %}")


@pytest.mark.parametrize(("template", "status", "says"), [
    (None, "pass", "all 6 turn boundaries re-render"), (THINK_STRIPPING, "warn", "(sampled)"),
    (NUMBERING, "fail", "(between turns)")])
def test_doctor_audits_every_turn_boundary(tok, template, status, says):
    """`verity doctor -m` on a multi-turn env runs the turn-by-turn audit on its rollouts."""
    from verity.doctor import diagnose

    if template is not None:
        tok.chat_template = template
    sampler = ScriptedSampler(tok, ["<think>maybe 1</think>1", "<think>then 2</think>2"])
    checks = {c.name: c for c in asyncio.run(diagnose(_guess_env(max_turns=3), sampler, num_examples=2,
                                                      rollouts=1, sampling_args=SamplingArgs(max_tokens=48)))}
    assert checks["rollouts"].detail.startswith("2 rollouts")
    assert checks["template"].status == status and says in checks["template"].detail, checks["template"]


def test_single_turn_env_is_the_one_turn_case(tiny_model_dir):
    """The turn loop on a single-turn env gives exactly what one batched sampler call gives."""
    from verity.envs.base import SingleTurnEnv
    from verity.envs.turns import run_rollouts
    from verity.rollout.hf_sampler import HFSampler

    sampler = HFSampler.from_pretrained(tiny_model_dir, dtype="float32")
    env = SingleTurnEnv(dataset=_ds(3), rubric=Rubric([lambda: 1.0]))
    args = SamplingArgs(max_tokens=8, temperature=1.0, seed=5)
    jobs = [(ex, i) for ex in env.get_examples("train") for i in range(2)]
    rs = asyncio.run(run_rollouts(env, sampler, jobs, args))
    direct = sampler.generate_sync([list(ex.prompt) for ex, _ in jobs], args)  # the pre-multi-turn path
    for r, c in zip(rs, direct, strict=True):
        assert r.prompt_ids == c.prompt_ids and r.completion_ids == c.completion_ids
        assert r.completion_logprobs == c.logprobs and r.completion_mask == (1,) * len(c.completion_ids)
        assert r.completion == ({"role": "assistant", "content": c.text},) and len(r.turns) == 1
        assert r.stop_reason == ("max_tokens" if c.finish_reason == "length" else "completed")


def test_multiturn_batch_masks_env_tokens_and_matches_learner_logprobs(tiny_model_dir):
    import torch

    from verity.models.loading import load_model
    from verity.rollout.hf_sampler import HFSampler
    from verity.train.batching import make_batch
    from verity.train.learner import LocalLearner

    model, tok = load_model(tiny_model_dir, dtype="float32")
    sampler = HFSampler(model, tok)
    rs = _run(_guess_env(max_turns=3), sampler, n=2, args=SamplingArgs(max_tokens=6, seed=3))
    assert all(len(r.turns) >= 2 for r in rs)
    batch = make_batch(rs, [1.0] * len(rs), tok.pad_token_id)
    lp, _ = LocalLearner(model, lr=0.0).completion_logprobs(batch)
    for b, r in enumerate(rs):
        n = len(r.completion_ids)
        mask = batch.loss_mask[b, :n]
        assert mask.tolist() == [float(m) for m in r.completion_mask] and 0 < mask.sum() < n
        torch.testing.assert_close(lp[b, :n][mask.bool()], torch.tensor(r.completion_logprobs)[mask.bool()],
                                   atol=2e-4, rtol=1e-4)


def test_results_record_stop_reason_and_turns(tok):
    rec = _run(_guess_env(max_turns=2), ScriptedSampler(tok, ["1"]), n=1)[0].to_record()
    assert rec["stop_reason"] == "max_turns" and rec["num_turns"] == 2
    json.dumps(rec)


# ---------------------------------------------------------------- endpoints: OpenAI tool_calls
class FakeAsyncOpenAI:
    """Just enough of ``openai.AsyncOpenAI`` for OpenAISampler: scripted ChatCompletion replies."""

    def __init__(self, replies):
        from openai.types.chat import ChatCompletion

        self.replies = [ChatCompletion.model_validate(r) for r in replies]
        self.requests, self.base_url, self.timeout, self.max_retries = [], "http://fake/v1", 60.0, 0
        self.chat = type("Chat", (), {"completions": self})()
        self.models = self

    def with_options(self, **kw):
        return self

    async def list(self):
        return []

    async def create(self, **req):
        self.requests.append(json.loads(json.dumps(req)))
        return self.replies[len(self.requests) - 1]


def _reply(content, calls=None):
    msg = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = [{"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": a}}
                             for i, (n, a) in enumerate(calls)]
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls" if calls else "stop", "message": msg}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}


def test_endpoint_rollout_uses_openai_tool_calls():
    from verity.rollout.openai_sampler import OpenAISampler

    client = FakeAsyncOpenAI([_reply(None, [("add", '{"a": 2, "b": 3}'), ("add", '{"a": 1,')]),
                              _reply("it is 5")])
    env = _tool_env()
    r = _run(env, OpenAISampler(model="m", client=client), n=1)[0]
    assert r.stop_reason == "completed" and r.error is None and len(r.turns) == 2 and r.completion_ids == ()
    assert client.requests[0]["tools"] == env.oai_tools
    second = client.requests[1]["messages"]
    assert second[-3]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}
    assert second[-2] == {"role": "tool", "content": "5", "tool_call_id": "c0"}
    assert second[-1]["tool_call_id"] == "c1" and "not a JSON object" in second[-1]["content"]
    assert r.completion[-1] == {"role": "assistant", "content": "it is 5"} and r.usage_tokens == 6


def test_tool_schema_matches_verifiers():
    """Differential check against verifiers 0.1.6's convert_func_to_oai_tool. Intended differences:
    verity lists as required only the parameters without a default and sends no ``strict`` flag
    (verifiers uses OpenAI strict mode, where every parameter is required); no pydantic ``title``s;
    argument descriptions are whitespace-normalised."""
    tool_utils = pytest.importorskip("verifiers.utils.tool_utils")

    def lookup(city: str, days: int = 1, unit: Literal["c", "f"] = "c", tags: list[str] | None = None,
               ratio: float = 0.5, flag: bool = False) -> str:
        """Weather forecast for a city.

        Args:
            city: the city name
            days (int): how many days,
                at most 7.
            unit: temperature unit
        """

    def norm(schema):
        fn = schema["function"]
        props = {k: {kk: (" ".join(vv.split()) if kk == "description" else vv) for kk, vv in v.items()
                     if kk != "title"} for k, v in fn["parameters"]["properties"].items()}
        return fn["name"], fn["description"], props, fn["parameters"]["additionalProperties"]

    mine, peer = norm(tool_schema(lookup)), norm(tool_utils.convert_func_to_oai_tool(lookup))
    assert mine[:2] == peer[:2] and mine[3] == peer[3]
    assert json.dumps(mine[2], sort_keys=True) == json.dumps(peer[2], sort_keys=True)


def test_completion_mode_text_prompt_is_the_same_loop(tok):
    from verity.envs.turns import run_rollouts
    from verity.types import Example

    class TextGame(MultiTurnEnv):
        async def is_completed(self, messages, state, **kw):
            return False

        async def env_response(self, messages, state, **kw):
            return "\nno.\n", state

    env = TextGame(max_turns=2, dataset=_ds(1), rubric=Rubric([lambda completion: float(completion.count("no."))]))
    ex = Example(id=0, prompt="Q: guess\nA:", answer="3")  # type: ignore[arg-type]
    r = asyncio.run(run_rollouts(env, ScriptedSampler(tok, [" 1", " 2"]), [(ex, 0)], SamplingArgs(max_tokens=48)))[0]
    assert r.completion == " 1\nno.\n 2\nno.\n" and r.reward == 2.0 and r.stop_reason == "max_turns"
    assert r.prompt_ids == tuple(tok("Q: guess\nA:", add_special_tokens=False)["input_ids"])
    env_ids = [i for i, m in zip(r.completion_ids, r.completion_mask, strict=True) if m == 0]
    assert env_ids == tok("\nno.\n", add_special_tokens=False)["input_ids"]  # the last response is not tokenised
