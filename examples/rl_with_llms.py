# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Reinforcement learning with LLMs, end to end, with verity
#
# This notebook builds an RL environment for a real task (masking personal data), evaluates a small
# language model in it, trains that model with RL, and compares it before and after — offline, on a
# laptop CPU, in one sitting (the last cell prints how long this run took). Every number you see is
# printed by the cells that produced it.
#
# The model is `verity-tiny`, a 6.2M-parameter model bundled with verity (see the README for how it
# was built). It is far too small to be useful on its own, and that is the point: it trains on a
# laptop CPU, and the same code trains a larger model on a GPU machine.
#
# Run it with `jupyter lab examples/rl_with_llms.ipynb` after `pip install -e ".[dev]" jupyterlab`.
# Set `VERITY_NOTEBOOK_SMALL=1` for a smoke run of a few steps (what CI does); its numbers mean little.

# %%
import os
import time
import warnings
from pathlib import Path

# tqdm (used by `datasets`) asks for ipywidgets in Jupyter; its plain progress bars are fine here
warnings.filterwarnings("ignore", message="IProgress not found")

SMALL = os.environ.get("VERITY_NOTEBOOK_SMALL", "") not in ("", "0")
# The demo's settings (`verity demo`): 100 RL steps × 16 prompts × 8 rollouts, full fine-tune,
# lr 1e-4, Dr. GRPO loss; base vs trained on 200 held-out examples at temperature 1.0.
STEPS = 3 if SMALL else 100
GROUPS_PER_BATCH = 4 if SMALL else 16
GROUP_SIZE = 4 if SMALL else 8
EVAL_EXAMPLES = 12 if SMALL else 200
MAX_TOKENS = 48 if SMALL else 160
SEED = 0
OUT = Path(os.environ.get("VERITY_NOTEBOOK_OUT") or f"outputs/notebook/{time.strftime('%Y%m%d-%H%M%S')}")
T0 = time.time()
print(f"{'SMALL' if SMALL else 'full'} run: {STEPS} steps × {GROUPS_PER_BATCH} prompts × {GROUP_SIZE} rollouts, "
      f"{EVAL_EXAMPLES} held-out examples; outputs in {OUT}")

# %% [markdown]
# ## 1. Where RL fits: three levers of post-training
#
# A pretrained model predicts text. Three levers turn it into a model that does a job:
#
# - **Supervised fine-tuning (SFT)** — show it demonstrations and train it to imitate them
#   (cross-entropy on the answer tokens). Cheap and stable, but the model can only be as good as
#   the demonstrations, and it learns their mistakes too.
# - **Preference training** (RLHF with a learned reward model, or DPO directly on pairs) — show it
#   two answers and which one people preferred. Good for qualities that are easy to judge and hard
#   to write down: tone, helpfulness, harmlessness.
# - **RL with verifiable rewards (RLVR)** — let the model try, score each attempt with a program
#   (is the answer right? does the code pass the tests? is the output well formed?), and make the
#   attempts that scored well more likely. No demonstrations and no human labels are needed, only
#   a checker; the model is trained on its *own* outputs, so it learns from its own mistakes.
#
# RLVR does not teach a skill from nothing: it sharpens choices the model already makes some of the
# time. That is why it usually comes after SFT, and why `verity-tiny` was built (by SFT on an
# incomplete labeller) to mask names and emails only *sometimes*: there is something for RL to find.
#
# **GRPO** (group relative policy optimisation) is the RL algorithm used here. For each prompt
# $q$, sample a *group* of $G$ answers $o_1,\dots,o_G$ from the current model and score them,
# $r_1,\dots,r_G$. Each answer's advantage is how much better it did than its own group,
# $A_i = r_i - \operatorname{mean}(r_1,\dots,r_G)$ (GRPO also divides by the group's standard
# deviation; Dr. GRPO, used here, does not). Then push up the log-probability of every token of
# the better-than-average answers and push down the others, with PPO's clipping so that one step
# cannot move the policy far:
#
# $$\mathcal{L}(\theta) = -\frac{1}{G\,L}\sum_{i=1}^{G}\sum_{t=1}^{|o_i|}
#   \min\!\Big(\rho_{i,t}A_i,\ \operatorname{clip}(\rho_{i,t},1-\varepsilon,1+\varepsilon_{\text{high}})A_i\Big),
#   \qquad \rho_{i,t}=\frac{\pi_\theta(o_{i,t}\mid q,o_{i,<t})}{\pi_{\text{old}}(o_{i,t}\mid q,o_{i,<t})}$$
#
# where $L$ is the maximum completion length (Dr. GRPO's constant normaliser; GRPO divides by each
# answer's own length instead). The group mean plays the role of PPO's value network, so there is
# no critic to train: one model, a sampler, and a reward function.

