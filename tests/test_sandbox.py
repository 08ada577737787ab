"""The sandbox contains hostile programs in every isolation layer that works here, concurrently,
and a well-behaved program next to them still finishes."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from verity.sandbox import LAYERS, SandboxLimits, SandboxUnavailable, available_layers, get_layer, run_python

WORKING = {name: why for name, why in available_layers().items()}
# generous wall clock: the good program must start even on a loaded machine
LIMITS = SandboxLimits(timeout_s=10.0, cpu_s=2, memory_mb=256, max_output_bytes=64 * 1024)


def _layer_param(name: str):
    why = WORKING[name]
    return pytest.param(name, marks=pytest.mark.skipif(why is not None, reason=f"not available here: {why}"))


@pytest.fixture(scope="module")
def listener():
    """A TCP server on loopback that records every connection it accepts."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                accepted.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    t.join()
    srv.close()


def test_at_least_one_layer_works():
    assert any(why is None for why in WORKING.values()), WORKING


@pytest.mark.parametrize("layer", [_layer_param(n) for n in LAYERS])
def test_hostile_programs_are_contained(layer, listener, tmp_path):
    port, accepted = listener
    outside = tmp_path / "escaped.txt"
    programs = {
        "infinite_loop": "while True:\n    pass\n",
        "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "memory_bomb": "x = bytearray(1 << 31)\nprint(len(x))\n",
        "network": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')\n",
        "write_outside": f"open({str(outside)!r}, 'w').write('x')\nprint('written')\n",
        "huge_output": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
        "sleeper": "import time\ntime.sleep(60)\n",
        "good": "open('scratch.txt', 'w').write('6 * 7')\nprint(eval(open('scratch.txt').read()))\n",
    }

    async def run_all():
        return await asyncio.gather(*(run_python(code, LIMITS, layer=layer) for code in programs.values()))

    results = dict(zip(programs, asyncio.run(run_all()), strict=True))
    assert results["good"].status == "ok" and results["good"].stdout == "42\n", results["good"]
    assert all(r.layer == layer for r in results.values())
    assert results["infinite_loop"].status in ("timeout", "cpu_limit")
    assert results["fork_bomb"].status in ("timeout", "cpu_limit")
    assert results["memory_bomb"].status == "memory_limit"
    assert results["network"].status == "error" and "connected" not in results["network"].stdout
    assert accepted == []
    assert results["write_outside"].status == "error" and not outside.exists()
    assert results["huge_output"].status == "output_limit"
    assert len(results["huge_output"].stdout) == LIMITS.max_output_bytes
    assert results["sleeper"].status == "timeout"
    for name, r in results.items():
        assert r.wall_s < LIMITS.timeout_s + 5, (name, r.wall_s)


def test_unknown_layer_is_a_one_line_error():
    with pytest.raises(SandboxUnavailable, match="unknown sandbox layer 'docker'"):
        get_layer("docker")


def test_stdin_files_and_exit_code():
    code = "import sys\ndata = open('data.txt').read()\nprint(data + sys.stdin.read())\nsys.exit(3)\n"
    r = asyncio.run(run_python(code, LIMITS, stdin="in", files={"data.txt": "file "}))
    assert (r.status, r.exit_code, r.stdout) == ("error", 3, "file in\n")


SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture
def own_uid_mode(monkeypatch):
    """As root with an interpreter an unprivileged uid can run: each run gets its own uid."""
    import os

    from verity.sandbox import runner

    if os.geteuid() != 0 or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("needs root and a system python")
    caches = (runner.python_exe, runner.own_uids, runner._probe)
    for c in caches:
        c.cache_clear()
    monkeypatch.setenv("VERITY_SANDBOX_PYTHON", SYSTEM_PYTHON)
    yield
    monkeypatch.delenv("VERITY_SANDBOX_PYTHON")
    for c in caches:
        c.cache_clear()


@pytest.mark.parametrize("layer", [_layer_param(n) for n in LAYERS])
def test_own_uid_and_process_limit(layer, own_uid_mode):
    code = ("import os, time\nn = 0\nwhile True:\n    try:\n        pid = os.fork()\n"
            "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n"
            "    n += 1\nprint(os.getuid(), n)\n")
    limits = SandboxLimits(timeout_s=20.0, max_procs=10)

    async def two():
        return await asyncio.gather(*(run_python(code, limits, layer=layer) for _ in range(2)))

    r1, r2 = asyncio.run(two())
    for r in (r1, r2):
        assert r.status == "ok", r
        assert 0 < int(r.stdout.split()[1]) < limits.max_procs
    if layer != "unshare":  # unshare maps the run's uid to 0 inside its user namespace
        assert r1.stdout.split()[0] != r2.stdout.split()[0] and int(r1.stdout.split()[0]) > 0
