"""The processes of a run, as accelerate sees them (one, unless launched on several).

`accelerate launch --multi_gpu --num_processes N -m benchmark run ...` (or `torchrun`) starts N
processes; on a machine without a GPU they are CPU processes talking over gloo.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list


def state() -> PartialState:
    """accelerate's process state, set up on first use (CPU processes when there is no GPU)."""
    return PartialState(cpu=not torch.cuda.is_available())


def is_main() -> bool:
    """Whether this is the process that talks to MLflow and writes artifacts."""
    return state().is_main_process


def share(value: Any) -> Any:
    """The main process's `value`, on every process."""
    if state().num_processes == 1:
        return value
    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]
