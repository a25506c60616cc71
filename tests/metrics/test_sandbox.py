"""The sandbox that runs generated code, and HumanEval pass@k on top of it."""

from __future__ import annotations

import os
import stat
import time
import uuid
from pathlib import Path

import pytest

from metrics._sandbox import Limits, run_program
from metrics.humaneval import PASS_CODE, evaluate_humaneval, load_problems, pass_at_k, program

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="uid and network isolation need root")


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_program_runs_and_reports_its_exit():
    assert run_program("print('hi')").status == "passed"
    failed = run_program("raise SystemExit(3)")
    assert failed.status == "failed" and failed.returncode == 3


def test_an_infinite_loop_is_stopped_at_the_timeout():
    start = time.monotonic()
    outcome = run_program("while True:\n    pass\n", Limits(timeout_s=1.5))
    assert outcome.status == "timeout"
    assert time.monotonic() - start < 5


def test_allocating_50_gb_is_stopped():
    outcome = run_program("block = bytearray(50 * 2**30)\nprint('allocated')\n")
    assert outcome.status == "failed"
    assert "MemoryError" in outcome.output and "allocated" not in outcome.output


def test_two_hundred_sleeping_children_leave_none_behind():
    marker = f"31.{uuid.uuid4().int % 10**6}"
    source = f"""
import os, subprocess
spawned = 0
for i in range(200):
    try:
        if i % 2:
            subprocess.Popen(["sleep", "{marker}"], start_new_session=bool(i % 4 == 1))
        elif os.fork() == 0:
            os.setsid()
            os.execv("/bin/sleep", ["sleep", "{marker}"])
        spawned += 1
    except (OSError, BlockingIOError):
        pass
print("spawned", spawned)
"""
    outcome = run_program(source, Limits(timeout_s=3))
    assert "spawned" in outcome.output or outcome.status == "timeout"
    time.sleep(0.2)
    assert _processes_with(marker) == []


@as_root
@pytest.mark.parametrize("parent", [Path(__file__).parent, Path("/tmp")])
def test_a_canary_outside_the_sandbox_survives(parent: Path):
    # Beside this file the program could reach it but lacks the rights; in /tmp it finds a
    # tmpfs of its own and cannot even see it.
    folder = parent / f".adaptbench-canary-{uuid.uuid4().hex}"
    folder.mkdir()
    folder.chmod(0o755)  # readable by anyone, as most files are: only writing is refused
    canary = folder / "canary.txt"
    canary.write_text("still here")
    canary.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    path = str(canary)
    attacks = [
        f"import os\nos.remove({path!r})",
        f"import os\nos.truncate({path!r}, 0)",
        f"import shutil\nshutil.rmtree({str(folder)!r})",
        f"open({path!r}, 'w').write('owned')",
        f"import os\nos.chmod({path!r}, 0o777)",
        f"import subprocess\nsubprocess.run(['rm', '-rf', {str(folder)!r}], check=True)",
        f"import subprocess\nsubprocess.run(['sh', '-c', ': > {path}'], check=True)",
    ]
    try:
        for attack in attacks:
            outcome = run_program(attack)
            # Under /tmp the program sees its own tmpfs, where `rm -rf` of a missing path succeeds
            # (this checkout itself may live under /tmp, as a CI clone can).
            hidden = str(folder).startswith(("/tmp/", "/var/tmp/", "/dev/shm/"))
            if not hidden:
                assert outcome.status == "failed", attack
            assert canary.read_text() == "still here", attack
    finally:
        canary.unlink()
        folder.rmdir()


@as_root
def test_no_network_and_no_privileges():
    outcome = run_program(
        "import os, socket\nprint('uid', os.getuid())\n"
        "socket.create_connection(('127.0.0.1', 22), timeout=1)\n"
    )
    assert "uid 0" not in outcome.output
    assert outcome.status == "failed"


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 1, 10) == 1.0
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)


def test_humaneval_canonical_solutions_all_pass_and_prompts_alone_fail():
    problems = load_problems()
    assert len(problems) == 164
    canonical = {p["prompt"]: p["canonical_solution"] for p in problems}
    good = evaluate_humaneval(
        lambda prompts, n: [[canonical[q]] * n for q in prompts],
        num_samples=1,
        ks=(1,),
        mode="completion",
    )
    assert good["pass_at_1"] == 1.0 and good["problems"] == 164
    empty = evaluate_humaneval(
        lambda prompts, n: [[""] * n for _ in prompts], num_samples=1, ks=(1,), mode="completion"
    )
    assert empty["pass_at_1"] == 0.0


def test_function_mode_renames_the_generated_function_to_the_entry_point():
    problem = load_problems(1)[0]
    body = problem["canonical_solution"]
    whole = "def whatever(numbers, threshold):\n" + body
    assert run_program(program(problem, whole, "function"), success_code=PASS_CODE).status == (
        "passed"
    )


def test_exiting_early_with_zero_does_not_pass():
    problem = load_problems(1)[0]
    cheat = "import sys\nsys.exit(0)\n"
    outcome = run_program(program(problem, cheat, "completion"), success_code=PASS_CODE)
    assert outcome.status == "failed" and outcome.returncode == 0


def test_generate_must_return_n_completions_per_prompt():
    with pytest.raises(ValueError, match="must return 2 completions"):
        evaluate_humaneval(lambda prompts, n: [[""] for _ in prompts], num_samples=2, limit=2)


def test_endless_output_is_capped_and_does_not_hang():
    outcome = run_program("while True:\n    print('x' * 1000)\n", Limits(timeout_s=3))
    assert outcome.status == "failed" and len(outcome.output) <= 4000


@as_root
def test_tmp_is_private_and_small():
    marker = f"adaptbench-litter-{uuid.uuid4().hex}"
    source = (
        "import os\n"
        f"open('/tmp/{marker}', 'w').write('x')\n"
        "print(sorted(os.listdir('/tmp')))\n"
        f"open('/tmp/{marker}-big', 'wb').write(b'x' * 100 * 2**20)\n"
    )
    outcome = run_program(source, Limits(max_file_mb=200))
    assert not (Path("/tmp") / marker).exists()
    assert "No space left" in outcome.output or "File too large" in outcome.output
    listing = outcome.output.splitlines()[0]
    assert listing.count("adaptbench") == 2  # its own folder and the marker only
