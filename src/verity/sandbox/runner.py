"""Run untrusted (model-written) Python in a separate, restricted process.

Every run gets a fresh temporary directory as its working directory and its only writable
place, CPU-time / address-space / process-count / file-size limits (``setrlimit``), a
wall-clock timeout after which the whole process tree is killed, capped stdout/stderr, and no
network. Isolation comes from the first layer that works on this machine (probed once):

``bwrap``
    bubblewrap: new user, network, PID, IPC, UTS and cgroup namespaces; the root file system
    read-only, a private ``/tmp``; only the work directory is bound writable.
``unshare``
    util-linux ``unshare``: new network, PID, IPC and UTS namespaces (a user namespace when
    not root); writes outside the work directory denied by Landlock.
``seccomp``
    no namespaces (e.g. inside a container that forbids them): a seccomp-BPF filter denies
    every non-``AF_UNIX`` socket, Landlock denies writes outside the work directory; when
    Landlock is missing, only file permissions protect the file system (reported in
    :attr:`SandboxLayer.fs`).

As root, each run gets its own unprivileged uid when such a uid can run the interpreter, so the
process limit holds (the kernel never applies ``RLIMIT_NPROC`` to uid 0) and one run's fork
bomb cannot starve another; when it cannot (e.g. a pyenv interpreter under ``/root``), the
program keeps uid 0 and a seccomp filter lets it start threads but no processes. ``VERITY_SANDBOX``
(``bwrap``/``unshare``/``seccomp``) forces a layer. No layer -> :class:`SandboxUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from verity.errors import VerityError
from verity.types import SandboxResult, SandboxStatus

LAUNCHER = str(Path(__file__).with_name("_launch.py"))
LAYERS = ("bwrap", "unshare", "seccomp")
_UID_BASE = 1_900_000_000
_uids = itertools.count((os.getpid() % 10_000) * 10_000)


class SandboxUnavailable(VerityError):
    """No isolation layer works on this machine (the message says what each probe returned)."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run."""

    timeout_s: float = 10.0
    """Wall-clock seconds before the whole process tree is killed."""
    cpu_s: int = 5
    """CPU seconds (RLIMIT_CPU)."""
    memory_mb: int = 512
    """Address space in MiB (RLIMIT_AS)."""
    max_procs: int = 32
    """Processes the run may have at once (RLIMIT_NPROC)."""
    max_output_bytes: int = 1 << 20
    """stdout + stderr kept each; more output kills the run (status ``output_limit``)."""
    max_file_mb: int = 16
    """Largest file the program may write (RLIMIT_FSIZE)."""


@dataclass(frozen=True)
class SandboxLayer:
    """The isolation layer in use and what it enforces."""

    name: str
    net: str
    fs: str

    def describe(self) -> str:
        return f"{self.name} (network: {self.net}; files: {self.fs})"


def _root() -> bool:
    return os.geteuid() == 0


@functools.cache
def python_exe() -> str:
    """The interpreter sandboxed code runs with (``VERITY_SANDBOX_PYTHON`` or this one)."""
    return os.environ.get("VERITY_SANDBOX_PYTHON") or sys.executable


@functools.cache
def own_uids() -> bool:
    """As root: can an unprivileged uid run the interpreter? Then every run gets its own uid."""
    if not _root():
        return False
    try:
        p = subprocess.run([python_exe(), "-I", "-c", "pass"], user=_UID_BASE, group=_UID_BASE, extra_groups=[],
                           capture_output=True, timeout=30, cwd="/")
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0


def _layer_cmd(name: str, workdir: str) -> list[str]:
    if name == "bwrap":
        return [
            "bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/",
            "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--bind", workdir, workdir, "--chdir", workdir,
        ]
    if name == "unshare":
        # a user namespace also when root: capabilities then stay inside it, so RLIMIT_NPROC holds
        return ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--ipc", "--uts"]
    return []


@functools.cache
def _landlock_abi() -> int:
    from verity.sandbox._launch import landlock_abi

    return landlock_abi()


