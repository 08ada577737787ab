"""An environment written for verifiers 0.1.x; the only change for verity is the import line.

The verifiers original is this file with ``import verity as vf`` replaced by
``import verifiers as vf`` (tests/test_verifiers_env.py builds both and compares them).
"""

from datasets import Dataset

import verity as vf


def load_environment(num_examples: int = 16, **kwargs):
    parser = vf.XMLParser(["reasoning", ("answer", "final")], answer_field="answer")
    system_prompt = f"Add the two numbers. Respond in the following format:\n{parser.get_format_str()}"
    rows = [{"question": f"What is {a} + {b}?", "answer": str(a + b), "info": {"a": a}, "task": "add"}
            for a in range(5) for b in range(5)][:num_examples]

    def correct_answer_reward_func(completion, answer, **kwargs) -> float:
        return 1.0 if parser.parse_answer(completion) == answer else 0.0

    rubric = vf.Rubric(
        funcs=[
            correct_answer_reward_func,
            lambda completion, **kwargs: 0.5 if "final" in str(completion) else 0.0,
            lambda completion, info, **kwargs: float(info.get("a", 0)) / 10,
            parser.get_format_reward_func(),
        ],
        weights=[1.0, 0.25, 0.0, 0.2],
        parser=parser,
    )
    reward_table = dict(zip(rubric.get_reward_func_names(), rubric.get_reward_weights(), strict=True))
    return vf.SingleTurnEnv(dataset=Dataset.from_list(rows), system_prompt=system_prompt, parser=parser,
                            rubric=rubric, reward_table=reward_table, **kwargs)