# %% [markdown]
# ## 2. Build the PII-masking environment, step by step
#
# An environment is three things: a **dataset** of prompts (with reference answers), a **parser**
# that pulls the answer out of the model's text, and a **rubric** of reward functions. verity ships
# this one as `pii-masking`; here we rebuild it piece by piece from the same parts, using the
# verifiers-compatible API (`import verity as vf` runs verifiers 0.1.x code).
#
# ### The data
# Rows come from a deterministic generator (offline; the schema of the public
# `AdamLucek/open-pii-masking-en-us-30k` dataset): a text, the same text with every piece of personal
# data replaced by `[PII]`, and the number of `[PII]` tokens.

# %%
import verity as vf
from verity.envs.pii_masking import SYSTEM_PROMPT
from verity.envs.pii_masking.generator import generate_rows

rows = generate_rows(30_000, seed=42)
for r in rows[:3]:
    print("TEXT  ", r["question"])
    print("ANSWER", r["answer"])
    print("INFO  ", r["info"], "\n")
print(len(rows), "rows")

# %% [markdown]
# ### The system prompt
# The model sees this before every text. It states the task and the answer format, with two
# worked examples.

# %%
print(SYSTEM_PROMPT)

# %% [markdown]
# ### The parser
# `XMLParser` reads fields out of XML-style tags. `parse_answer` takes the answer field from the
# model's last message (`None` when the tags are missing); `get_format_reward_func` scores how
# well the message follows the format, from 0 to 1.

# %%
parser = vf.XMLParser(["masked_output"], answer_field="masked_output")

good = [{"role": "assistant", "content": "<masked_output>\nCall [PII] at [PII] about order 42.\n</masked_output>"}]
bad = [{"role": "assistant", "content": "Sure! Call Laura Chen at 555-201-7733 about order 42."}]
format_reward = parser.get_format_reward_func()
for name, c in (("good", good), ("bad", bad)):
    print(f"{name}: parse_answer -> {parser.parse_answer(c)!r}, format_reward -> {format_reward(c)}")

# %% [markdown]
# ### The reward functions
# A reward function is a plain Python function. It declares, by name, what it needs among
# `prompt, completion, answer, info, task, state, parser`, and returns a float.
#
# - **exact match** (weight 1.0): the masked text equals the reference exactly;
# - **`[PII]` count** (weight 0.5): the answer has as many `[PII]` as the reference — partial credit
#   that says "you found the right number of things", even if the copy is not perfect;
# - **format** (weight 0.1): the answer is inside the tags.
#
# Try each on a hand-written good answer, an under-masked one (a name left in: the README's error
# analysis finds too few `[PII]` the most common mistake of `verity-tiny`), and an answer without tags.

# %%
import re


def exact_match_reward(completion, answer) -> float:
    got = parser.parse_answer(completion)
    return float(got is not None and got.strip() == answer.strip())


def pii_count_reward(completion, info) -> float:
    got = parser.parse_answer(completion)
    return 0.0 if got is None else float(got.count("[PII]") == int(info["pii_count"]))


def tagged(text):
    return [{"role": "assistant", "content": f"<masked_output>\n{text}\n</masked_output>"}]


def leave_unmasked(row, which):
    """The reference answer with its PII number ``which`` left as it was in the text."""
    pii = re.fullmatch(re.escape(row["answer"]).replace(re.escape("[PII]"), "(.+?)"), row["question"]).groups()
    parts = row["answer"].split("[PII]")
    fills = [p if i == which else "[PII]" for i, p in enumerate(pii)]
    return "".join(part + fill for part, fill in zip(parts, fills)) + parts[-1]


row = rows[2]
candidates = {
    "good": tagged(row["answer"]),
    "under-masked": tagged(leave_unmasked(row, 1)),
    "no tags": [{"role": "assistant", "content": row["answer"]}],
}
print("reference:   ", row["answer"])
print("under-masked:", leave_unmasked(row, 1), "\n")
for name, c in candidates.items():
    print(f"{name:13s} exact={exact_match_reward(c, row['answer'])} count={pii_count_reward(c, row['info'])} "
          f"format={format_reward(c)}")