def _layer_info(name: str) -> SandboxLayer:
    landlock = _landlock_abi() > 0
    if name == "bwrap":
        return SandboxLayer(name, "network namespace (no interfaces but loopback)",
                            "read-only root, private /tmp, work dir writable")
    fs = "Landlock: writes only in the work dir" if landlock else (
        "own uid: file permissions only" if own_uids() else "NOT restricted (no Landlock, no own uid)")
    net = "network namespace (no interfaces but loopback)" if name == "unshare" else "seccomp: only AF_UNIX sockets"
    return SandboxLayer(name, net, fs)


def _launch_config(name: str, workdir: str, limits: SandboxLimits, argv: list[str], own_uid: bool) -> dict:
    return {
        "workdir": workdir, "argv": argv, "cpu_s": limits.cpu_s, "memory_bytes": limits.memory_mb << 20,
        "fsize_bytes": limits.max_file_mb << 20, "nofile": 256, "nproc": limits.max_procs,
        "shared_uid": not own_uid, "reap": name == "unshare",
        "landlock": name != "bwrap" and _landlock_abi() > 0, "seccomp": name == "seccomp",
        # the kernel never applies RLIMIT_NPROC to uid 0 (also not in a user namespace mapped to it)
        "no_fork": _root() and not own_uid,
    }


def _sandbox_env(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}


@functools.cache
def _probe(name: str) -> str | None:
    """None when layer ``name`` runs a trivial program here, else why not."""
    if name != "seccomp" and shutil.which(name) is None:
        return f"{name} not installed"
    with tempfile.TemporaryDirectory(prefix="verity-sbx-probe-") as wd:
        os.chmod(wd, 0o777)
        cfg = _launch_config(name, wd, SandboxLimits(), [python_exe(), "-I", "-c", "pass"], own_uid=False)
        try:
            p = subprocess.run([*_layer_cmd(name, wd), python_exe(), "-I", LAUNCHER, json.dumps(cfg)],
                               capture_output=True, text=True, timeout=30, env=_sandbox_env(wd))
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"{name}: {e}"
    return None if p.returncode == 0 else f"{name}: exit {p.returncode}: {p.stderr.strip()[-200:]}"


@functools.cache
def active_layer() -> SandboxLayer:
    """The isolation layer runs use here (probed once per process)."""
    forced = os.environ.get("VERITY_SANDBOX")
    if forced and forced not in LAYERS:
        raise SandboxUnavailable(f"VERITY_SANDBOX={forced!r}: expected one of {', '.join(LAYERS)}")
    why = []
    for name in [forced] if forced else LAYERS:
        err = _probe(name)
        if err is None:
            return _layer_info(name)
        why.append(err)
    raise SandboxUnavailable("no sandbox layer works here: " + "; ".join(why))


def available_layers() -> dict[str, str | None]:
    """Every layer -> None if it works here, else the reason it does not (for tests and doctor)."""
    return {name: _probe(name) for name in LAYERS}


async def _drain(stream: asyncio.StreamReader, cap: int, buf: bytearray, over: asyncio.Event) -> None:
    while chunk := await stream.read(65536):
        if len(buf) < cap:
            buf += chunk[: cap - len(buf)]
        if len(chunk) and len(buf) >= cap:
            over.set()


def _kill(proc: asyncio.subprocess.Process, uid: int | None) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if uid is not None:  # its own uid: also processes that left the process group
        for pid in os.listdir("/proc"):
            with contextlib.suppress(OSError):
                if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == uid:
                    os.kill(int(pid), signal.SIGKILL)


def _status(rc: int, layer: str, timed_out: bool, over: bool, stderr: str) -> tuple[SandboxStatus, int | None]:
    sig = -rc if rc < 0 else rc - 128 if layer != "seccomp" and rc > 128 else None
    if over:
        return "output_limit", sig
    if timed_out:
        return "timeout", sig
    if rc == 125 and "verity sandbox: launcher:" in stderr:
        return "sandbox_error", sig
    if sig in (signal.SIGXCPU, signal.SIGKILL):
        return "cpu_limit", sig
    if "MemoryError" in stderr[-2000:]:
        return "memory_limit", sig
    return ("ok" if rc == 0 else "error"), sig


