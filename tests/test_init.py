"""``verity init``: scaffold an environment package, install it, find it, evaluate in it."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
import tomllib

from verity.cli.init_cmd import scaffold
from verity.errors import ConfigError


def run(*cmd: str, cwd, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_scaffold_files(tmp_path):
    root = scaffold("my-env", tmp_path)
    assert root == tmp_path / "my-env"
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == {
        "pyproject.toml", "my_env.py", "README.md", "tests/test_my_env.py"}
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "my-env"
    assert "verity" in meta["project"]["dependencies"]
    assert meta["project"]["entry-points"]["verity.environments"] == {"my-env": "my_env:load_environment"}
    assert meta["build-system"]["build-backend"] == "setuptools.build_meta"
    assert "verity eval my-env" in (root / "README.md").read_text()


def test_scaffolded_module_works_in_process(tmp_path, monkeypatch):
    import verity

    root = scaffold("scaffold_inproc_env", tmp_path)
    monkeypatch.syspath_prepend(str(root))
    env = verity.load_environment("scaffold_inproc_env", num_examples=4)
    assert isinstance(env, verity.SingleTurnEnv)
    exs = env.get_examples("eval")
    assert len(exs) == 4 and exs[0].answer == exs[0].prompt[-1]["content"].upper()

    class Echo:
        name = "echo"

        async def generate(self, prompts, args):
            return [verity.Completion(text=f"<answer>\n{p[-1]['content'].upper()}\n</answer>") for p in prompts]

    res = env.evaluate(Echo(), num_examples=4, rollouts_per_example=1)
    assert res.metrics["reward"] == pytest.approx(1.1)


def test_refuses_existing_directory(tmp_path):
    scaffold("dup-env", tmp_path)
    marker = tmp_path / "dup-env" / "dup_env.py"
    marker.write_text("# mine\n")
    with pytest.raises(ConfigError, match="already exists"):
        scaffold("dup-env", tmp_path)
    assert marker.read_text() == "# mine\n"  # untouched


@pytest.mark.parametrize("name", ["bad name", "1env", "-env", "env-", "env.x", "a/b", "", "verity", "json"])
def test_invalid_names(tmp_path, name):
    with pytest.raises(ConfigError, match="invalid environment name"):
        scaffold(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cli_init_and_errors(tmp_path):
    p = run(sys.executable, "-m", "verity", "init", "cli-env", "-o", str(tmp_path), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "pip install -e" in p.stdout
    assert (tmp_path / "cli-env" / "cli_env.py").is_file()
    p = run(sys.executable, "-m", "verity", "init", "cli-env", "-o", str(tmp_path), cwd=tmp_path)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert p.stderr.strip().startswith("verity init: error:") and "already exists" in p.stderr
    p = run(sys.executable, "-m", "verity", "init", "bad name", cwd=tmp_path)
    assert p.returncode != 0 and "Traceback" not in p.stderr and "invalid environment name" in p.stderr


@pytest.fixture
def installed_env(tmp_path):
    """A scaffolded package pip-installed (editable, offline) into this venv; uninstalled afterwards."""
    name = f"vt-init-{uuid.uuid4().hex[:8]}"
    root = scaffold(name, tmp_path)
    try:
        p = run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                "--no-index", "-e", str(root), cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        yield name, root
    finally:
        run(sys.executable, "-m", "pip", "uninstall", "-y", "-q", name, cwd=tmp_path)


def test_init_install_list_eval_roundtrip(installed_env, tiny_model_dir, tmp_path):
    name, root = installed_env
    p = run(sys.executable, "-m", "verity", "envs", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    listed = {line.split()[0]: line for line in p.stdout.splitlines() if line.strip()}
    assert name in listed and "plugin" in listed[name]

    p = run(sys.executable, "-m", "verity", "eval", name, "-m", tiny_model_dir, "-n", "2", "-r", "1", "-t", "8",
            "--json", "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["env"] == name and out["num_examples"] == 2 and out["rollouts_per_example"] == 1
    assert set(out["metrics"]) == {"reward", "exact_match_reward", "format_reward_func"}
    assert out["errors"] == 0
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 2

    # the scaffolded package's own tests pass against the installed module
    p = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", cwd=root)
    assert p.returncode == 0, p.stdout + p.stderr
