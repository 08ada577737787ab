"""Small shared helpers: atomic file writes, JSON lines, output directories, running a coroutine,
versions, git commit, peak memory."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from verity.errors import DiskFullError, VerityError

T = TypeVar("T")

# Errors that mean "no space left": ENOSPC/EDQUOT from the OS, and torch's zip writer reporting a
# short write ("unexpected pos N vs M", "file write failed") when the disk filled up under it.
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXT = ("unexpected pos", "file write failed", "No space left on device")


def file_mode() -> int:
    """The one mode of every file verity writes: 0o666 minus the umask, like ``open()`` and the
    files torch/transformers write next to ours (0644 under the usual umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def set_file_modes(directory: str | os.PathLike[str]) -> None:
    """Give every file under ``directory`` :func:`file_mode` (safetensors writes 0600, the rest 0644)."""
    mode = file_mode()
    for p in Path(directory).rglob("*"):
        if p.is_file() and not p.is_symlink():
            os.chmod(p, mode)


def is_disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in _DISK_FULL_ERRNOS:
        return True
    return isinstance(e, (OSError, RuntimeError)) and any(t in str(e) for t in _DISK_FULL_TEXT)


@contextlib.contextmanager
def disk_full_as_error(what: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a disk-full failure inside the block into a one-line :class:`DiskFullError` naming ``what``."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        if is_disk_full(e):
            raise DiskFullError(f"disk full: could not write {what}; free some space (files written "
                                "before are intact)") from None
        raise


def output_dir_path(path: str | os.PathLike[str], flag: str = "-o") -> Path:
    """``path`` as an output directory: a one-line error when it exists as a file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        from verity.errors import ConfigError

        raise ConfigError(f"{flag} {path}: is a file, not a directory")
    return p


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` via a temp file + rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with disk_full_as_error(path), os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), file_mode())  # mkstemp makes 0600; run files all get one mode
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def _jsonl_line(r: dict[str, Any]) -> str:
    return json.dumps(r, default=str) + "\n"


def append_jsonl(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    """Append whole lines and fsync: a kill leaves at most one partial last line."""
    with disk_full_as_error(path), open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(_jsonl_line(r))
        f.flush()
        os.fsync(f.fileno())


def rewrite_jsonl(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    """Replace a JSON-lines file atomically (used on resume to drop torn or stale lines)."""
    atomic_write_text(path, "".join(_jsonl_line(r) for r in records))


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines file, skipping a truncated last line left by a kill; any other bad
    line is a :class:`VerityError` naming the file and line."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    lines = p.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise VerityError(f"{p} line {i + 1}: not valid JSON ({e.msg}); repair or remove that line") from None
    return out


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion, also when an event loop is already running (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["v"] = asyncio.run(coro)
        except BaseException as e:  # re-raised in the caller's thread
            box["e"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]


def default_out_dir(kind: str, *names: str) -> str:
    """``outputs/KIND/NAME--NAME--TIME``; each name shortened to its last 40 safe characters
    (an existing path with a ``/`` contributes its last component)."""
    def slug(s: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(s).name if "/" in s and Path(s).exists() else s)[-40:]
    return f"outputs/{kind}/{'--'.join(slug(n) for n in names)}--{time.strftime('%Y%m%d-%H%M%S')}"


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MiB (what ``/usr/bin/time -v`` reports as
    "Maximum resident set size"); None where the OS does not report it."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / (1024 if sys.platform != "darwin" else 1024 * 1024), 1)  # macOS reports bytes


def return_freed_memory(threshold_mb: int = 4) -> bool:
    """Make glibc's malloc give freed blocks of ``threshold_mb`` MiB or more back to the OS.

    A training step allocates and frees gigabytes of activations in blocks of a few MiB. By
    default glibc keeps freed blocks below its dynamic mmap threshold (up to 32 MiB) in its heaps,
    one heap per thread that allocated (the sampler decodes in a worker thread), and reuses them
    only for requests that fit: a 100-step RL run held 7 GB for a 2 GB working set. Blocks above
    the threshold are mapped and unmapped instead, so resident memory follows what is live. Only
    where the allocation comes from changes, never a value. Returns False where the C library
    is not glibc (nothing is changed).
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    size = threshold_mb << 20
    return bool(mallopt(m_mmap_threshold, size)) and bool(mallopt(m_trim_threshold, size))


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("verity", "torch", "transformers", "peft", "datasets", "openai"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    import platform

    out["python"] = platform.python_version()
    return out


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
