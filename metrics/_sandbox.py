"""Run untrusted generated code: a separate process, limits, no network, nobody's rights.

Each program runs in a fresh interpreter (`-I`: no site, no user paths, no PYTHON* variables)
in its own temporary folder, as a new session (so its whole process group can be killed), with
a scrubbed environment and resource limits (address space, CPU time, file size, processes, no
core dumps). Run as root, the child also gets a network namespace of its own (no interfaces
but loopback) and drops to a dedicated unprivileged uid/gid, so it can neither reach the network
nor touch files it does not own; every process left with that uid is killed afterwards.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Uids no account uses, one per program running at a time: whatever runs with a program's uid
# is that program's, and is killed when it ends without touching its neighbours.
_FREE_UIDS: queue.Queue[int] = queue.Queue()
for _uid in range(64_900, 64_964):
    _FREE_UIDS.put(_uid)
SAFE_PATH = "/usr/bin:/bin"


@dataclass
class Outcome:
    status: str  # passed | failed | timeout
    returncode: int | None
    duration_s: float
    output: str  # the tail of stdout and stderr, for diagnosis


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 5.0
    memory_mb: int = 1024
    max_processes: int = 32
    max_file_mb: int = 16


def interpreter() -> str:
    """A Python the unprivileged user can execute (this one may live under /root)."""
    if os.geteuid() == 0:
        for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
            if os.path.exists(candidate) and os.access(candidate, os.X_OK):
                return candidate
    return sys.executable


# The child's first act, in a trusted interpreter: limits, network, identity, then exec the
# program. Done there rather than in a preexec_fn, which is unsafe in a threaded parent.
BOOTSTRAP = """
import ctypes, os, resource, sys
memory, cpu, fsize, nproc, uid, program = sys.argv[1:7]
drop = uid != "-"
if drop:
    ctypes.CDLL(None, use_errno=True).unshare(0x40000000)  # CLONE_NEWNET; 0 or -1, both fine
resource.setrlimit(resource.RLIMIT_AS, (int(memory),) * 2)
resource.setrlimit(resource.RLIMIT_CPU, (int(cpu),) * 2)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(fsize),) * 2)
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
if drop:
    resource.setrlimit(resource.RLIMIT_NPROC, (int(nproc),) * 2)
    os.setgroups([])
    os.setgid(int(uid))
    os.setuid(int(uid))
os.execv(sys.executable, [sys.executable, "-I", "-B", program])
"""


def _kill_leftovers(pgid: int, uid: int | None) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is None:
        return
    # A child that called setsid() left the group; the uid still gives it away.
    for _ in range(3):
        found = False
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if entry.stat().st_uid == uid:
                    os.kill(int(entry.name), signal.SIGKILL)
                    found = True
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
        if not found:
            return
        time.sleep(0.05)


def run_program(source: str, limits: Limits = Limits()) -> Outcome:
    """Run `source` as a Python program in the sandbox; passed means exit code 0 in time."""
    uid = _FREE_UIDS.get() if os.geteuid() == 0 else None
    workdir = Path(tempfile.mkdtemp(prefix="adaptbench-sandbox-"))
    try:
        program = workdir / "program.py"
        program.write_text(source)
        if uid is not None:
            os.chown(workdir, uid, uid)
            os.chown(program, uid, uid)
        os.chmod(workdir, 0o700)
        env = {
            "PATH": SAFE_PATH,
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        start = time.perf_counter()
        command = [
            interpreter(),
            "-I",
            "-c",
            BOOTSTRAP,
            str(limits.memory_mb * 2**20),
            str(int(limits.timeout_s) + 1),
            str(limits.max_file_mb * 2**20),
            str(limits.max_processes),
            str(uid) if uid is not None else "-",
            str(program),
        ]
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
        try:
            output, _ = proc.communicate(timeout=limits.timeout_s)
            status = "passed" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill_leftovers(proc.pid, uid)
            output, _ = proc.communicate()
            status = "timeout"
        finally:
            _kill_leftovers(proc.pid, uid)
        duration = time.perf_counter() - start
        text = output.decode("utf-8", errors="replace")[-2000:]
        return Outcome(status, proc.returncode, duration, text)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if uid is not None:
            _FREE_UIDS.put(uid)
