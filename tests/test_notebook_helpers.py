"""The Jupyter helpers of ``verity.notebook``: answers marked against the reference, the live
training display's progress bar and curves."""

from __future__ import annotations


def test_diff_html_marks_wrong_and_missing_text() -> None:
    from verity.notebook import diff_html

    out = diff_html("Dear Anna <b>, call [PII].", "Dear [PII] <b>, call [PII].")
    assert out.startswith("Dear ") and out.endswith(", call [PII].")
    assert 'line-through">Anna</span>' in out and '#c3f5c3">[PII]</span>' in out
    assert "&lt;b&gt;" in out and "<b>" not in out  # model text is escaped
    assert diff_html("same text", "same text") == "same text"
    assert "no parsable answer" in diff_html(None, "x")


def test_side_by_side_matches_records_by_example_and_rollout() -> None:
    from verity.notebook import side_by_side

    def rec(i, text, reward):
        return {"example_id": i, "rollout_idx": 0, "prompt": [{"role": "user", "content": f"Q{i}"}],
                "completion": text, "answer": "A [PII]", "reward": reward}

    html = side_by_side({"base": [rec(1, "A Bob", 0.1)], "trained": [rec(2, "zzz", 0.0), rec(1, "A [PII]", 1.6)]},
                        parse=lambda c: c)
    assert html.count("<tr>") == 2 and "<th>base</th><th>trained</th>" in html
    assert "Q1" in html and "Q2" not in html  # rows follow the first model's records
    assert "reward 0.10" in html and "reward 1.60" in html and 'line-through">Bob' in html


def test_progress_html_and_curve_figure() -> None:
    from verity.notebook import figure_png, progress_html
    from verity.train.plot import curve_figure

    html = progress_html(5, 20, 50.0, {"reward": 0.75})
    assert '<progress value="5" max="20"' in html and "reward 0.750" in html and "10.0 s/step" in html
    assert "2m30s left" in html
    rows = [{"step": s, "reward/mean": 0.1 * s, "reward/std": 0.0, "reward/acc": 0.05 * s} for s in (1, 2, 3)]
    fig = curve_figure(rows)
    assert [ax.get_title() for ax in fig.axes] == ["total reward", "acc"]
    assert figure_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"
