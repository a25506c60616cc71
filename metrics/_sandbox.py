"""Run untrusted generated code: a separate process, limits, no network, nobody's rights.

Each program runs in a fresh interpreter (`-I`: no site, no user paths, no PYTHON* variables)
in its own temporary folder, as a new session (so its whole process group can be killed), with
a scrubbed environment and resource limits (address space, CPU time, file size, processes, no
core dumps). Its output goes to a file, not a pipe, so a program printing without end cannot
fill this process's memory (RLIMIT_FSIZE caps the file).

Run as root (the usual case in a container), the child also gets
- a network namespace of its own (no interface but a down loopback): no network;
- a mount namespace with fresh small tmpfs over /tmp, /var/tmp, /dev/shm and /run/lock, so it
  leaves nothing behind there and cannot fill the disk through them;
- a dedicated unprivileged uid/gid (one per concurrent program, from a range no account uses),
  so it cannot touch files it does not own, and everything left running with that uid (even
  processes that called setsid()) is killed afterwards.
Not root: it tries an unprivileged user namespace for the network namespace (where the kernel
allows it) and otherwise runs with the network and the caller's rights; leftovers are found by
process group, session and an environment marker. `isolation()` says which applies.
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
import uuid
from dataclasses import dataclass
from pathlib import Path

# Uids no account uses, one per program running at a time: whatever runs with a program's uid
# is that program's, and is killed when it ends without touching its neighbours.
_FREE_UIDS: queue.Queue[int] = queue.Queue()
for _uid in range(64_900, 64_964):
    _FREE_UIDS.put(_uid)
SAFE_PATH = "/usr/bin:/bin"
MARKER = "ADAPTBENCH_SANDBOX"  # environment variable naming one run, to find its leftovers
OUTPUT_TAIL = 4000  # characters of output kept for diagnosis


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


def isolation() -> str:
    """What the sandbox gets on this machine, for signatures."""
    if os.geteuid() == 0:
        return "subprocess,rlimits,netns,mountns-tmpfs,uid"
    return "subprocess,rlimits,userns-netns-if-allowed,same-uid"


# The child's first act, in a trusted interpreter: namespaces, limits, identity, then exec the
# program. Done there rather than in a preexec_fn, which is unsafe in a threaded parent.
# Every namespace step may fail on a locked-down kernel; the run then goes on without it.
BOOTSTRAP = """
import ctypes, os, resource, sys
memory, cpu, fsize, nproc, uid = sys.argv[1:6]
libc = ctypes.CDLL(None, use_errno=True)
NEWNET, NEWNS, NEWUSER = 0x40000000, 0x00020000, 0x10000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 16384, 1 << 18
drop = uid != "-"
if drop:
    if libc.unshare(NEWNET | NEWNS) != 0:
        libc.unshare(NEWNET)
    # Mounts stay in this namespace only once / is private; never mount otherwise.
    elif libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0:
        # The work folder moves into the fresh /tmp, at the same path: all it writes is capped.
        here, source = os.getcwd(), open("program.py", "rb").read()
        for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
            if os.path.isdir(d):
                libc.mount(b"tmpfs", d.encode(), b"tmpfs", MS_NOSUID | MS_NODEV,
                           b"size=64m,mode=1777")
        if not os.path.exists(os.path.join(here, "program.py")):
            os.makedirs(here, mode=0o700)
            with open(os.path.join(here, "program.py"), "wb") as fh:
                fh.write(source)
            for path in (here, os.path.join(here, "program.py")):
                os.chown(path, int(uid), int(uid))
        os.chdir(here)
else:
    uid_now, gid_now = os.getuid(), os.getgid()
    if libc.unshare(NEWUSER | NEWNET) == 0:
        # Map ourselves to ourselves, so files keep their owner.
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid_now} {uid_now} 1"),
                           ("gid_map", f"{gid_now} {gid_now} 1")):
            try:
                with open(f"/proc/self/{name}", "w") as fh:
                    fh.write(text)
            except OSError:
                pass
resource.setrlimit(resource.RLIMIT_AS, (int(memory),) * 2)
resource.setrlimit(resource.RLIMIT_CPU, (int(cpu),) * 2)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(fsize),) * 2)
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
if drop:
    # Counted per uid, and this uid is the program's own: a fork bomb stops at the limit.
    resource.setrlimit(resource.RLIMIT_NPROC, (int(nproc),) * 2)
    os.setgroups([])
    os.setgid(int(uid))
    os.setuid(int(uid))
os.execv(sys.executable, [sys.executable, "-I", "-B", "program.py"])
"""


def _proc_entries():
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            yield entry


def _belongs(entry: Path, pgid: int, uid: int | None, token: str) -> bool:
    """Is this process part of the run? Its uid says so for certain when the run had its own;
    otherwise its session or group, or the marker in its environment."""
    if uid is not None:
        return entry.stat().st_uid == uid
    if entry.stat().st_uid != os.getuid():
        return False
    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
    if int(fields[2]) == pgid or int(fields[3]) == pgid:  # process group, session
        return True
    return f"{MARKER}={token}".encode() in (entry / "environ").read_bytes()


def _kill_leftovers(pgid: int, uid: int | None, token: str) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    # A child that called setsid() left the group; its uid (or marker) still gives it away.
    for _ in range(5):
        found = False
        for entry in _proc_entries():
            try:
                if _belongs(entry, pgid, uid, token):
                    os.kill(int(entry.name), signal.SIGKILL)
                    found = True
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile, or not ours to read
        if not found:
            return
        time.sleep(0.05)


def run_program(source: str, limits: Limits = Limits(), success_code: int = 0) -> Outcome:
    """Run `source` as a Python program in the sandbox; passed means it exited in time with
    `success_code`."""
    uid = _FREE_UIDS.get() if os.geteuid() == 0 else None
    token = uuid.uuid4().hex
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
            "TMPDIR": "/tmp",
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            MARKER: token,
        }
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
        ]
        # An unlinked file of this process's: the program can only append up to RLIMIT_FSIZE.
        with tempfile.TemporaryFile() as output:
            start = time.perf_counter()
            proc = subprocess.Popen(
                command,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
            try:
                proc.wait(timeout=limits.timeout_s)
                status = "passed" if proc.returncode == success_code else "failed"
            except subprocess.TimeoutExpired:
                status = "timeout"
            finally:
                # Also after a normal exit: children it left running die with it.
                _kill_leftovers(proc.pid, uid, token)
                proc.wait()
            duration = time.perf_counter() - start
            size = output.seek(0, os.SEEK_END)
            output.seek(max(0, size - 4 * OUTPUT_TAIL))
            text = output.read().decode("utf-8", errors="replace")[-OUTPUT_TAIL:]
        return Outcome(status, proc.returncode, duration, text)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if uid is not None:
            _FREE_UIDS.put(uid)
