"""Run untrusted generated code: a separate process, limits, no network, nobody's rights.

Each program runs in a fresh interpreter (`-I`: no user site, no PYTHON* variables) with a
scrubbed environment and resource limits (address space, CPU time, file size, processes, no core
dumps). Its output goes to a file, not a pipe, so a program printing without end cannot fill
this process's memory (RLIMIT_FSIZE caps the file).

A program passes only by running to its end: a trusted runner reads a per-program random token
from descriptor 3 and closes it before the program's code runs, and writes it to descriptor 4
once the code returned. No exit code, signal or printed text can stand in for it.

Where the kernel allows (as root, or in an unprivileged user namespace otherwise), the program
also gets namespaces of its own: network (no interface but a down loopback), mount (fresh small
tmpfs over /tmp, where its work folder lives whatever TMPDIR says, /var/tmp, /dev/shm,
/run/lock), IPC (its SysV segments die with it) and PID (it sees its own processes only, and
they all die with it). As root it runs with a uid of its own, leased under an exclusive lock so
that no two programs on the machine share one, even from two harness processes; and where a
memory cgroup can be made (v2, else v1) the memory of the whole program is bounded, not each
process's. Without one, the program may not start a second process or thread ("single-process"),
so its one address space is its whole memory. `isolation()` says what applies on this machine.
"""

from __future__ import annotations

import fcntl
import functools
import os
import random
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

# Uids no account uses, one per program running at a time on the machine: whatever runs with a
# program's uid is that program's, and is killed when it ends without touching its neighbours.
UID_RANGE = range(64_900, 64_964)
UID_WAIT_S = 120.0  # how long a program waits for a free uid before the run stops with an error
SAFE_PATH = "/usr/bin:/bin"
MARKER = "ADAPTBENCH_SANDBOX"  # environment variable naming one run, to find its leftovers
OUTPUT_TAIL = 4000  # characters of output kept for diagnosis
# The order isolation() names them in; each is written by the bootstrap once it took effect.
FEATURES = (
    "userns",
    "netns",
    "mountns-tmpfs",
    "ipcns",
    "pidns",
    "cgroup-memory",
    "single-process",
)


@dataclass
class Outcome:
    status: str  # passed | failed | timeout
    returncode: int | None  # the program's own exit code (negative: killed by that signal)
    duration_s: float
    output: str  # the tail of stdout and stderr, for diagnosis
    isolation: str = ""  # what this run got, as isolation() names it


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 5.0
    memory_mb: int = 1024  # the whole program (cgroup), or its one process (single-process)
    max_processes: int = 32
    max_file_mb: int = 16


@dataclass(frozen=True)
class Runner:
    """How programs of one language run: their file name and the command line.

    The command must keep the pass protocol: read the token from descriptor 3 and close it before
    any of the program's code runs, then write it to descriptor 4 once the program ran to its end.
    `{program}`, `{success_code}` and `{memory_mb}` in the command are filled in.
    """

    filename: str
    command: tuple[str, ...]
    # Address space the runtime reserves at start without using it (V8's code range and heap
    # cages), allowed on top of the memory limit; the memory itself stays bounded as before.
    reserved_mb: int = 0
    # Threads (tasks) one process of it needs where the program may be one process only: the
    # single-process fallback's RLIMIT_NPROC, which counts threads too.
    tasks: int = 1


def interpreter() -> str:
    """A Python the unprivileged user can execute (this one may live under /root)."""
    if os.geteuid() == 0:
        for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
            if os.path.exists(candidate) and os.access(candidate, os.X_OK):
                return candidate
    return sys.executable


