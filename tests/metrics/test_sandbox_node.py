"""The sandbox's attack tests, for JavaScript programs run with node.

Most run with node's permission model off (`node_runner(permissions=False)`), so what stops the
attack is the sandbox around node (limits, namespaces, uid, cgroup), as for Python; the default
runner's permission model is a second fence, tested on its own.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from metrics import _sandbox
from metrics._sandbox import Limits, node_runner, run_program
from metrics.humaneval import PASS_CODE

from .test_sandbox import _processes_with, as_root

BARE = node_runner(permissions=False)  # the sandbox alone
FENCED = node_runner()  # and node's permission model inside it
GENEROUS = Limits(timeout_s=20)  # none of these loops: the time is for a busy machine


def run(source: str, limits: Limits = GENEROUS, runner=BARE):
    return run_program(source, limits, PASS_CODE, runner)


def test_a_program_passes_only_by_ending_and_reports_its_exit():
    assert run("console.log('hi')").status == "passed"
    later = run("setTimeout(() => console.log('later'), 50)")
    assert later.status == "passed" and "later" in later.output  # its event loop ran empty
    exited = run("process.exit(3)")
    assert exited.status == "failed" and exited.returncode == 3
    for cheat in (
        f"process.exit({PASS_CODE})",
        f"setTimeout(() => process.exit({PASS_CODE}), 10)",
        "process.exitCode = 1",
        "setTimeout(() => { throw new Error('late') }, 10)",
        "Promise.reject(new Error('unhandled'))",
        "process.kill(process.pid, 'SIGKILL')",
        # Replacing what the runner uses afterwards changes nothing: it took them beforehand.
        "require('fs').writeSync = () => 0; process.exit = () => {}; process.exitCode = 2",
    ):
        assert run(cheat).status == "failed", cheat


def test_an_infinite_loop_is_stopped_at_the_timeout():
    for source in ("while (true) {}", "setInterval(() => {}, 10)"):
        start = time.monotonic()
        outcome = run(source, Limits(timeout_s=1.5))
        assert outcome.status == "timeout", source
        assert time.monotonic() - start < 30  # 1.5 s and the kill, on however busy a machine


def test_allocating_50_gb_is_stopped():
    # In 1 GB buffers, outside V8's heap: one Buffer of 50 GB is over node's own maximum.
    source = (
        "const blocks = [];\n"
        "for (let i = 0; i < 50; i++) blocks.push(Buffer.alloc(2**30, 1));\n"
        "console.log('allocated')\n"
    )
    outcome = run(source, Limits(timeout_s=60))
    assert outcome.status == "failed" and "allocated" not in outcome.output
    # Refused at the address space limit, or killed at the cgroup's.
    assert "allocation failed" in outcome.output or outcome.returncode == -9, outcome


def test_filling_the_heap_is_stopped_at_the_memory_limit():
    source = "const held = [];\nfor (;;) held.push(new Array(1e6).fill(1.5));\n"
    outcome = run(source, Limits(timeout_s=120, memory_mb=256))
    # V8 gives up at its heap cap (abort), or the cgroup's OOM killer comes first.
    assert outcome.status == "failed" and outcome.returncode < 0, outcome


def test_node_starts_within_its_address_space_and_the_heap_is_capped():
    source = (
        "const v8 = require('v8');\n"
        "console.log('heap_mb', v8.getHeapStatistics().heap_size_limit / 2**20);\n"
        "console.log(require('fs').readFileSync('/proc/self/limits', 'utf8'));\n"
    )
    outcome = run(source, Limits(memory_mb=300))
    assert outcome.status == "passed", outcome.output
    heap_mb = float(outcome.output.split("heap_mb", 1)[1].split()[0])
    assert 250 <= heap_mb <= 400  # --max-old-space-size=300, plus V8's young generation
    address = next(line for line in outcome.output.splitlines() if "address space" in line)
    assert str((300 + _sandbox.NODE_RESERVED_MB) * 2**20) in address


def test_two_hundred_sleeping_children_leave_none_behind():
    marker = f"71.{uuid.uuid4().int % 10**6}"
    source = f"""
