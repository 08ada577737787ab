"""Environments: dataset validation, rollouts + evaluation with a fake sampler, loading by id/file/module,
the pii-masking rubric, and incremental / resumable results files."""

from __future__ import annotations

import asyncio
import json
import textwrap

import pytest

import verity
from verity.envs.registry import list_environments, load_environment
from verity.errors import ConfigError, DatasetError, EnvironmentNotFound
from verity.types import Completion


class FakeSampler:
    """Answers every prompt with ``fn(prompt)`` (default: a fixed text); counts calls and prompts."""

    def __init__(self, text: str = "<answer>\nA\n</answer>", fn=None, fail_on_call: int | None = None):
        self.name = "fake-model"
        self.text = text
        self.fn = fn
        self.fail_on_call = fail_on_call
        self.calls = 0
        self.num_prompts = 0
        self.args = []

    async def generate(self, prompts, args):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise RuntimeError("sampler crashed")
        self.num_prompts += len(prompts)
        self.args.append(args)
        return [Completion(text=self.fn(p) if self.fn else self.text) for p in prompts]


def exact_match(completion, answer, parser):
    return float(parser.parse_answer(completion) == answer)


def make_env(rows=None, **kw):
    rows = rows if rows is not None else [
        {"question": "a", "answer": "A"}, {"question": "b", "answer": "B"}, {"question": "c", "answer": "C"}]
    parser = verity.XMLParser(["answer"])
    rubric = verity.Rubric([exact_match, parser.get_format_reward_func()], weights=[1.0, 0.1], parser=parser)
    return verity.SingleTurnEnv(eval_dataset=rows, parser=parser, rubric=rubric, **kw)


# ---------------------------------------------------------------- dataset validation
def test_missing_question_column():
    with pytest.raises(DatasetError, match="missing column 'question'"):
        make_env([{"answer": "A"}])


def test_mistyped_question_names_column_and_row():
    rows = [{"question": "a", "answer": "A"}, {"question": "b", "answer": "B"},
            {"question": 3, "answer": "C"}]
    env = make_env(rows)  # only the first row is checked eagerly
    with pytest.raises(DatasetError) as e:
        env.get_examples("eval")
    msg = str(e.value)
    assert "row 2" in msg and "'question'" in msg and "int" in msg


def test_mistyped_question_in_hf_dataset():
    from datasets import Dataset

    ds = Dataset.from_list([{"question": "a"}, {"question": "b"}, {"question": None}, {"question": "d"}])
    env = make_env(ds)
    with pytest.raises(DatasetError, match=r"row 2, column 'question'"):
        env.get_examples("eval")


def test_mistyped_answer_and_task():
    with pytest.raises(DatasetError, match=r"row 0, column 'answer'"):
        make_env([{"question": "a", "answer": 5}])
    with pytest.raises(DatasetError, match=r"row 0, column 'task'"):
        make_env([{"question": "a", "task": 5}])


def test_info_json_string_is_parsed():
    env = make_env([{"question": "q", "answer": "A", "info": '{"pii_count": 2, "kind": "x"}'},
                    {"question": "q2", "answer": "B", "info": {"pii_count": 1}},
                    {"question": "q3", "answer": "C", "info": ""}])
    exs = env.get_examples("eval")
    assert exs[0].info == {"pii_count": 2, "kind": "x"}
    assert exs[1].info == {"pii_count": 1}
    assert exs[2].info == {}


def test_bad_json_info():
    with pytest.raises(DatasetError) as e:
        make_env([{"question": "q", "info": "{not json"}])
    assert "'info'" in str(e.value) and "row 0" in str(e.value) and "JSON" in str(e.value)
    with pytest.raises(DatasetError, match="'info'"):
        make_env([{"question": "q", "info": "[1, 2]"}])


def test_prompt_chat_column_and_system_prompt():
    rows = [{"prompt": [{"role": "user", "content": "hi"}], "answer": "A"},
            {"prompt": [{"role": "system", "content": "own"}, {"role": "user", "content": "yo"}], "answer": "B"}]
    env = make_env(rows, system_prompt="SYS")
    e0, e1 = env.get_examples("eval")
    assert e0.prompt == ({"role": "system", "content": "SYS"}, {"role": "user", "content": "hi"})
    assert e1.prompt == ({"role": "system", "content": "own"}, {"role": "user", "content": "yo"})
    assert (e0.id, e1.id) == (0, 1)
    with pytest.raises(DatasetError, match="'prompt'"):
        make_env([{"prompt": "just text"}])
    with pytest.raises(DatasetError, match="message 0"):
        make_env([{"prompt": [{"role": "user"}]}])