# The trusted start of every Python program. Everything the token is kept in lives in this
# process, so code written to find it (walking frames, gc, ctypes) could: it guards against a
# program that stops early, not against one written to fool the grader.
PYTHON_RUNNER = """
import os, sys, types
def flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
def arm():
    token = b""
    while True:
        chunk = os.read(3, 256)
        if not chunk:
            break
        token += chunk
    os.close(3)
    def finish(code):
        flush()
        os.write(4, token)
        os._exit(code)
    return finish
finish = arm()
path, code = sys.argv[1], int(sys.argv[2])
sys.argv = [path]
main = types.ModuleType("__main__")
main.__file__ = path
sys.modules["__main__"] = main
with open(path, "rb") as fh:
    source = fh.read()
try:
    exec(compile(source, path, "exec", dont_inherit=True), main.__dict__)
except BaseException:
    flush()  # what it printed comes before its traceback, as when a script file fails
    raise
finish(code)
"""


def python_runner() -> Runner:
    """Python programs: the runner above in `interpreter()`, the program as a file beside it."""
    return Runner(
        "program.py",
        (interpreter(), "-I", "-B", "-c", PYTHON_RUNNER, "{program}", "{success_code}"),
    )


# The trusted start of every JavaScript program, as `node -e`: the token is read and fd 3 closed
# before the program's module is loaded, and written to fd 4 once the program ended: its top
# level returned and then the work it scheduled (timers, I/O, promises) with node's event loop
# empty ("beforeExit"), and it set no failing process.exitCode. An uncaught error or
# process.exit() never gets there. The functions used then are taken beforehand, so a program
# that replaces them cannot stand in for them.
NODE_RUNNER = """
"use strict";
const fs = require("fs");
const path = require("path");
const write = fs.writeSync;
const exit = process.exit.bind(process);
const once = process.once.bind(process);
const chunk = Buffer.alloc(256);
const parts = [];
for (;;) {
  const count = fs.readSync(3, chunk, 0, chunk.length, null);
  if (!count) break;
  parts.push(Buffer.from(chunk.subarray(0, count)));
}
fs.closeSync(3);
const token = Buffer.concat(parts);
const [file, code] = process.argv.slice(1);
require(path.resolve(file));
once("beforeExit", () => {
  if (process.exitCode !== undefined && Number(process.exitCode) !== 0) return;  // it failed
  write(4, token);
  exit(Number(code));
});
"""
NODE_RESERVED_MB = 1024  # node 20 reserves about 0.7 GB of address space before running a line
NODE_TASKS = 16  # its main thread, 2 V8 workers, libuv's pool of 4, the bootstrap's two, spare


def node_binary() -> str:
    """The `node` a program runs in (on the sandbox's PATH, which every uid may execute)."""
    found = shutil.which("node", path=SAFE_PATH)
    if found is None:
        raise RuntimeError(
            f"No `node` on {SAFE_PATH}: JavaScript programs run with node (v18 or later); "
            "install it (apt-get install nodejs) and run again."
        )
    return found


def node_runner(permissions: bool = True) -> Runner:
    """JavaScript programs: the runner above in `node -e`, the program as a CommonJS file.

    V8's heap is capped at the memory limit (`--max-old-space-size`), so a program that fills
    it fails with node's "heap out of memory" rather than at the address space limit. With
    `permissions` node's permission model also refuses child processes, workers and file writes
    (reads stay open): a second fence inside the sandbox's, which holds without it.
    """
    fence = (
        ("--experimental-permission", "--allow-fs-read=*", "--disable-warning=ExperimentalWarning")
        if permissions
        else ()
    )
    return Runner(
        "program.js",
        (
            node_binary(),
            "--max-old-space-size={memory_mb}",
            "--v8-pool-size=2",
            *fence,
            "-e",
            NODE_RUNNER,
            "{program}",
            "{success_code}",
        ),
        reserved_mb=NODE_RESERVED_MB,
        tasks=NODE_TASKS,
    )


