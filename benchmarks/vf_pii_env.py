"""verity's ``pii-masking`` environment rebuilt with verifiers 0.1.x classes, for ``vf-eval``.

Same rows (verity's deterministic generator and split, via verity's own ``load_environment``
with the same arguments), same system prompt, same ``<masked_output>`` XML parser and the same
three weighted rewards (exact match 1.0, ``[PII]`` count 0.5, format 0.1), but the environment,
parser and rubric are ``verifiers.SingleTurnEnv`` / ``XMLParser`` / ``Rubric``, so ``vf-eval``
does all the client-side work itself.

    PYTHONPATH=. vf-eval benchmarks.vf_pii_env -b http://127.0.0.1:PORT/v1 -m NAME -n 100 -r 6 -c 64

Only the eval split is handed to verifiers (``vf-eval`` reads nothing else), which spares it
formatting the 24k training rows.
"""

from __future__ import annotations

from typing import Any

import verifiers as vf


def load_environment(**env_args: Any) -> vf.Environment:
    from verity.envs.pii_masking import SYSTEM_PROMPT
    from verity.envs.pii_masking import load_environment as verity_load

    data = verity_load(**env_args)  # the same rows and split `verity eval pii-masking -a ...` uses
    parser = vf.XMLParser(["masked_output"], answer_field="masked_output")

    def exact_match_reward(completion: Any, answer: str, **kwargs: Any) -> float:
        got = parser.parse_answer(completion)
        return float(got is not None and got.strip() == answer.strip())

    def pii_count_reward(completion: Any, info: dict, **kwargs: Any) -> float:
        got = parser.parse_answer(completion)
        if got is None:
            return 0.0
        return float(got.count("[PII]") == int(info["pii_count"]))

    rubric = vf.Rubric(funcs=[exact_match_reward, pii_count_reward, parser.get_format_reward_func()],
                       weights=[1.0, 0.5, 0.1], parser=parser)
    ds = data.eval_dataset  # generated rows come lazily (LazyRows): verifiers gets them as a datasets.Dataset
    return vf.SingleTurnEnv(eval_dataset=getattr(ds, "to_dataset", lambda: ds)(), system_prompt=SYSTEM_PROMPT,
                            parser=parser, rubric=rubric)
