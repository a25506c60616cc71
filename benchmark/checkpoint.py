"""Training checkpoints: trainable weights, optimiser, scheduler, RNG states and data position.

One folder per checkpoint, `step-<N>`, under a language's checkpoint folder. A checkpoint is
written to a hidden temporary folder, its `manifest.json` (the sha256 of every file) last, then
renamed into place: a folder without a manifest, or whose files do not match it, is incomplete or
corrupt and is skipped, with a warning, in favour of the one before. Only the last `keep` are kept.

With several processes every rank writes its own RNG state; the main process writes the rest (the
trainable weights and optimiser state are the same on every rank after the gradients are
averaged). The folder must be on a file system every process sees.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import nn

from benchmark import distributed

log = logging.getLogger("adaptbench")

MANIFEST = "manifest.json"


@dataclass
class Checkpoint:
    path: Path
    state: dict[str, Any]  # position and counters, as `train` wrote them

    @property
    def step(self) -> int:
        return int(self.state["step"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes, by name (frozen base weights are not saved)."""
    return {
        name: p.detach().cpu().contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Saves and finds the checkpoints of one training (one language of one run)."""

    def __init__(
        self, directory: Path, every: int, keep: int, accelerator: Accelerator | None = None
    ) -> None:
        self.directory = Path(directory)
        self.every = every
        self.keep = max(1, keep)
        self.accelerator = accelerator

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def save(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        state: dict[str, Any],
    ) -> Path:
        """Write a checkpoint of the current training state; every process must call it."""
        acc = self.accelerator
        final = self.directory / f"step-{state['step']:08d}"
        tmp = self.directory / f".tmp-step-{state['step']:08d}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        torch.save(rng_state(), tmp / f"rng-{acc.process_index}.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_file(
                trainable_state(acc.unwrap_model(model, keep_torch_compile=False)),
                tmp / "trainable.safetensors",
            )
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            (tmp / "state.json").write_text(
                json.dumps({**state, "num_processes": acc.num_processes}, indent=2)
            )
            files = sorted(p.name for p in tmp.iterdir())
            manifest = {name: _sha256(tmp / name) for name in files}
            with (tmp / MANIFEST).open("w") as fh:
                json.dump(manifest, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            self._prune()
        acc.wait_for_everyone()
        return final

    def _prune(self) -> None:
        found = sorted(self.directory.glob("step-*"))
        for old in found[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def _verify(self, path: Path) -> str:
        """Empty when `path` is a complete checkpoint, else what is wrong with it."""
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            return "no manifest (the write did not finish)"
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            return f"unreadable manifest ({err})"
        for name, digest in manifest.items():
            file = path / name
            if not file.is_file():
                return f"{name} is missing"
            if _sha256(file) != digest:
                return f"{name} does not match its checksum"
        rank = distributed.state().process_index
        if not (path / f"rng-{rank}.pt").is_file():
            return f"no RNG state for process {rank}"
        return ""

    def latest(self) -> Checkpoint | None:
        """The newest complete checkpoint; incomplete or corrupt ones are skipped with a warning."""
        for path in sorted(self.directory.glob("step-*"), reverse=True):
            problem = self._verify(path)
            if problem:
                log.warning("checkpoint %s is unusable: %s; trying the one before", path, problem)
                continue
            return Checkpoint(path, json.loads((path / "state.json").read_text()))
        return None

    def restore(
        self,
        checkpoint: Checkpoint,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
    ) -> None:
        """Load `checkpoint` into the prepared model, optimiser and scheduler; set the RNGs."""
        saved = checkpoint.state.get("num_processes", 1)
        if saved != self.accelerator.num_processes:
            raise RuntimeError(
                f"checkpoint {checkpoint.path} was written by {saved} process(es), this run has "
                f"{self.accelerator.num_processes}: resume with --num_processes {saved}"
            )
        load_trainable(
            self.accelerator.unwrap_model(model, keep_torch_compile=False), checkpoint.path
        )
        optimizer.load_state_dict(torch.load(checkpoint.path / "optimizer.pt", weights_only=False))
        scheduler.load_state_dict(torch.load(checkpoint.path / "scheduler.pt", weights_only=False))
        rank = self.accelerator.process_index
        set_rng_state(torch.load(checkpoint.path / f"rng-{rank}.pt", weights_only=False))


def load_trainable(model: nn.Module, path: Path) -> None:
    """Copy a checkpoint's trainable weights into `model`; every one must match by name."""
    weights = load_file(path / "trainable.safetensors")
    params = dict(model.named_parameters())
    missing = [name for name in weights if name not in params]
    if missing or len(weights) != sum(p.requires_grad for p in params.values()):
        raise RuntimeError(
            f"checkpoint {path} does not fit this model (unknown weights: {missing[:5]}): was it "
            "written by another method or config?"
        )
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