# The child's first acts, in a trusted interpreter: namespaces, mounts, then a small init that
# forks the program, reaps what it leaves and takes it all down when it ends. Done there rather
# than in a preexec_fn, which is unsafe in a threaded parent. Each step may fail on a locked-down
# kernel; the run then goes on without it, and the setup descriptor says what took effect.
BOOTSTRAP = r"""
import ctypes, fcntl, os, resource, signal, sys
cfg = dict(zip(ARGUMENTS, sys.argv[1:]))  # ARGUMENTS is prepended by the harness
for key in ("harness", "uid", "memory", "address", "tasks", "cpu", "fsize", "nproc",
            "token_fd", "report_fd", "setup_fd", "go_fd"):
    cfg[key] = int(cfg[key])
cfg["uid"] = None if cfg["uid"] < 0 else cfg["uid"]
cfg["command"] = sys.argv[1 + len(ARGUMENTS):]
libc = ctypes.CDLL(None, use_errno=True)
NEWNET, NEWNS, NEWIPC, NEWPID, NEWUSER = 0x40000000, 0x20000, 0x8000000, 0x20000000, 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 16384, 1 << 18
PDEATHSIG, DUMPABLE, SUBREAPER, NO_NEW_PRIVS = 1, 4, 36, 38
uid, here, name = cfg["uid"], cfg["workdir"], cfg["filename"]
setup = cfg["setup_fd"]

def fail():
    sys.excepthook(*sys.exc_info())  # the interpreter's own: no traceback module to import
    os._exit(126)

def prctl(option, value):
    return libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0),
                      ctypes.c_ulong(0))

def note(line):
    os.write(setup, (line + "\n").encode())

def mount(source, target, fstype, flags, options=None):
    return libc.mount(source, target, fstype, flags, options) == 0

def start_program(memory):
    note("feature " + memory)
    if uid is not None:  # only root could spare the helpers from the OOM killer (see below)
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("0")
    resource.setrlimit(resource.RLIMIT_AS, (cfg["address"],) * 2)
    resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu"],) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (cfg["fsize"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory == "single-process":
        # No cgroup to bound the whole: no second process or thread either (or only the
        # threads its runtime needs), so the address space limit above is all it can hold.
        resource.setrlimit(resource.RLIMIT_NPROC, (cfg["tasks"],) * 2)
    elif uid is not None:
        # Counted per uid, and this uid is the program's own: a fork bomb stops at the limit.
        resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"],) * 2)
    # The token on 3, the report on 4, nothing else of ours (the setup descriptor above all).
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (cfg["token_fd"], cfg["report_fd"])]
    for target, fd in zip((3, 4), moved):
        os.dup2(fd, target)
    os.closerange(5, 1 << 16)
    prctl(NO_NEW_PRIVS, 1)  # no setuid binary gives its rights back
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.chdir(here)
    os.environ["HOME"] = here
    os.execve(cfg["command"][0], cfg["command"], os.environ)

def init(private, memory):
    prctl(PDEATHSIG, signal.SIGKILL)
    if "pidns" in got and private:
        # Its own /proc shows this namespace only; an empty one where the kernel refuses.
        if mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC) or mount(
            b"tmpfs", b"/proc", b"tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, b"size=4k"
        ):
            note("feature pidns")
    else:
        prctl(SUBREAPER, 1)  # what the program leaves comes back here, not to the system's init
    if "ipcns" in got:
        note("feature ipcns")
        # SysV shared memory is not in the address space until attached: cap it as well.
        for key, value in (("shmmax", cfg["memory"]), ("shmall", cfg["memory"] // 4096)):
            try:
                with open("/proc/sys/kernel/" + key, "w") as fh:
                    fh.write(str(value))
            except OSError:
                pass
    program = os.fork()
    if program == 0:
        try:
            start_program(memory)
        except BaseException:
            fail()
    if not ("pidns" in got and private):
        note("pid %d" % program)  # for the harness to kill, should it leave its group
    os.close(cfg["token_fd"])
    os.close(cfg["report_fd"])
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == program:
            note("status %d" % status)
            break
    # As the namespace's init, leaving kills every process still in it.
    os._exit(0)

try:
    prctl(PDEATHSIG, signal.SIGKILL)  # a harness that dies takes its programs with it
    if os.getppid() != cfg["harness"]:
        os._exit(125)
    try:
        # In the program's cgroup too: when it runs out of memory, one of its own processes goes.
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("-1000")
    except OSError:
        pass  # not root: nothing to spare the helpers from but the program itself
    if uid is None and libc.unshare(NEWUSER) == 0:
        # Map ourselves to ourselves, so files keep their owner.
        uid_now, gid_now = os.getuid(), os.getgid()
        for file, text in (("setgroups", "deny"), ("uid_map", "%d %d 1" % (uid_now, uid_now)),
                           ("gid_map", "%d %d 1" % (gid_now, gid_now))):
            try:
                with open("/proc/self/" + file, "w") as fh:
                    fh.write(text)
            except OSError:
                pass
        note("feature userns")
    # Nothing of the same uid may read its memory or descriptors from now on (not before: an
    # undumpable process's /proc/self, uid_map included, belongs to root).
    prctl(DUMPABLE, 0)
    names = {NEWNET: "netns", NEWNS: "mountns", NEWIPC: "ipcns", NEWPID: "pidns"}
    if libc.unshare(NEWNET | NEWNS | NEWIPC | NEWPID) == 0:
        got = set(names.values())
    else:
        got = {ns for flag, ns in names.items() if libc.unshare(flag) == 0}
    if "netns" in got:
        note("feature netns")
    # Mounts stay in this namespace only once / is private; never mount otherwise.
    private = "mountns" in got and mount(b"none", b"/", None, MS_REC | MS_PRIVATE)
    tmpfs = False
    if private:
        with open(os.path.join(here, name), "rb") as fh:
            source = fh.read()
        for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
            if os.path.isdir(d):
                done = mount(b"tmpfs", d.encode(), b"tmpfs", MS_NOSUID | MS_NODEV,
                             b"size=64m,mode=1777")
                tmpfs = tmpfs or (d == "/tmp" and done)
    if tmpfs:
        # The work folder lives in the fresh /tmp, wherever the harness's is: all it writes is
        # capped there and gone afterwards.
        here = os.path.join("/tmp", os.path.basename(here))
        os.mkdir(here, 0o700)
        with open(os.path.join(here, name), "wb") as fh:
            fh.write(source)
        note("feature mountns-tmpfs")
    if uid is not None:
        for path in (here, os.path.join(here, name)):
            os.chown(path, uid, uid)
    # The harness moves this process into the program's cgroup while it starts, then says whether
    # that worked: nothing is forked before, so everything after is inside.
    memory = "cgroup-memory" if os.read(cfg["go_fd"], 1) == b"c" else "single-process"
    os.close(cfg["go_fd"])
    child = os.fork()  # the first process of a new PID namespace: its init
    if child == 0:
        try:
            init(private, memory)
        except BaseException:
            fail()
    os.close(cfg["token_fd"])
    os.close(cfg["report_fd"])
    status = os.waitpid(child, 0)[1]
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
except BaseException:
    fail()
"""


