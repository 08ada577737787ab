"""In-sandbox launcher: applies the kernel restrictions, then runs the untrusted program.

Run as ``python -I _launch.py CONFIG_JSON`` inside the isolation layer chosen by
:mod:`verity.sandbox.runner`. Standard library only (it runs with ``-I``, outside verity's
import path). It

1. with ``reap`` forks first: the parent, PID 1 of a PID namespace (which ignores signals it
   has no handler for), waits and exits with the program's status; the child goes on;
2. with ``landlock`` restricts every write-type file access to the work directory (and
   ``/dev/null``) with Linux Landlock -- kernel enforced, no privileges needed;
3. with ``seccomp`` installs a seccomp-BPF filter so ``socket()`` only succeeds for ``AF_UNIX``
   and ``io_uring_setup`` fails (no network without a network namespace); with ``no_fork`` the
   filter lets the program start threads but no processes (for root, whom the kernel exempts
   from ``RLIMIT_NPROC``);
4. sets resource limits (CPU seconds, address space, processes, file size, open files, no core);
5. ``execv``s the program.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import struct
import sys

# Landlock (include/uapi/linux/landlock.h)
_LL_WRITE_FILE, _LL_REMOVE_DIR, _LL_REMOVE_FILE = 1 << 1, 1 << 4, 1 << 5
_LL_MAKE = sum(1 << b for b in range(6, 13))  # MAKE_CHAR .. MAKE_SYM
_LL_REFER, _LL_TRUNCATE = 1 << 13, 1 << 14
_SYS_LANDLOCK = (444, 445, 446)  # create_ruleset, add_rule, restrict_self (same on x86_64 and aarch64)
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2

# seccomp: audit arch and syscall numbers per machine (fork/vfork exist on x86_64 only)
_ARCH = {
    "x86_64": (0xC000003E, {"socket": 41, "clone": 56, "fork": 57, "vfork": 58, "clone3": 435}),
    "aarch64": (0xC00000B7, {"socket": 198, "clone": 220, "clone3": 435}),
}
_SYS_IO_URING_SETUP = 425
_RET_ALLOW, _RET_KILL, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_EAGAIN, _EACCES, _ENOSYS = 11, 13, 38
_AF_UNIX, _CLONE_THREAD = 1, 0x10000
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def landlock_abi() -> int:
    """Landlock ABI version of the running kernel (0 when Landlock is unavailable)."""
    _libc.syscall.restype = ctypes.c_long
    ret = _libc.syscall(_SYS_LANDLOCK[0], None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(ret), 0)


def apply_landlock(workdir: str) -> None:
    """Allow write-type accesses only beneath ``workdir`` (and writes to /dev/null)."""
    abi = landlock_abi()
    if abi < 1:
        raise OSError("Landlock is not available in this kernel")
    handled = _LL_WRITE_FILE | _LL_REMOVE_DIR | _LL_REMOVE_FILE | _LL_MAKE
    handled |= _LL_REFER if abi >= 2 else 0
    handled |= _LL_TRUNCATE if abi >= 3 else 0
    attr = ctypes.create_string_buffer(struct.pack("=Q", handled))
    fd = _check(_libc.syscall(_SYS_LANDLOCK[0], attr, ctypes.c_size_t(8), ctypes.c_uint32(0)), "landlock ruleset")
    for path, access in ((workdir, handled), ("/dev/null", _LL_WRITE_FILE | (_LL_TRUNCATE if abi >= 3 else 0))):
        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = ctypes.create_string_buffer(struct.pack("=Qi", access, pfd))
        _check(_libc.syscall(_SYS_LANDLOCK[1], fd, 1, rule, ctypes.c_uint32(0)), f"landlock rule {path}")
        os.close(pfd)
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(_libc.syscall(_SYS_LANDLOCK[2], fd, ctypes.c_uint32(0)), "landlock restrict")
    os.close(fd)


def _assemble(prog: list[tuple]) -> bytes:
    """Classic BPF from ``(code, k, true_label, false_label)`` / ``("label", name)`` entries."""
    labels, pc = {}, 0
    for ins in prog:
        if ins[0] == "label":
            labels[ins[1]] = pc
        else:
            pc += 1
    out, pc = [], 0
    for ins in prog:
        if ins[0] == "label":
            continue
        code, k, jt, jf = (*ins, None, None)[:4]
        off = [0 if j is None else labels[j] - pc - 1 for j in (jt, jf)]  # None: fall through
        out.append(struct.pack("=HBBI", code, off[0], off[1], k))
        pc += 1
    return b"".join(out)


def apply_seccomp(no_network: bool, no_fork: bool) -> None:
    """seccomp-BPF filter. ``no_network``: socket() only for AF_UNIX, no io_uring.
    ``no_fork``: threads only (clone without CLONE_THREAD, fork and vfork fail with EAGAIN).
    Syscalls of a foreign ABI (x32, i386) kill the process."""
    arch, nr = _ARCH[platform.machine()]
    prog: list[tuple] = [(_LD_W_ABS, 4), (_JEQ, arch, None, "kill"), (_LD_W_ABS, 0), (_JGE, 0x40000000, "kill")]
    if no_network:
        prog += [(_JEQ, _SYS_IO_URING_SETUP, "eacces"), (_JEQ, nr["socket"], "socket")]
    if no_fork:
        prog += [(_JEQ, nr["clone3"], "enosys"), (_JEQ, nr["clone"], "clone")]
        prog += [(_JEQ, nr[name], "eagain") for name in ("fork", "vfork") if name in nr]
    prog += [
        (_RET, _RET_ALLOW),  # BPF jumps go forward only: each check ends in its own allow
        ("label", "socket"), (_LD_W_ABS, 16), (_JEQ, _AF_UNIX, None, "eacces"), (_RET, _RET_ALLOW),
        ("label", "clone"), (_LD_W_ABS, 16), (_JSET, _CLONE_THREAD, None, "eagain"), (_RET, _RET_ALLOW),
        ("label", "kill"), (_RET, _RET_KILL),
        ("label", "eacces"), (_RET, _RET_ERRNO | _EACCES),
        ("label", "eagain"), (_RET, _RET_ERRNO | _EAGAIN),
        ("label", "enosys"), (_RET, _RET_ERRNO | _ENOSYS),
    ]
    code = _assemble(prog)
    filt = ctypes.create_string_buffer(code)
    buf = ctypes.create_string_buffer(struct.pack("@HP", len(code) // 8, ctypes.addressof(filt)))
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(_libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, buf, 0, 0), "seccomp filter")


def _count_procs(uid: int) -> int:
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def apply_rlimits(cfg: dict) -> None:
    cpu = int(cfg["cpu_s"])
    limits = {
        resource.RLIMIT_CPU: (cpu, cpu + 1),
        resource.RLIMIT_AS: (cfg["memory_bytes"],) * 2,
        resource.RLIMIT_FSIZE: (cfg["fsize_bytes"],) * 2,
        resource.RLIMIT_NOFILE: (cfg["nofile"],) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    # RLIMIT_NPROC counts every process of the real uid: leave room for the ones already running
    # (none when the runner gave this sandbox its own uid).
    nproc = int(cfg["nproc"]) + (_count_procs(os.getuid()) if cfg.get("shared_uid") else 0)
    limits[resource.RLIMIT_NPROC] = (nproc, nproc)
    for which, (soft, hard) in limits.items():
        resource.setrlimit(which, (soft, hard))


def main() -> None:
    cfg = json.loads(sys.argv[1])
    if cfg.get("reap"):  # PID 1 of the namespace: wait for the program, exit with its status
        pid = os.fork()
        if pid:
            _, status = os.waitpid(pid, 0)
            os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
    os.chdir(cfg["workdir"])
    if cfg.get("landlock"):
        apply_landlock(cfg["workdir"])
    if cfg.get("seccomp") or cfg.get("no_fork"):
        apply_seccomp(no_network=bool(cfg.get("seccomp")), no_fork=bool(cfg.get("no_fork")))
    apply_rlimits(cfg)
    argv = cfg["argv"]
    os.execv(argv[0], argv)


if __name__ == "__main__":
    try:
        main()
    except OSError as e:  # a restriction could not be applied: never run the program unrestricted
        print(f"verity sandbox: launcher: {e}", file=sys.stderr)
        os._exit(125)
