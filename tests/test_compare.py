"""Tests for ``verity compare``: per-model -b/-k matched by position, the table (best per row in
bold), the written files, and an end-to-end run with one local-path model and one model served
by a real ``verity serve`` subprocess (API key required)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verity.cli.derive import build_config
from verity.cli.main import build_parser, main
from verity.errors import ConfigError
from verity.eval.compare import (
    CompareConfig,
    Comparison,
    attach_statistics,
    bar_chart,
    comparison_figure,
    markdown_table,
    model_labels,
    subdir_names,
    write_outputs,
)
from verity.eval.evaluate import summarize

KEY_VAR = "VERITY_COMPARE_TEST_KEY"


def _cfg(*argv: str) -> CompareConfig:
    parser, _ = build_parser()
    args = parser.parse_args(["compare", *argv])
    return build_config(CompareConfig, args, ["compare", *argv])


def _comparison() -> Comparison:
    def m(r, f, g):
        return {"reward": {"mean": r, "std": 0.1}, "fmt": {"mean": f, "std": 0.0},
                             "acc": {"mean": g, "std": 0.2}}
    return Comparison(env="toy", labels=["base", "trained", "other"], metric_names=["reward", "fmt", "acc"],
                      models=[{"model": "base", "metrics": m(0.25, 1.0, float("nan")), "errors": 0},
                              {"model": "trained", "metrics": m(0.75, 1.0, 0.5), "errors": 1},
                              {"model": "other", "metrics": m(0.5, 0.0, 0.25), "errors": 0}],
                      settings={"num_examples": 2, "rollouts_per_example": 3, "seed": 0})


def test_base_url_and_key_matched_to_models_by_position() -> None:
    cfg = _cfg("reverse-text", "-m", "a", "-m", "b", "-m", "c", "-b", "-", "-b", "http://127.0.0.1:1/v1",
               "-k", "", "-k", "MYKEY", "-n", "2", "-r", "1")
    cfg.validate()
    assert cfg.models == ["a", "b", "c"]
    assert [cfg.base_url(i) for i in range(3)] == [None, "http://127.0.0.1:1/v1", None]
    assert [cfg.api_key_var(i) for i in range(3)] == [None, "MYKEY", None]
    e = cfg.eval_config(1)
    assert (e.model, e.base_url, e.api_key_var, e.num_examples, e.rollouts_per_example) == \
        ("b", "http://127.0.0.1:1/v1", "MYKEY", 2, 1)


@pytest.mark.parametrize("argv, msg", [
    (["-m", "a"], "at least two"),
    (["-m", "a", "-m", "b", "-b", "-", "-b", "-", "-b", "http://x"], "-b given 3 times"),
    (["-m", "a", "-m", "b", "-k", "K"], "no -b endpoint"),
    (["-m", "a", "-m", "b", "-r", "0"], "-r 0"),
])
def test_bad_compare_flags(argv: list[str], msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        _cfg("reverse-text", *argv).validate()


def test_markdown_table_bolds_best_per_row() -> None:
    c = _comparison()
    assert c.best() == {"reward": ["trained"], "fmt": ["base", "trained"], "acc": ["trained"]}
    table = markdown_table(c)
    lines = table.strip().splitlines()
    assert lines[0] == "| metric | base | trained | other |"
    assert lines[2] == "| reward | 0.2500 ± 0.1000 | **0.7500 ± 0.1000** | 0.5000 ± 0.1000 |"
    assert lines[3] == "| fmt | **1.0000 ± 0.0000** | **1.0000 ± 0.0000** | 0.0000 ± 0.0000 |"
    assert "nan" in lines[4] and "**0.5000 ± 0.2000**" in lines[4]
    assert lines[5] == "| errors | 0 | 1 | 0 |"


def test_labels_and_subdirs_are_unique(tmp_path: Path) -> None:
    model_dir = tmp_path / "ckpt" / "step-10"
    model_dir.mkdir(parents=True)
    labels = model_labels([str(model_dir), "org/model", "org/model", "a|b"])
    assert labels == ["step-10", "org/model", "org/model#2", "a|b"]
    assert subdir_names(labels) == ["step-10", "org_model", "org_model_2", "a_b"]
    assert len(set(subdir_names(["x", "x", "x"]))) == 3


def test_writers(tmp_path: Path) -> None:
    c = _comparison()
    paths = write_outputs(c, tmp_path)
    assert Path(paths["chart"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = Path(paths["markdown"]).read_text()
    assert "**0.7500 ± 0.1000**" in md and md.startswith("# toy: base vs trained vs other")
    data = json.loads(Path(paths["json"]).read_text(), parse_constant=lambda s: pytest.fail(f"non-JSON {s}"))
    assert data["best"]["reward"] == ["trained"] and len(data["models"]) == 3
    assert data["models"][0]["metrics"]["acc"]["mean"] is None  # NaN is written as null
    bar_chart(c, tmp_path / "again.png")
    assert (tmp_path / "again.png").stat().st_size > 1000


def _records(rewards: list[list[float]]) -> list[dict]:
    """Eval records: one list of rollout rewards per example; 'acc' = reward > 1."""
    return [{"example_id": i, "rollout_idx": j, "reward": r, "scores": {"acc": float(r > 1)}}
            for i, rs in enumerate(rewards) for j, r in enumerate(rs)]


def _stats_comparison() -> tuple[Comparison, list[list[dict]]]:
    recs = [_records([[0.0, 0.0], [1.5, 1.5], [0.5, 0.0], [0.0, 0.5], [1.6, 0.0]]),
            _records([[1.5, 1.5], [1.5, 1.5], [0.0, 0.0], [1.6, 0.5], [1.6, 1.6]])]
    entries = [{"model": lab, "metrics": summarize(r, ["acc"])["metrics"], "errors": 0}
               for lab, r in zip(["base", "trained"], recs, strict=True)]
    attach_statistics(entries, recs, ["reward", "acc"], seed=0, resamples=2000)
    return Comparison(env="toy", labels=["base", "trained"], models=entries, metric_names=["reward", "acc"],
                      settings={"num_examples": 5, "rollouts_per_example": 2, "seed": 0}), recs


def test_comparison_statistics_table_and_json(tmp_path: Path) -> None:
    import numpy as np

    c, _ = _stats_comparison()
    base, trained = (m["metrics"]["reward"] for m in c.models)
    # reference: percentile bootstrap over the 5 per-example means, the same draws (seed 0) for both models
    idx = np.random.default_rng(0).integers(0, 5, size=(2000, 5))
    for m, per_example in ((base, [0.0, 1.5, 0.25, 0.25, 0.8]), (trained, [1.5, 1.5, 0.0, 1.05, 1.6])):
        lo, hi = np.percentile(np.array(per_example)[idx].mean(axis=1), [2.5, 97.5])
        assert m["mean"] == pytest.approx(np.mean(per_example))
        assert (m["ci_low"], m["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
        assert 0.0 <= m["ci_low"] <= m["mean"] <= m["ci_high"]
    d = np.array([1.5, 0.0, -0.25, 0.8, 0.8])  # trained − base per example
    vs = c.models[1]["vs_first"]["reward"]
    lo, hi = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
    assert vs["diff"] == pytest.approx(0.57) and (vs["ci_low"], vs["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
    assert (vs["wins"], vs["ties"], vs["losses"]) == (3, 1, 1)
    assert c.models[1]["vs_first"]["acc"] | {"ci_low": 0, "ci_high": 0} == \
        {"diff": pytest.approx(0.4), "ci_low": 0, "ci_high": 0, "wins": 3, "ties": 2, "losses": 0}
    assert "vs_first" not in c.models[0]
    lines = markdown_table(c).splitlines()
    assert lines[2] == (f"| reward | 0.5600 [{base['ci_low']:.3f}, {base['ci_high']:.3f}] | "
                        f"**1.1300 [{trained['ci_low']:.3f}, {trained['ci_high']:.3f}]** |")
    assert lines[6] == "| metric | trained − base | W / T / L |"
    assert lines[8] == f"| reward | +0.5700 [{vs['ci_low']:+.3f}, {vs['ci_high']:+.3f}] | 3 / 1 / 1 |"
    paths = write_outputs(c, tmp_path)
    data = json.loads(Path(paths["json"]).read_text())
    assert data["models"][1]["vs_first"]["reward"]["wins"] == 3
    assert "bootstrap confidence interval" in Path(paths["markdown"]).read_text()


def test_chart_draws_the_intervals() -> None:
    c, _ = _stats_comparison()
    fig = comparison_figure(c)
    means_ax, diff_ax = fig.axes
    for ax, key, rows in ((means_ax, "mean", [m["metrics"] for m in c.models]),
                          (diff_ax, "diff", [c.models[1]["vs_first"]])):
        bars = [b for b in ax.containers if hasattr(b, "errorbar")]
        assert len(bars) == len(rows)
        for container, metrics in zip(bars, rows, strict=True):
            segments = container.errorbar.lines[2][0].get_segments()  # one vertical whisker per metric
            for seg, name in zip(segments, c.metric_names, strict=True):
                v = metrics[name]
                assert sorted(y for _, y in seg) == pytest.approx([v["ci_low"], v["ci_high"]])
            heights = [r.get_height() for r in container.patches]
            assert heights == pytest.approx([metrics[n][key] for n in c.metric_names])
    # non-negative rewards: no whisker goes below zero on the means panel
    whiskers = [b.errorbar.lines[2][0] for b in means_ax.containers if hasattr(b, "errorbar")]
    assert min(y for w in whiskers for seg in w.get_segments() for _, y in seg) >= 0


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from verity.envs.pii_masking import tokenizer_corpus
    from verity.models.tokenizer import make_tiny_model

    return make_tiny_model(str(tmp_path_factory.mktemp("tiny")), tokenizer_corpus(), hidden_size=64,
                           max_position_embeddings=512)


def test_compare_local_and_served_model(tiny_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    from verity.serve.launch import ServerProcess

    out = tmp_path / "cmp"
    monkeypatch.setenv(KEY_VAR, "k-123")
    with ServerProcess(tiny_dir, "--served-model-name", "served-tiny", "--api-key-env", KEY_VAR,
                       env={KEY_VAR: "k-123", "OMP_NUM_THREADS": "1"}) as srv:
        with pytest.raises(SystemExit) as e:
            main(["compare", "reverse-text", "-m", tiny_dir, "-m", "served-tiny", "-b", "-", "-b", srv.base_url,
                  "-k", "-", "-k", KEY_VAR, "-n", "2", "-r", "2", "-t", "6", "-o", str(out), "--dtype", "fp32"])
        assert e.value.code == 0
        assert srv.alive()
    stdout = capsys.readouterr().out
    label = Path(tiny_dir).name
    assert f"| metric | {label} | served-tiny |" in stdout and "**" in stdout
    data = json.loads((out / "comparison.json").read_text())
    assert [m["label"] for m in data["models"]] == [label, "served-tiny"]
    assert data["models"][0]["base_url"] is None and data["models"][1]["base_url"] == srv.base_url
    assert data["metrics"][0] == "reward" and len(data["metrics"]) == 4  # reward + 3 reward functions
    assert data["settings"]["num_examples"] == 2
    for m in data["models"]:
        assert m["errors"] == 0 and set(m["metrics"]) == set(data["metrics"])
        rows = (Path(m["results_dir"]) / "results.jsonl").read_text().splitlines()
        assert len(rows) == 4
        assert json.loads((Path(m["results_dir"]) / "metadata.json").read_text())["status"] == "done"
    prompts = [[json.loads(r)["prompt"] for r in (Path(m["results_dir"]) / "results.jsonl").read_text().splitlines()]
               for m in data["models"]]
    assert prompts[0] == prompts[1]  # same examples, same order
    assert (out / "comparison.md").read_text().count("|") > 10
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