_BOOTSTRAP_ARGUMENTS = (
    "harness",
    "uid",
    "workdir",
    "filename",
    "memory",
    "address",
    "tasks",
    "cpu",
    "fsize",
    "nproc",
    "token_fd",
    "report_fd",
    "setup_fd",
    "go_fd",
)
_BOOTSTRAP_CODE = f"ARGUMENTS = {_BOOTSTRAP_ARGUMENTS!r}\n{BOOTSTRAP}"


# --- Uids: one lock file per uid, held while its program runs; a dead holder's lock is freed.


@functools.cache
def _uid_lock_dir() -> Path:
    """A root-only folder every harness on the machine agrees on (not TMPDIR, which varies)."""
    for parent in ("/run", "/dev/shm", "/tmp"):
        folder = Path(parent) / "adaptbench-sandbox-uids"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            info = folder.lstat()
        except OSError:
            continue
        if folder.is_dir() and not folder.is_symlink() and info.st_uid == 0:
            if not info.st_mode & 0o022:
                return folder
    raise RuntimeError(
        "No folder to lock sandbox uids in: /run, /dev/shm and /tmp gave no root-owned "
        "adaptbench-sandbox-uids folder writable by root only; make /run writable (or remove a "
        "foreign /run/adaptbench-sandbox-uids) and run again."
    )


