"""Method plugins: each adapts a base model (of any family in core.families) and says what it
trains.

A method is one module in this package holding a `Method` subclass decorated with `@register`.
Modules are discovered on first use, so adding a method touches no shared code.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from core.errors import UsageError
from core.registry import Registry
from core.settings import build_dataclass

METHODS: Registry[type[Method]] = Registry("method", __name__, lambda cls: cls.name)


def refuse(checks: list[tuple[bool, str]]) -> None:
    """A method setting's range check, for its Config's `__post_init__`: the first failed check's
    message, as a UsageError, so a run or a suite refuses it before anything loads or trains."""
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


class WeightsMismatchError(ValueError):
    """Trained weights that do not fit the base model they are loaded onto."""


class Method:
    """One parameter-efficient method. Subclasses set `name`, `Config` and implement `apply`."""

    name: ClassVar[str]
    Config: ClassVar[type]
    in_default_suite: ClassVar[bool] = True  # run by `suite` when no methods are named

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()

    def apply(self, model: nn.Module) -> nn.Module:
        """Adapt `model` in place or wrap it; afterwards only this method's parameters train."""
        raise NotImplementedError

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold the trained weights into a plain transformers model of the base's class."""
        raise NotImplementedError(f"method {self.name!r} cannot be merged into a plain model")

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def trained_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The parameters this method trains, by name (nothing of the frozen base)."""
        return {
            name: param.detach().cpu().contiguous()
            for name, param in model.named_parameters()
            if param.requires_grad
        }

    def save_trained(self, model: nn.Module, path: str | Path) -> int:
        """Write the trained parameters as safetensors; returns the file size in bytes."""
        save_file(self.trained_state_dict(model), str(path))
        return Path(path).stat().st_size

    def load_trained(self, model: nn.Module, path: str | Path, base_name: str = "") -> nn.Module:
        """Load weights written by `save_trained` onto an already adapted model."""
        weights = load_file(str(path))
        expected = dict(model.named_parameters())
        trained = {n for n, p in expected.items() if p.requires_grad}
        base = base_name or getattr(getattr(model, "config", None), "_name_or_path", "?")
        for name, tensor in weights.items():
            if name not in expected:
                raise WeightsMismatchError(
                    f"method {self.name!r} on base {base!r}: the saved tensor {name!r} has no "
                    "place in the adapted model (another method config or base model?)"
                )
            if tuple(expected[name].shape) != tuple(tensor.shape):
                raise WeightsMismatchError(
                    f"method {self.name!r} on base {base!r}: tensor {name!r} is "
                    f"{tuple(tensor.shape)} in the file but {tuple(expected[name].shape)} in the "
                    "model (another method config or base model?)"
                )
        missing = sorted(trained - set(weights))
        if missing:
            raise WeightsMismatchError(
                f"method {self.name!r} on base {base!r}: the file lacks trained tensor "
                f"{missing[0]!r} ({len(missing)} missing in all)"
            )
        with torch.no_grad():
            for name, tensor in weights.items():
                expected[name].copy_(tensor.to(expected[name].dtype))
        return model


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its `name`."""
    return METHODS.register(cls)


def available() -> list[str]:
    """Names of every registered method, sorted."""
    return METHODS.names()


def method_class(name: str) -> type[Method]:
    return METHODS.get(name)


def get_method(name: str, options: dict[str, Any] | None = None) -> Method:
    """A method instance by name, its config built from `options` (strings are coerced)."""
    cls = method_class(name)
    config = build_dataclass(cls.Config, dict(options or {}), f"method {name!r}")
    return cls(config)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared (tied) tensors are counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total


def describe(model_config_path: str | None = None) -> list[dict[str, Any]]:
    """Every registered method with its config fields and, given a transformers config.json (or
    its folder) of a supported family, its trainable and total parameters on a model of that
    shape (built on the meta device: no weights are made, so a 0.5B config costs nothing)."""
    import copy
    import typing

    import transformers

    from core.families import family_of

    base = None
    if model_config_path:
        config = transformers.AutoConfig.from_pretrained(model_config_path)
        auto_class = getattr(transformers, family_of(config, "--model-config").auto_class)
        with torch.device("meta"):
            base = auto_class.from_config(config)
    rows = []
    for name in available():
        cls = method_class(name)
        hints = typing.get_type_hints(cls.Config)
        fields = [
            {
                "name": f.name,
                "type": _type_name(hints[f.name]),
                "help": f.metadata.get("help", ""),
                "default": f.default
                if f.default is not dataclasses.MISSING
                else f.default_factory(),  # type: ignore[misc]
            }
            for f in dataclasses.fields(cls.Config)
        ]
        row: dict[str, Any] = {
            "name": name,
            "trainable": None,
            "total": None,
            "share": None,
            "fields": fields,
        }
        if base is not None:
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    model = get_method(name).apply(copy.deepcopy(base))
                trainable, total = count_parameters(model)
                row.update(trainable=trainable, total=total, share=trainable / total)
            # A method that needs settings (peft) or does not fit this model cannot be counted.
            except (UsageError, TypeError, ValueError) as err:
                row["note"] = str(err)
        rows.append(row)
    return rows


def _type_name(hint: Any) -> str:
    """`int`, `list[str]`, `float | None`: as a user would write the type."""
    return hint.__name__ if isinstance(hint, type) else str(hint)