def test_question_with_system_prompt_and_few_shot():
    shots = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "<answer>X</answer>"}]
    env = make_env([{"question": "a", "answer": "A"}], system_prompt="SYS", few_shot=shots)
    (ex,) = env.get_examples("eval")
    assert [m["role"] for m in ex.prompt] == ["system", "user", "assistant", "user"]
    assert ex.prompt[-1]["content"] == "a"
    assert ex.task == "default"


def test_get_examples_limit_and_split_fallback():
    env = make_env()
    assert [e.answer for e in env.get_examples("eval", 2)] == ["A", "B"]
    assert len(env.get_examples("train")) == 3  # no train split: falls back to eval
    with pytest.raises(ConfigError):
        env.get_examples("test")
    with pytest.raises(ConfigError):
        verity.SingleTurnEnv()


# ---------------------------------------------------------------- evaluate with a fake sampler
def test_evaluate_exact_rewards():
    env = make_env()
    sampler = FakeSampler("<answer>\nA\n</answer>")
    res = env.evaluate(sampler, num_examples=3, rollouts_per_example=2, sampling_args={"max_tokens": 7})
    assert len(res.records) == 6
    assert [(r["example_id"], r["rollout_idx"]) for r in res.records] == [
        (0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert [r["reward"] for r in res.records] == pytest.approx([1.1, 1.1, 0.1, 0.1, 0.1, 0.1])
    assert res.records[0]["scores"] == {"exact_match": 1.0, "format_reward_func": 1.0}
    assert res.records[0]["completion"] == [{"role": "assistant", "content": "<answer>\nA\n</answer>"}]
    assert res.metrics["reward"] == pytest.approx(1.3 / 3)
    assert res.metrics["exact_match"] == pytest.approx(1 / 3)
    assert res.metrics["format_reward_func"] == pytest.approx(1.0)
    assert res.summary["errors"] == 0
    assert sampler.num_prompts == 6
    assert sampler.args[0].max_tokens == 7
    assert res.results_dir is None


def test_evaluate_per_prompt_answers():
    env = make_env()
    sampler = FakeSampler(fn=lambda p: f"<answer>{p[-1]['content'].upper()}</answer>")
    res = env.evaluate(sampler, num_examples=-1, rollouts_per_example=1)
    assert [r["reward"] for r in res.records] == pytest.approx([1.1, 1.1, 1.1])


def test_evaluate_inside_running_event_loop():
    env = make_env()
    sampler = FakeSampler("<answer>B</answer>")

    async def notebook_cell():
        asyncio.get_running_loop()  # like Jupyter: a loop is already running
        return env.evaluate(sampler, num_examples=2, rollouts_per_example=1)

    res = asyncio.run(notebook_cell())
    assert [r["reward"] for r in res.records] == pytest.approx([0.1, 1.1])


def test_generation_errors_and_reward_errors_are_counted():
    parser = verity.XMLParser(["answer"])

    def broken(info):
        return info["missing"]

    env = verity.SingleTurnEnv(eval_dataset=[{"question": "a", "answer": "A"}], parser=parser,
                               rubric=verity.Rubric([exact_match, broken], parser=parser))

    class ErrSampler(FakeSampler):
        async def generate(self, prompts, args):
            return [Completion(text="", finish_reason="error", error="HTTP 500")]

    res = env.evaluate(ErrSampler(), num_examples=1, rollouts_per_example=1)
    r = res.records[0]
    assert r["error"] == "HTTP 500" and r["reward"] == 0.0 and r["finish_reason"] == "error"
    assert res.summary["generation_errors"] == 1
    res = env.evaluate(FakeSampler("<answer>A</answer>"), num_examples=1, rollouts_per_example=1)
    r = res.records[0]
    assert r["reward"] == 1.0 and r["scores"] == {"exact_match": 1.0, "broken": 0.0}
    assert r["reward_errors"] == {"broken": "KeyError: 'missing'"}
    assert res.summary["reward_errors"] == {"broken": 1} and res.summary["errors"] == 1


def test_env_without_rubric_is_an_error():
    env = verity.SingleTurnEnv(eval_dataset=[{"question": "a"}])
    with pytest.raises(ConfigError, match="no rubric"):
        env.evaluate(FakeSampler(), num_examples=1, rollouts_per_example=1)


# ---------------------------------------------------------------- load_environment
def test_load_builtin_pii_masking():
    env = load_environment("pii-masking", num_rows=200)
    assert env.env_id == "pii-masking" and env.env_args == {"num_rows": 200}
    exs = env.get_examples("eval")
    assert len(exs) == 40  # 20% of 200
    assert len(env.get_examples("train")) == 160
    assert exs[0].prompt[0]["role"] == "system"
    assert exs[0].task == "privacy_masking"
    assert isinstance(exs[0].info["pii_count"], int)
    assert env.rubric.func_names == ["exact_match_reward", "pii_count_reward", "format_reward_func"]
    assert env.rubric.weights == [1.0, 0.5, 0.1]
    assert "pii-masking" in list_environments()


def test_load_builtin_with_underscore_name():
    env = load_environment("pii_masking", num_rows=20, num_eval_examples=5)
    assert len(env.get_examples("eval")) == 5


ENV_SOURCE = textwrap.dedent('''
    import verity

    def load_environment(n: int = 3, word: str = "x"):
        parser = verity.XMLParser(["answer"])

        def right(completion, answer):
            return float(parser.parse_answer(completion) == answer)

        rows = [{"question": f"{word}{i}", "answer": f"{word.upper()}{i}"} for i in range(n)]
        return verity.SingleTurnEnv(eval_dataset=rows, parser=parser, rubric=verity.Rubric([right]))
''')


def test_load_from_py_file(tmp_path):
    path = tmp_path / "file_env.py"
    path.write_text(ENV_SOURCE)
    env = load_environment(str(path), n=2, word="w")
    assert [e.answer for e in env.get_examples("eval")] == ["W0", "W1"]
    res = env.evaluate(FakeSampler("<answer>W1</answer>"), num_examples=2, rollouts_per_example=1)
    assert [r["reward"] for r in res.records] == [0.0, 1.0]
    with pytest.raises(EnvironmentNotFound, match="not found"):
        load_environment(str(tmp_path / "nope.py"))


def test_load_from_module_name(tmp_path, monkeypatch):
    (tmp_path / "verity_test_mod_env.py").write_text(ENV_SOURCE)
    (tmp_path / "verity_test_no_loader.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    env = load_environment("verity_test_mod_env", n=4)
    assert len(env.get_examples("eval")) == 4
    env = load_environment("verity-test-mod-env")  # dashes map to underscores
    assert len(env.get_examples("eval")) == 3
    with pytest.raises(EnvironmentNotFound, match="load_environment"):
        load_environment("verity_test_no_loader")


def test_unknown_env_id():
    with pytest.raises(EnvironmentNotFound, match="no-such-env-xyz"):
        load_environment("no-such-env-xyz")


def test_bad_kwarg_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="num_rowz"):
        load_environment("pii-masking", num_rowz=10)
    path = tmp_path / "kw_env.py"
    path.write_text(ENV_SOURCE)
    with pytest.raises(ConfigError, match="colour"):
        load_environment(str(path), colour="red")


def test_loader_returning_non_env(tmp_path):
    path = tmp_path / "not_env.py"
    path.write_text("def load_environment():\n    return 42\n")
    with pytest.raises(ConfigError, match="not an Environment"):
        load_environment(str(path))


# ---------------------------------------------------------------- pii-masking rubric
ANSWER = "Hi [PII], call [PII]."


@pytest.mark.parametrize("text, exact, count, fmt", [
    ("<masked_output>\nHi [PII], call [PII].\n</masked_output>", 1.0, 1.0, 1.0),
    ("<masked_output>  Hi [PII], call [PII].  </masked_output>", 1.0, 1.0, 1.0),   # padding is not content
    ("Sure! <masked_output>\nHi [PII], call [PII].\n</masked_output>", 1.0, 1.0, 0.8),
    ("<masked_output>\nHello [PII], call [PII].\n</masked_output>", 0.0, 1.0, 1.0),  # wrong text, right count
    ("<masked_output>\nHi [PII], call 555.\n</masked_output>", 0.0, 0.0, 1.0),       # one PII left
    ("Hi [PII], call [PII].", 0.0, 0.0, 0.2),                       # no tags: verifiers' constant 0.2
])
def test_pii_masking_rubric(text, exact, count, fmt):
    from verity.envs.pii_masking import exact_match_reward, parser, pii_count_reward

    rubric = verity.Rubric([exact_match_reward, pii_count_reward, parser.get_format_reward_func()],
                           [1.0, 0.5, 0.1], parser=parser)
    completion = [{"role": "assistant", "content": text}]
    s = asyncio.run(rubric.score(prompt=[], completion=completion, answer=ANSWER, info={"pii_count": 2}))
    assert s.scores == pytest.approx({"exact_match_reward": exact, "pii_count_reward": count,
                                      "format_reward_func": fmt})
    assert s.reward == pytest.approx(1.0 * exact + 0.5 * count + 0.1 * fmt)
    assert s.errors == {}


def test_pii_masking_env_scores_reference_answer():
    env = load_environment("pii-masking", num_rows=50, num_eval_examples=4)
    answers = {tuple(m["content"] for m in e.prompt): e.answer for e in env.get_examples("eval")}
    sampler = FakeSampler(fn=lambda p: f"<masked_output>\n{answers[tuple(m['content'] for m in p)]}\n</masked_output>")
    res = env.evaluate(sampler, num_examples=4, rollouts_per_example=1)
    assert res.metrics == pytest.approx({"reward": 1.6, "exact_match_reward": 1.0, "pii_count_reward": 1.0,
                                         "format_reward_func": 1.0})


# ---------------------------------------------------------------- results files and resume
def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_results_written_incrementally_and_resume(tmp_path):
    env = make_env()
    out = tmp_path / "run"
    crashing = FakeSampler(fail_on_call=2)
    with pytest.raises(RuntimeError, match="sampler crashed"):
        env.evaluate(crashing, num_examples=3, rollouts_per_example=2, out_dir=out, chunk_size=2)
    lines = read_lines(out / "results.jsonl")
    assert [(r["example_id"], r["rollout_idx"]) for r in lines] == [(0, 0), (0, 1)]  # first chunk kept
    assert json.loads((out / "metadata.json").read_text())["status"] == "running"
    for key in ("example_id", "rollout_idx", "prompt", "completion", "answer", "info", "task", "scores",
                "reward", "reward_errors", "completion_tokens", "finish_reason", "latency_s", "error"):
        assert key in lines[0]

    # without --resume an existing results file is refused
    with pytest.raises(ConfigError, match="resume"):
        env.evaluate(FakeSampler(), num_examples=3, rollouts_per_example=2, out_dir=out)

    sampler = FakeSampler()
    res = env.evaluate(sampler, num_examples=3, rollouts_per_example=2, out_dir=out, resume=True, chunk_size=2)
    assert sampler.num_prompts == 4  # only the unfinished rollouts
    assert sampler.calls == 2
    assert len(res.records) == 6
    lines = read_lines(out / "results.jsonl")
    assert sorted((r["example_id"], r["rollout_idx"]) for r in lines) == [
        (0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["status"] == "done" and meta["model"] == "fake-model"
    assert meta["num_examples"] == 3 and meta["rollouts_per_example"] == 2
    assert meta["averages"]["reward"] == pytest.approx(1.3 / 3)

    # a finished run resumed again generates nothing
    again = FakeSampler()
    res = env.evaluate(again, num_examples=3, rollouts_per_example=2, out_dir=out, resume=True)
    assert again.num_prompts == 0 and len(res.records) == 6


def test_resume_tolerates_torn_last_line(tmp_path):
    env = make_env()
    out = tmp_path / "run"
    env.evaluate(FakeSampler(), num_examples=2, rollouts_per_example=1, out_dir=out)
    path = out / "results.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 2
    path.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # killed mid-write
    sampler = FakeSampler()
    res = env.evaluate(sampler, num_examples=2, rollouts_per_example=1, out_dir=out, resume=True)
    assert sampler.num_prompts == 1  # only the torn rollout is redone
    assert len(res.records) == 2
    recs = read_lines(path)  # every line parses again
    assert [(r["example_id"], r["rollout_idx"]) for r in recs] == [(0, 0), (1, 0)]