def _lease_uid() -> tuple[int, int]:
    """A uid no other program on the machine is using, and the descriptor holding its lock."""
    folder = _uid_lock_dir()
    uids = list(UID_RANGE)
    deadline = time.monotonic() + UID_WAIT_S
    while True:
        start = random.randrange(len(uids))  # spread concurrent harnesses over the range
        order = uids[start:] + uids[:start]
        # Those a dead holder left first (their lock file is not empty), to clear up after it.
        order.sort(key=lambda uid: not _lock_file_size(folder / f"{uid}.lock"))
        for uid in order:
            fd = os.open(folder / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                # flock, not lockf: it also excludes other threads of this process.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if os.fstat(fd).st_size:
                # Its last holder died holding it: whatever it left with this uid goes first.
                _kill_leftovers(None, uid, "")
                found = _cgroup_parent()
                if found is not None:
                    _remove_cgroup(found[1] / f"adaptbench-sandbox-{uid}")
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return uid, fd
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"All {len(uids)} sandbox uids ({uids[0]}..{uids[-1]}) stayed busy for "
                f"{UID_WAIT_S:.0f} s: more programs run at once on this machine than there are "
                "uids. Run fewer evaluations side by side or lower their workers."
            )
        time.sleep(0.02)


def _lock_file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _release_uid(fd: int) -> None:
    os.ftruncate(fd, 0)  # empty: a clean release (see _lease_uid)
    os.close(fd)


# --- Memory cgroups: one per program, under this process's own cgroup.


