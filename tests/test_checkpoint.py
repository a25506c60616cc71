"""Checkpoints: a resumed training equals an uninterrupted one; bad checkpoints are skipped."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from benchmark.checkpoint import Checkpointer
from benchmark.config import TrainConfig
from benchmark.training import make_accelerator, train
from tests.test_training import features, tiny_model

# 40 examples in batches of 4, 2 steps per optimizer step: 5 steps an epoch, 10 in all.
CONFIG = dict(
    epochs=2, batch_size=4, grad_accum_steps=2, learning_rate=3e-3, warmup_ratio=0.2, seed=3
)


def run_training(folder: Path | None, every: int = 2, keep: int = 20):
    """Train the tiny model; returns (its final weights, the loss of every step, the result)."""
    config = TrainConfig(**CONFIG)
    accelerator = make_accelerator(config)
    torch.manual_seed(0)  # dropout draws, as the runner's set_seed fixes them
    model = tiny_model()
    losses: dict[int, float] = {}

    def log(values: dict[str, float], step: int) -> None:
        if "train/loss" in values:
            losses[step] = values["train/loss"]

    checkpointer = Checkpointer(folder, every, keep, accelerator) if folder else None
    result = train(
        model, features(40), features(6, seed=1), 0, config, accelerator, log, "t", checkpointer
    )
    return {k: v.clone() for k, v in model.state_dict().items()}, losses, result


def test_resumed_training_matches_an_uninterrupted_one(tmp_path: Path):
    weights, losses, result = run_training(tmp_path / "full")
    # Epoch ends (steps 5 and 10) and every 2 steps in between (2, 4, 7 is not a multiple).
    saved = sorted(p.name for p in (tmp_path / "full").glob("step-*"))
    assert saved == [f"step-{n:08d}" for n in (2, 4, 5, 6, 8, 10)]
    state = json.loads((tmp_path / "full" / "step-00000006" / "state.json").read_text())
    assert (state["epoch"], state["batch"], state["step"]) == (1, 2, 6)  # mid-epoch position
    for step in (4, 6):  # mid-epoch (within epoch 0, within epoch 1, after an epoch end)
        resume_dir = tmp_path / f"resume-{step}"
        resume_dir.mkdir()
        shutil.copytree(tmp_path / "full" / f"step-{step:08d}", resume_dir / f"step-{step:08d}")
        resumed, resumed_losses, resumed_result = run_training(resume_dir)
        assert resumed_result.resumed_from_step == step
        assert sorted(resumed_losses) == list(range(step + 1, 11))  # only the steps not done
        for key, value in resumed_losses.items():
            assert value == losses[key]
        for name, tensor in weights.items():
            assert torch.equal(resumed[name], tensor), name
        assert resumed_result.examples_seen == result.examples_seen == 80
        assert resumed_result.val_losses == result.val_losses
    # Without checkpoints the numbers are the same: saving changes nothing.
    plain, plain_losses, _ = run_training(None)
    assert plain_losses == losses
    assert all(torch.equal(plain[k], v) for k, v in weights.items())


def test_only_the_last_checkpoints_are_kept(tmp_path: Path):
    run_training(tmp_path, every=1, keep=3)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == [f"step-{n:08d}" for n in (8, 9, 10)]


def test_a_corrupt_or_incomplete_checkpoint_falls_back_to_the_one_before(tmp_path: Path, caplog):
    run_training(tmp_path, every=2, keep=20)
    checkpointer = Checkpointer(tmp_path, 2, 20)
    assert checkpointer.latest().step == 10
    # A truncated weights file: the checksum no longer matches.
    weights = tmp_path / "step-00000010" / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    # A write that never finished: no manifest.
    (tmp_path / "step-00000008" / "manifest.json").unlink()
    with caplog.at_level(logging.WARNING, logger="adaptbench"):
        found = checkpointer.latest()
    assert found.step == 6
    assert "does not match its checksum" in caplog.text
    assert "no manifest" in caplog.text
    # Training resumes from the usable one and still reproduces the uninterrupted weights.
    full, _, _ = run_training(tmp_path / "reference", every=0)
    resumed, losses, result = run_training(tmp_path)
    assert result.resumed_from_step == 6
    assert all(torch.equal(resumed[k], v) for k, v in full.items())


def test_no_checkpoint_means_a_fresh_start(tmp_path: Path):
    (tmp_path / ".tmp-step-00000004").mkdir()  # an interrupted write is ignored
    _, losses, result = run_training(tmp_path)
    assert result.resumed_from_step == 0
    assert sorted(losses) == list(range(1, 11))


def test_resume_needs_the_same_settings_and_existing_checkpoints(tmp_path: Path, monkeypatch):
    import pytest

    from benchmark.config import UsageError, make_config
    from benchmark.resume import progress_for as _progress

    monkeypatch.chdir(tmp_path)
    config = make_config("lora", "demo")
    progress = _progress(config, "run123", resume=False)
    assert progress.root == Path("checkpoints") / "run123"
    assert (progress.root / "config.json").is_file()
    assert _progress(config, "run123", resume=True).resumed
    changed = make_config("lora", "demo", {"train.epochs": "5", "method.r": "4"})
    with pytest.raises(UsageError, match=r"method_options .*train\.epochs \(was 2, now 5\)"):
        _progress(changed, "run123", resume=True)
    with pytest.raises(UsageError, match="no checkpoints of run other"):
        _progress(config, "other", resume=True)
    no_checkpoints = make_config("lora", "demo", {"train.checkpoint_dir": ""})
    with pytest.raises(UsageError, match="--resume needs checkpoints"):
        _progress(no_checkpoints, "run123", resume=True)