# %% [markdown]
# ### The rubric
# `Rubric` combines the functions with weights 1.0 / 0.5 / 0.1 into one reward per answer and keeps
# each function's score for the tables (a weight of 0 would make a function a logged metric only).
# Reward functions may be `async` (a judge model behind an API, a sandbox), so `Rubric.score` is a
# coroutine; a notebook can `await` it directly.

# %%
rubric = vf.Rubric([exact_match_reward, pii_count_reward, format_reward], weights=[1.0, 0.5, 0.1], parser=parser)
for name, c in candidates.items():
    s = await rubric.score(prompt=[], completion=c, answer=row["answer"], info=row["info"])  # noqa: F704
    print(f"{name:13s} reward={s.reward:.2f}  {dict(s.scores)}")

# %% [markdown]
# ### The environment
# `SingleTurnEnv` puts it together: one prompt (system prompt + the text), one answer, scored by the
# rubric. We hold out 20% of the rows for evaluation, shuffled with the same seed as the shipped
# `pii-masking` environment, so the environment built here is the shipped one — the cell checks it.

# %%
import random

from datasets import Dataset

order = list(range(len(rows)))
random.Random(42).shuffle(order)
n_eval = len(rows) // 5
env = vf.SingleTurnEnv(
    dataset=Dataset.from_list([rows[i] for i in order[n_eval:]]),
    eval_dataset=Dataset.from_list([rows[i] for i in order[:n_eval]]),
    system_prompt=SYSTEM_PROMPT, parser=parser, rubric=rubric,
)
shipped = vf.load_environment("pii-masking")
for split in ("train", "eval"):
    assert env.get_examples(split) == shipped.get_examples(split), split
print(f"{len(env.get_examples('train'))} training and {len(env.get_examples('eval'))} held-out examples; "
      "same rows, prompts and order as vf.load_environment('pii-masking')")
print(env.get_examples("eval", 1)[0].prompt[-1])

# %% [markdown]
# ## 3. Evaluate the starter model
#
# `env.evaluate(model, …)` samples `rollouts_per_example` answers for each of the first
# `num_examples` held-out prompts and scores them. `model` is a local model directory, a hub id,
# `"verity-tiny"`, or an OpenAI-compatible client (next cell). Results are written as they come
# to `out_dir/results.jsonl`, one line per answer.

# %%
from IPython.display import HTML, Image, Markdown, display

from verity.notebook import side_by_side

SAMPLING = {"temperature": 1.0, "max_tokens": MAX_TOKENS}
t = time.time()
base = env.evaluate("verity-tiny", num_examples=EVAL_EXAMPLES, rollouts_per_example=1, sampling_args=SAMPLING,
                    seed=SEED, out_dir=OUT / "base-eval")
print(f"{len(base.records)} answers in {time.time() - t:.0f} s")


def metrics_table(summaries: dict) -> str:
    names = list(next(iter(summaries.values()))["metrics"])
    lines = ["| metric | " + " | ".join(summaries) + " |", "|---|" + "---:|" * len(summaries)]
    lines += [f"| {n} | " + " | ".join(f"{s['metrics'][n]['mean']:.3f}" for s in summaries.values()) + " |"
              for n in names]
    return "\n".join(lines)


display(Markdown(metrics_table({"verity-tiny": base.summary})))

# %% [markdown]
# Mean reward per function over the held-out answers: the format reward says how often the model
# follows the answer format, the exact-match reward how often its masking is exactly right. The
# table below shows a few answers next to the reference: text that should not be there is struck
# through in red, text that is missing is in green.

# %%
wrong = [r for r in base.records if r["scores"]["exact_match_reward"] == 0][:4]
right = [r for r in base.records if r["scores"]["exact_match_reward"] == 1][:1]
display(HTML(side_by_side({"verity-tiny": wrong + right}, parser.parse_answer)))

# %% [markdown]
# ### Any OpenAI-compatible endpoint
# The same call evaluates a model behind an API — OpenAI, vLLM, or `verity serve` — through an
# `openai` client. Set `VERITY_NOTEBOOK_BASE_URL` (and `VERITY_NOTEBOOK_API_MODEL`, and the key in
# the variable named by `VERITY_NOTEBOOK_API_KEY_VAR`, default `OPENAI_API_KEY`) before starting
# the notebook; without them this cell is skipped, and the comparison in section 5 leaves it out.