def _mountinfo() -> list[tuple[str, str, str, set[str]]]:
    """(root, mount point, type, super options) of each mount."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        tail = fields[fields.index("-") + 1 :]
        mounts.append((fields[3], fields[4], tail[0], set(tail[2].split(","))))
    return mounts


@functools.cache
def _cgroup_parent() -> tuple[str, Path] | None:
    """Where this process may make a memory cgroup per program: ("v2" | "v1", folder), or None."""
    try:
        own = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = _mountinfo()
    except (OSError, ValueError, IndexError):
        return None
    candidates = []
    for line in own:
        hierarchy, controllers, path = line.split(":", 2)
        for root, point, fstype, options in mounts:
            v2 = hierarchy == "0" and fstype == "cgroup2"
            v1 = fstype == "cgroup" and "memory" in options and "memory" in controllers.split(",")
            if v2 or v1:
                inner = path[len(root) :] if root != "/" and path.startswith(root) else path
                candidates.append(("v2" if v2 else "v1", Path(point + inner.rstrip("/"))))
    for kind, parent in sorted(candidates, key=lambda c: c[0] != "v2"):
        if kind == "v2":
            try:  # children get memory.max only where the parent hands the controller down
                if "memory" not in (parent / "cgroup.subtree_control").read_text().split():
                    continue
            except OSError:
                continue
        # Named for this call alone: two threads may probe at once, and neither may fail for it.
        probe = _make_cgroup_at(kind, parent / f"adaptbench-sandbox-probe-{uuid.uuid4().hex}", 64)
        if probe is not None:
            _remove_cgroup(probe)
            return kind, parent
    return None


def _make_cgroup_at(kind: str, path: Path, memory_mb: int) -> Path | None:
    limit = str(memory_mb * 2**20)
    try:
        if path.exists():
            _remove_cgroup(path)  # a crashed harness's
        path.mkdir()
        if kind == "v2":
            (path / "memory.max").write_text(limit)
            swap = path / "memory.swap.max"
        else:
            (path / "memory.limit_in_bytes").write_text(limit)
            swap = path / "memory.memsw.limit_in_bytes"  # memory plus swap
        if swap.exists():
            swap.write_text("0" if kind == "v2" else limit)
    except OSError:
        _remove_cgroup(path)
        return None
    return path


def _make_cgroup(name: str, memory_mb: int) -> Path | None:
    found = _cgroup_parent()
    if found is None:
        return None
    kind, parent = found
    return _make_cgroup_at(kind, parent / f"adaptbench-sandbox-{name}", memory_mb)


def _join_cgroup(path: Path, pid: int) -> bool:
    try:
        (path / "cgroup.procs").write_text(str(pid))
        return True
    except OSError:
        return False


def _remove_cgroup(path: Path) -> None:
    deadline = time.monotonic() + 2.0
    while True:
        try:
            for pid in (path / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # busy: its last processes are still exiting
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)


# --- Leftovers


def _proc_entries():
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            yield entry


def _real_uid(entry: Path) -> int:
    # Not the owner of /proc/<pid>, which a program that made itself undumpable hands to root.
    for line in (entry / "status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise ValueError(f"no Uid line in {entry}/status")


def _belongs(entry: Path, pgid: int | None, uid: int | None, marker: str) -> bool:
    """Is this process part of the run? Its uid says so for certain when the run had its own;
    otherwise its session or group, or the marker in its environment."""
    if uid is not None:
        return _real_uid(entry) == uid
    if _real_uid(entry) != os.getuid():
        return False
    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
    if int(fields[2]) == pgid or int(fields[3]) == pgid:  # process group, session
        return True
    return f"{MARKER}={marker}".encode() in (entry / "environ").read_bytes()


def _kill_leftovers(pgid: int | None, uid: int | None, marker: str) -> None:
    if pgid is not None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    # A child that called setsid() left the group; its uid (or marker) still gives it away.
    for _ in range(5):
        found = False
        for entry in _proc_entries():
            try:
                if _belongs(entry, pgid, uid, marker):
                    os.kill(int(entry.name), signal.SIGKILL)
                    found = True
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile, or not ours to read
        if not found:
            return
        time.sleep(0.05)


def _read_setup(text: bytes) -> tuple[list[str], int | None, int | None]:
    """What the bootstrap wrote: the features that took effect, the program's wait status (once
    it ended) and its pid (where no PID namespace hides it)."""
    features, wait_status, pid = [], None, None
    for line in text.decode(errors="replace").splitlines():
        word, _, value = line.partition(" ")
        if word == "feature":
            features.append(value)
        elif word == "status":
            wait_status = int(value)
        elif word == "pid":
            pid = int(value)
    return features, wait_status, pid


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _wait(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait for `proc` to end; False if it is still running after `timeout_s`."""
    try:
        # Woken the moment it ends: Popen.wait(timeout) polls, sleeping up to 50 ms a time.
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        if pidfd is not None:
            select.select([pidfd], [], [], timeout_s)
        proc.wait(timeout=0 if pidfd is not None else timeout_s)
        return True
    except subprocess.TimeoutExpired:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _fill(part: str, values: dict[str, str]) -> str:
    """A command part with its placeholder filled: the whole part, or inside an option
    (`--max-old-space-size={memory_mb}`); never inside a runner's code, whatever it holds."""
    if part in values:
        return values[part]
    if part.startswith("--"):
        for placeholder, value in values.items():
            part = part.replace(placeholder, value)
    return part


def _new_token() -> str:
    return secrets.token_hex(16)


def _isolation_of(features: list[str], uid: int | None) -> str:
    named = [f for f in FEATURES if f in features]
    return ",".join(["subprocess", "rlimits", *named, "uid" if uid else "same-uid", "pass-token"])


