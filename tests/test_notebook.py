"""The teaching notebook: executed top to bottom in a real Jupyter kernel with the small setting,
and kept in sync with its jupytext twin."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "rl_with_llms.ipynb"
SCRIPT = ROOT / "examples" / "rl_with_llms.py"


def _text(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o["text"])
        elif "data" in o:
            out.append(o["data"].get("text/markdown", "") or o["data"].get("text/plain", ""))
    return "".join(out)


def test_script_and_notebook_have_the_same_cells() -> None:
    jupytext = pytest.importorskip("jupytext")
    nb, py = jupytext.read(NOTEBOOK), jupytext.read(SCRIPT)
    assert [(c.cell_type, c.source) for c in nb.cells] == [(c.cell_type, c.source) for c in py.cells], \
        "examples/rl_with_llms.py and .ipynb differ: run `jupytext --sync examples/rl_with_llms.ipynb`"


@pytest.mark.slow
def test_notebook_executes_with_the_small_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("VERITY_NOTEBOOK_SMALL", "1")  # the kernel inherits this process's environment
    monkeypatch.setenv("VERITY_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.delenv("VERITY_NOTEBOOK_BASE_URL", raising=False)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert _text(code[0]).startswith("SMALL run:")
    assert any("held-out total reward: base" in _text(c) for c in code)
    assert (tmp_path / "out" / "compare" / "comparison.png").is_file()
    assert (tmp_path / "out" / "trained" / "config.json").is_file()
    assert len((tmp_path / "out" / "run" / "metrics.jsonl").read_text().splitlines()) == 3