# %%
BASE_URL = os.environ.get("VERITY_NOTEBOOK_BASE_URL")
API_MODEL = os.environ.get("VERITY_NOTEBOOK_API_MODEL", "gpt-4.1-mini")
API_KEY_VAR = os.environ.get("VERITY_NOTEBOOK_API_KEY_VAR", "OPENAI_API_KEY")
if BASE_URL:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=BASE_URL, api_key=os.environ.get(API_KEY_VAR) or "none")
    api = env.evaluate(client, model_name=API_MODEL, num_examples=EVAL_EXAMPLES, rollouts_per_example=1,
                       sampling_args=SAMPLING, seed=SEED)
    display(Markdown(metrics_table({"verity-tiny": base.summary, API_MODEL: api.summary})))
else:
    print("no endpoint configured (VERITY_NOTEBOOK_BASE_URL is unset): skipped")

# %% [markdown]
# ## 4. Train with RL
#
# `RLTrainer` runs GRPO in the environment. With the default settings each step takes 16 training
# prompts, samples 8 answers for each at temperature 1.0, scores them with the rubric, computes the
# group-relative advantages, and takes one optimiser step on the Dr. GRPO loss. Groups whose answers
# all scored the same carry no signal and are skipped. These are the settings of `verity demo` (full
# fine-tune: the model is small; on a 7B model you would set `lora_rank`). Checkpoints,
# `metrics.jsonl` and `reward_curve.png` go to `OUT/run`. The bar and the curves below update as
# training runs.

# %%
from verity.notebook import LiveTraining