const cp = require("child_process");
let spawned = 0;
for (let i = 0; i < 200; i++) {{
  try {{
    const child = cp.spawn("sleep", ["{marker}"], {{ detached: i % 2 === 1, stdio: "ignore" }});
    child.on("error", () => {{}});
    child.unref();
    spawned += 1;
  }} catch (error) {{}}
}}
console.log("spawned", spawned);
"""
    outcome = run(source, Limits(timeout_s=5))
    assert "spawned" in outcome.output or outcome.status == "timeout"
    deadline = time.monotonic() + 30
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_with(marker) == []


def test_the_permission_model_refuses_child_processes_workers_and_writes():
    attacks = {
        "ChildProcess": "require('child_process').execSync('true')",
        "WorkerThreads": "new (require('worker_threads').Worker)('1', { eval: true })",
        "FileSystemWrite": "require('fs').writeFileSync('litter.txt', 'x')",
    }
    for permission, attack in attacks.items():
        outcome = run(attack, runner=FENCED)
        assert outcome.status == "failed" and "ERR_ACCESS_DENIED" in outcome.output, attack
        assert permission in outcome.output
    assert run("require('fs').readFileSync(__filename)", runner=FENCED).status == "passed"


@as_root
@pytest.mark.parametrize("runner", [BARE, FENCED], ids=["sandbox", "sandbox+permissions"])
@pytest.mark.parametrize("parent", [Path(__file__).parent, Path("/tmp")])
def test_a_canary_outside_the_sandbox_survives(parent: Path, runner):
    folder = parent / f".adaptbench-canary-{uuid.uuid4().hex}"
    folder.mkdir()
    folder.chmod(0o755)  # readable by anyone, as most files are: only writing is refused
    canary = folder / "canary.txt"
    canary.write_text("still here")
    canary.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    path, where = str(canary), str(folder)
    attacks = [
        f"require('fs').unlinkSync({path!r})",
        f"require('fs').truncateSync({path!r}, 0)",
        f"require('fs').rmSync({where!r}, {{ recursive: true, force: true }})",
        f"require('fs').writeFileSync({path!r}, 'owned')",
        f"require('fs').chmodSync({path!r}, 0o777)",
        f"require('child_process').execSync('rm -rf {where}')",
        f"require('child_process').execSync(': > {path}', {{ shell: '/bin/sh' }})",
    ]
    try:
        for attack in attacks:
            outcome = run(attack, runner=runner)
            # Under /tmp the program sees its own tmpfs, where removing a missing path succeeds.
            hidden = where.startswith(("/tmp/", "/var/tmp/", "/dev/shm/"))
            if not hidden:
                assert outcome.status == "failed", attack
            assert canary.read_text() == "still here", attack
    finally:
        canary.unlink()
        folder.rmdir()


@as_root
def test_no_network_and_no_privileges():
    source = """
console.log("uid", process.getuid());
require("net")
  .connect(22, "127.0.0.1")
  .on("connect", () => console.log("connected"))
  .on("error", (error) => {
    console.log("refused", error.code);
    process.exitCode = 1;
  });
"""
    outcome = run(source)
    assert "uid 0" not in outcome.output and "connected" not in outcome.output
    assert outcome.status == "failed" and "refused" in outcome.output, outcome.output
    interfaces = run("console.log('up', JSON.stringify(require('os').networkInterfaces()))")
    if "netns" in interfaces.isolation:
        assert "up {}" in interfaces.output  # not even loopback is up


@as_root
def test_tmp_is_private_and_small():
    marker = f"adaptbench-litter-{uuid.uuid4().hex}"
    source = f"""
const fs = require("fs");
fs.writeFileSync("/tmp/{marker}", "x");
console.log(JSON.stringify(fs.readdirSync("/tmp").sort()));
fs.writeFileSync("/tmp/{marker}-big", Buffer.alloc(100 * 2**20, 1));
"""
    outcome = run(source, Limits(timeout_s=20, max_file_mb=200))
    assert not (Path("/tmp") / marker).exists()
    assert "ENOSPC" in outcome.output or "EFBIG" in outcome.output or outcome.returncode == -25
    listing = outcome.output.splitlines()[0]
    assert listing.count("adaptbench") == 2  # its own folder and the marker only


def test_a_program_cannot_see_the_harness_or_its_neighbours():
    source = f"""