def get_layer(name: str | None = None) -> SandboxLayer:
    """Layer ``name`` (it must work here), or the active one."""
    if name is None:
        return active_layer()
    if name not in LAYERS:
        raise SandboxUnavailable(f"unknown sandbox layer {name!r}: expected one of {', '.join(LAYERS)}")
    err = _probe(name)
    if err is not None:
        raise SandboxUnavailable(f"sandbox layer {err}")
    return _layer_info(name)


_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def _slot() -> asyncio.Semaphore:
    """Runs at once per event loop: ``VERITY_SANDBOX_CONCURRENCY``, default the CPU count."""
    loop = asyncio.get_running_loop()
    for old in [lp for lp in _slots if lp.is_closed()]:
        del _slots[old]
    if loop not in _slots:
        n = int(os.environ.get("VERITY_SANDBOX_CONCURRENCY") or os.cpu_count() or 2)
        _slots[loop] = asyncio.Semaphore(max(n, 1))
    return _slots[loop]


async def run_python(code: str, limits: SandboxLimits | None = None, stdin: str = "",
                     files: Mapping[str, str] | None = None, layer: str | None = None) -> SandboxResult:
    """Run ``code`` as ``main.py`` (next to ``files``) in a fresh sandbox, isolated by ``layer``
    (default: the active one). Never raises for what the code does: see the result's status."""
    limits = limits or SandboxLimits()
    isolation = get_layer(layer)
    async with _slot():  # the wall clock starts when the run gets a slot
        return await _run(code, limits, stdin, files or {}, isolation)


async def _run(code: str, limits: SandboxLimits, stdin: str, files: Mapping[str, str],
               layer: SandboxLayer) -> SandboxResult:
    uid = _UID_BASE + next(_uids) % 10_000_000 if own_uids() else None
    with tempfile.TemporaryDirectory(prefix="verity-sbx-") as wd:
        for name, text in {**files, "main.py": code}.items():
            Path(wd, name).write_text(text)
        if uid is not None:
            for p in [wd, *(str(x) for x in Path(wd).iterdir())]:
                os.chown(p, uid, uid)
        cfg = _launch_config(layer.name, wd, limits, [python_exe(), "-I", "main.py"], own_uid=uid is not None)
        t0 = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *_layer_cmd(layer.name, wd), python_exe(), "-I", LAUNCHER, json.dumps(cfg),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=_sandbox_env(wd), cwd=wd, start_new_session=True,
            user=uid, group=uid, extra_groups=[] if uid is not None else None,
        )
        assert proc.stdin and proc.stdout and proc.stderr  # all three were opened as pipes above
        out, err, over = bytearray(), bytearray(), asyncio.Event()
        readers = [asyncio.ensure_future(_drain(s, limits.max_output_bytes, b, over))
                   for s, b in ((proc.stdout, out), (proc.stderr, err))]
        waiter = asyncio.ensure_future(proc.wait())
        overflow = asyncio.ensure_future(over.wait())
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(stdin.encode())
                await proc.stdin.drain()
                proc.stdin.close()
            # Poll the exit status too: wait() may also wait for the pipes, which children left behind
            # by the program (no PID namespace in the seccomp layer) keep open until killed.
            deadline = t0 + limits.timeout_s
            while proc.returncode is None and not over.is_set() and time.monotonic() < deadline:
                await asyncio.wait([waiter, overflow], timeout=min(0.05, max(deadline - time.monotonic(), 0)),
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            timed_out = proc.returncode is None
            _kill(proc, uid)
            overflow.cancel()
            rc = await waiter
            await asyncio.wait(readers, timeout=2.0)
            for r in readers:
                r.cancel()
        wall = time.monotonic() - t0
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        status, sig = _status(rc, layer.name, timed_out and not over.is_set(), over.is_set(), stderr)
    return SandboxResult(status=status, exit_code=rc, signal=sig, stdout=stdout, stderr=stderr,
                         wall_s=round(wall, 3), layer=layer.name)