def run_program(
    source: str, limits: Limits = Limits(), success_code: int = 0, runner: Runner | None = None
) -> Outcome:
    """Run `source` in the sandbox (a Python program unless `runner` says otherwise); passed
    means it ran to its end in time, which then exits with `success_code`."""
    runner = runner or python_runner()
    lease = _lease_uid() if os.geteuid() == 0 else None
    uid = lease[0] if lease else None
    marker = uuid.uuid4().hex
    token = _new_token()
    cgroup = None
    workdir = Path(tempfile.mkdtemp(prefix="adaptbench-sandbox-"))
    try:
        (workdir / runner.filename).write_text(source)
        cgroup = _make_cgroup(str(uid) if uid else marker, limits.memory_mb)
        env = {
            "PATH": SAFE_PATH,
            "HOME": str(workdir),
            "TMPDIR": "/tmp",
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            MARKER: marker,
        }
        fill = {
            "{program}": runner.filename,
            "{success_code}": str(success_code),
            "{memory_mb}": str(limits.memory_mb),
        }
        # Output: an unlinked file of this process's, which the program can only append to up
        # to RLIMIT_FSIZE. Report: where the token comes back. Setup: what took effect.
        with (
            tempfile.TemporaryFile() as output,
            tempfile.TemporaryFile() as report,
            tempfile.TemporaryFile() as setup,
        ):
            token_in, token_out = os.pipe()
            os.write(token_out, token.encode())
            os.close(token_out)
            go_in, go_out = os.pipe()
            config = {
                "harness": os.getpid(),
                "uid": -1 if uid is None else uid,
                "workdir": workdir,
                "filename": runner.filename,
                "memory": limits.memory_mb * 2**20,
                "address": (limits.memory_mb + runner.reserved_mb) * 2**20,
                "tasks": runner.tasks,
                "cpu": int(limits.timeout_s) + 1,
                "fsize": limits.max_file_mb * 2**20,
                "nproc": limits.max_processes,
                "token_fd": token_in,
                "report_fd": report.fileno(),
                "setup_fd": setup.fileno(),
                "go_fd": go_in,
            }
            settings = [str(config[key]) for key in _BOOTSTRAP_ARGUMENTS]
            command = [_fill(part, fill) for part in runner.command]
            bootstrap = [interpreter(), "-I", "-S", "-c", _BOOTSTRAP_CODE, *settings, *command]
            start = time.perf_counter()
            try:
                proc = subprocess.Popen(
                    bootstrap,
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    pass_fds=(token_in, report.fileno(), setup.fileno(), go_in),
                )
            except BaseException:
                os.close(go_out)
                raise
            finally:
                os.close(token_in)
                os.close(go_in)
            try:
                # Moved while its interpreter starts: joining a cgroup can wait for an RCU grace
                # period (~10 ms), which would otherwise come on top.
                joined = cgroup is not None and _join_cgroup(cgroup, proc.pid)
                try:
                    os.write(go_out, b"c" if joined else b"s")
                except BrokenPipeError:
                    pass  # it ended already; its output says why
                finally:
                    os.close(go_out)
                timed_out = not _wait(proc, limits.timeout_s)
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
                setup.seek(0)
                features, wait_status, program_pid = _read_setup(setup.read())
                if wait_status is None and program_pid is not None:
                    _kill_quietly(program_pid)  # may still run, outside any PID namespace
                # A bootstrap that saw its init end waited for the PID namespace to empty: nothing
                # is left. Otherwise children it left running (setsid() or not) die now.
                if timed_out or "pidns" not in features or wait_status is None:
                    _kill_leftovers(proc.pid, uid, marker)
            duration = time.perf_counter() - start
            size = output.seek(0, os.SEEK_END)
            output.seek(max(0, size - 4 * OUTPUT_TAIL))
            text = output.read().decode("utf-8", errors="replace")[-OUTPUT_TAIL:]
            report.seek(0)
            claimed = report.read(1024)
        returncode = (
            proc.returncode if wait_status is None else os.waitstatus_to_exitcode(wait_status)
        )
        passed = claimed == token.encode() and returncode == success_code
        status = "timeout" if timed_out else "passed" if passed else "failed"
        return Outcome(status, returncode, duration, text, _isolation_of(features, uid))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if cgroup is not None:
            _remove_cgroup(cgroup)
        if lease is not None:
            _release_uid(lease[1])


@functools.cache
def isolation() -> str:
    """What the sandbox gets on this machine, for signatures (found by running one program)."""
    return run_program("pass").isolation