const fs = require("fs");
const seen = fs.readdirSync("/proc").filter((name) => /^\\d+$/.test(name));
console.log("processes", seen.length, "harness", fs.existsSync("/proc/{os.getpid()}"));
console.log("parent", process.ppid);
"""
    outcome = run(source)
    if "pidns" not in outcome.isolation:
        pytest.skip(f"no PID namespace on this machine ({outcome.isolation})")
    assert outcome.status == "passed", outcome.output
    assert "harness false" in outcome.output and "parent 1" in outcome.output


def test_the_memory_of_the_whole_program_is_bounded():
    if "cgroup-memory" not in _sandbox.isolation():
        pytest.skip(f"no memory cgroup can be made here ({_sandbox.isolation()})")
    # Four node children of 400 MB each: each is under its own address space limit, together
    # they are over the program's 1 GB.
    child = "const b = Buffer.alloc(400 * 2**20, 1); setTimeout(() => {}, 30000);"
    source = f"""
const cp = require("child_process");
const children = [];
for (let i = 0; i < 4; i++) {{
  children.push(cp.spawn(process.execPath, ["-e", {child!r}], {{ stdio: "ignore" }}));
}}
setTimeout(() => {{
  let held = 0;
  for (const c of children) {{
    try {{
      const status = require("fs").readFileSync(`/proc/${{c.pid}}/status`, "utf8");
      held += Number(status.split("VmRSS:")[1].trim().split(/\\s+/)[0]);
    }} catch (error) {{}}
  }}
  console.log("held_mb", Math.floor(held / 1024));
  process.exit(0);
}}, 8000);
"""
    outcome = run(source, Limits(timeout_s=30))
    assert "held_mb" in outcome.output, outcome.output
    held_mb = int(outcome.output.split("held_mb", 1)[1].split()[0])
    # With a limit per process all 4 hold their 400 MB; here a child at the limit is killed or
    # waits for memory, so what they hold together stays under it.
    assert 300 <= held_mb <= 1024, outcome.output


def test_without_a_memory_cgroup_node_is_one_process(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(_sandbox, "_cgroup_parent", lambda: None)
    ran = run("console.log('threads ok')", runner=FENCED)
    assert "single-process" in ran.isolation and "cgroup-memory" not in ran.isolation
    assert ran.status == "passed", ran.output  # its threads fit under the task limit
    refused = run("require('child_process').execSync('true')", runner=FENCED)
    assert refused.status == "failed" and "ERR_ACCESS_DENIED" in refused.output
    too_big = run("const b = Buffer.alloc(2 * 2**30, 1)", runner=FENCED)
    assert too_big.status == "failed"


NOT_ROOT = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("sandbox", sys.argv[1])
sandbox = importlib.util.module_from_spec(spec)
sys.modules["sandbox"] = sandbox
spec.loader.exec_module(sandbox)
if sys.argv[2] == "refused":  # as on a kernel that refuses unprivileged user namespaces
    sandbox._BOOTSTRAP_CODE = sandbox._BOOTSTRAP_CODE.replace("libc.unshare(", "(lambda f: -1)(")
runner = sandbox.node_runner()
def run(source, timeout_s=20):
    return sandbox.run_program(source, sandbox.Limits(timeout_s), 73, runner)
stuck = run("while (true) {}", 1.5)
print(json.dumps({
    "ran": run("console.log('hi')").status,
    "exit": run("process.exit(0)").status,
    "failed": run("throw new Error('no')").status,
    "stuck": stuck.status,
    "isolation": stuck.isolation,
}))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists("/usr/bin/python3"),
    reason="runs the sandbox as nobody: needs root, setpriv and /usr/bin/python3",
)
@pytest.mark.parametrize("user_namespaces", ["allowed", "refused"])
def test_not_as_root_node_still_runs_and_grades_honestly(user_namespaces: str):
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)  # readable by nobody, wherever this checkout lives
        module = Path(folder) / "sandbox.py"
        shutil.copy(_sandbox.__file__, module)
        os.chmod(module, 0o644)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        done = subprocess.run(
            [*nobody, "/usr/bin/python3", "-c", NOT_ROOT, str(module), user_namespaces],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=300,
            env={"PATH": "/usr/bin:/bin", "TMPDIR": "/tmp"},
        )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.splitlines()[-1])
    assert (results["ran"], results["exit"], results["failed"]) == ("passed", "failed", "failed")
    assert results["stuck"] == "timeout"
    features = results["isolation"].split(",")
    assert "same-uid" in features and "single-process" in features  # node's threads fit in it