rl_config = vf.RLConfig(
    env="pii-masking", model="verity-tiny", steps=STEPS, groups_per_batch=GROUPS_PER_BATCH, group_size=GROUP_SIZE,
    lr=1e-4, loss="dr_grpo", scale_rewards="none", lora_rank=0, max_tokens=MAX_TOKENS, temperature=1.0,
    save_every=max(1, STEPS // 4), eval_every=0, eval_examples=0, seed=SEED, output_dir=str(OUT / "run"),
)
trainer = vf.RLTrainer(env, "verity-tiny", rl_config)
t = time.time()
last = trainer.train(on_step=LiveTraining(STEPS, plot_every=5), progress=False)
train_minutes = (time.time() - t) / 60
print(f"{STEPS} steps in {train_minutes:.1f} min; training reward at the last step {last['reward/mean']:.3f}")

# %% [markdown]
# The training reward is measured on new prompts every step, so it is noisy (the light line); the
# dark line is its moving average. Next, save the trained weights as a plain Hugging Face model
# directory that anything can load (for a LoRA run, `verity merge OUT/run -o OUT/trained` folds the
# adapter into the base model first).

# %%
trained_dir = OUT / "trained"
trainer.model.save_pretrained(trained_dir)
trainer.tokenizer.save_pretrained(trained_dir)
del trainer  # free the training copy before evaluating
print(sorted(p.name for p in trained_dir.iterdir()))

# %% [markdown]
# ## 5. Base vs trained
#
# `compare` evaluates every model on the same held-out examples with the same sampling seeds, and
# reports each mean with its 95% bootstrap confidence interval, the paired difference to the first
# model with its interval, and per-example wins, ties and losses.

# %%
from verity.eval.compare import CompareConfig, compare, markdown_table

models, urls, keys = ["verity-tiny", str(trained_dir)], ["-", "-"], ["-", "-"]
if BASE_URL:
    models, urls, keys = [*models, API_MODEL], [*urls, BASE_URL], [*keys, API_KEY_VAR]
cmp_config = CompareConfig(env="pii-masking", models=models, base_urls=urls, api_key_vars=keys,
                           num_examples=EVAL_EXAMPLES, rollouts_per_example=1, temperature=1.0,
                           max_tokens=MAX_TOKENS, seed=SEED)
t = time.time()
comparison = compare(cmp_config, OUT / "compare", show_progress=False)
print(f"evaluated {len(models)} models in {time.time() - t:.0f} s")
display(Markdown(markdown_table(comparison)))
display(Image(filename=str(OUT / "compare" / "comparison.png")))

# %% [markdown]
# The base column is the evaluation of section 3 again: same examples, same seeds, same numbers.
# A few held-out texts the base model got wrong and the trained model now gets exactly right:

# %%
import json


def load_records(results_dir):
    return [json.loads(line) for line in (Path(results_dir) / "results.jsonl").read_text().splitlines()]


base_recs, trained_recs = (load_records(m["results_dir"]) for m in comparison.models[:2])
assert abs(comparison.models[0]["metrics"]["reward"]["mean"] - base.summary["metrics"]["reward"]["mean"]) < 1e-9
fixed_ids = {r["example_id"] for r in trained_recs if r["scores"]["exact_match_reward"] == 1} - \
    {r["example_id"] for r in base_recs if r["scores"]["exact_match_reward"] == 1}
fixed = [r for r in base_recs if r["example_id"] in fixed_ids][:4]
print(f"{len(fixed_ids)} of {len(base_recs)} held-out examples are exact only after training")
display(HTML(side_by_side({"verity-tiny": fixed, "trained": trained_recs}, parser.parse_answer)))

# %%
b, tr = (m["metrics"]["reward"]["mean"] for m in comparison.models[:2])
print(f"held-out total reward: base {b:.3f} -> trained {tr:.3f} ({tr - b:+.3f}) on {EVAL_EXAMPLES} examples; "
      f"RL {train_minutes:.1f} min; notebook so far {(time.time() - T0) / 60:.1f} min")

# %% [markdown]
# ## 6. Where to go next
#
# ### Your own environment, in 20 lines
# A new task is a dataset, a parser and reward functions. This one asks for sums, gives full credit
# for the right number and partial credit for a near miss (`close`), and reuses the answer format of
# the bundled `arithmetic` environment. `verity-tiny` learned that format but not arithmetic, so
# expect the format reward and a little partial credit, and few right answers: an environment where
# RL has little to find until the model gets some sums right. Put the function in a file and
# `verity eval my_env.py -m verity-tiny` runs it from the command line too; `verity init my-env`
# scaffolds an installable package, and `vf.RLTrainer(sums, model, config)` trains in it.

# %%
def load_sums_environment(num_examples: int = 200, seed: int = 0) -> vf.SingleTurnEnv:
    rng = random.Random(seed)
    pairs = [(rng.randint(0, 50), rng.randint(0, 50)) for _ in range(num_examples)]
    data = Dataset.from_list([{"question": f"{a} + {b}", "answer": str(a + b)} for a, b in pairs])
    sums_parser = vf.XMLParser(["answer"], answer_field="answer")

    def correct(completion, answer) -> float:
        return float((sums_parser.parse_answer(completion) or "").strip() == answer)

    def close(completion, answer) -> float:  # 1 / (1 + |error|): a near miss still earns something
        got = (sums_parser.parse_answer(completion) or "").strip()
        return 1 / (1 + abs(int(got) - int(answer))) if got.lstrip("-").isdigit() else 0.0

    rubric = vf.Rubric([correct, close, sums_parser.get_format_reward_func()], weights=[1.0, 0.5, 0.1],
                       parser=sums_parser)
    return vf.SingleTurnEnv(
        eval_dataset=data, parser=sums_parser, rubric=rubric,
        system_prompt="Compute the value of the expression. Answer with the number inside <answer>...</answer>.",
    )


sums = load_sums_environment()
res = sums.evaluate("verity-tiny", num_examples=10 if SMALL else 50, rollouts_per_example=2,
                    sampling_args={"temperature": 1.0, "max_tokens": 32})
display(Markdown(metrics_table({"verity-tiny": res.summary})))

# %% [markdown]
# ### Further
# - **Multi-turn and tool environments.** `SingleTurnEnv` is one prompt and one answer. An
#   environment whose `rollout` runs several turns — a game, a conversation with a simulated user,
#   a model that calls tools and reads their results — plugs into the same `evaluate` and
#   `RLTrainer`: every rollout still ends as scored `Rollout` records (see `verity/envs/base.py`).
# - **Preference training.** verity trains with SFT (`verity sft`, `vf.SFTTrainer`) and RL; it does
#   not implement DPO or reward-model training. TRL's `DPOTrainer` does, on the same Hugging Face
#   model directories that `verity merge` writes.
# - **Scaling out.** The trainer talks to a sampler and a learner through narrow interfaces.
#   `verity serve MODEL` is an OpenAI-compatible server with dynamic batching
#   ([docs/serve.md](../docs/serve.md)); `verity eval -b URL` and `verity compare -b URL` evaluate
#   anything behind such an endpoint, vLLM included. On a GPU machine the same notebook runs a
#   larger model: set `lora_rank`, raise `max_tokens`, and install a CUDA build of PyTorch.
# - **The command line.** Everything above has a command: `verity eval`, `verity train`,
#   `verity merge`, `verity compare`, `verity demo` (this notebook's sections 3–5 in one command).
#   See the [README](../README.md).

# %%
print(f"notebook ran in {(time.time() - T0) / 60:.1f} min")
