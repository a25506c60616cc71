"""Any PEFT adapter (IA3, DoRA, AdaLoRA, prefix tuning, ...) from its PEFT config, no new code."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peft import PeftModel, PeftType, get_peft_config, get_peft_model
from torch import nn

from core.errors import UsageError
from core.families import family_of
from methods import Method, register

# PEFT's task type for a config that names none: how PEFT wraps the model (and its generate).
TASK_TYPES = {"t5": "SEQ_2_SEQ_LM", "llama": "CAUSAL_LM", "gpt2": "CAUSAL_LM"}


@dataclass
class PeftAdapterSettings:
    # A PEFT config as JSON: a file (as `PeftConfig.save_pretrained` writes, adapter_config.json,
    # or the folder holding it) or an inline string, e.g. '{"peft_type": "IA3", "target_modules":
    # ["k", "v", "wo"], "feedforward_modules": ["wo"]}'. Without a task type, the model's family
    # gives it at apply (TASK_TYPES), so one config serves T5 and decoder-only bases alike.
    config_file: str = field(
        default="", metadata={"help": "path to a PEFT adapter_config.json (or its folder)"}
    )
    config_json: str = field(default="", metadata={"help": "a PEFT config as inline JSON"})

    def __post_init__(self) -> None:
        # A config that PEFT itself refuses stops the run before any model loads; whether its
        # target modules exist can only be told on the model, at apply.
        if self.config_file or self.config_json:
            peft_config(PeftAdapter.read_config(self))


def _line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text.strip("'\"")


def peft_config(values: dict[str, Any]) -> Any:
    """PEFT's config object for `values`, or a one-line error naming what PEFT refused."""
    kind = str(values.get("peft_type", ""))
    known = sorted(p.value for p in PeftType)
    if kind.upper() not in known:
        raise UsageError(f"method peft: unknown peft_type {kind!r}; PEFT knows {', '.join(known)}")
    values = {**values, "peft_type": kind.upper()}
    try:
        return get_peft_config(values)
    except (TypeError, ValueError, KeyError) as err:
        raise UsageError(f"method peft: invalid PEFT config: {_line(err)}") from None


@register
class PeftAdapter(Method):
    """A generic method: whatever PEFT adapter the config describes."""

    name = "peft"
    Config = PeftAdapterSettings
    in_default_suite = False  # needs a config: there is no sensible default adapter

    def peft_config_dict(self) -> dict[str, Any]:
        return self.read_config(self.config)

    @staticmethod
    def read_config(settings: PeftAdapterSettings) -> dict[str, Any]:
        """The PEFT config's values from the file or the inline JSON, ready for PEFT."""
        if bool(settings.config_file) == bool(settings.config_json):
            raise UsageError(
                "method peft needs exactly one of method.config_file=<adapter_config.json> or "
                'method.config_json=\'{"peft_type": "IA3", ...}\''
            )
        try:
            if settings.config_file:
                path = Path(settings.config_file)
                if path.is_dir():
                    path = path / "adapter_config.json"
                values = json.loads(path.read_text())
            else:
                values = json.loads(settings.config_json)
        except (OSError, json.JSONDecodeError) as err:
            raise UsageError(f"method peft: cannot read the PEFT config: {err}") from None
        if not isinstance(values, dict) or "peft_type" not in values:
            raise UsageError("method peft: the PEFT config must be a JSON object with 'peft_type'")
        # A config saved from a model loaded for inference says so; here the adapter trains.
        values["inference_mode"] = False
        return values

    def apply(self, model: nn.Module) -> nn.Module:
        values = self.peft_config_dict()
        values.setdefault("task_type", TASK_TYPES[family_of(model, "method peft's base").name])
        config = peft_config(values)
        try:
            return get_peft_model(model, config)
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            # NoMatchingPeftModuleError (target modules not in the model) is a ValueError.
            raise UsageError(
                f"method peft: PEFT refuses this config on the model: {_line(err)}"
            ) from None

    def merge(self, model: nn.Module) -> nn.Module:
        """PEFT's `merge_and_unload` (in place) where the adapter has one (LoRA, DoRA, IA3, ...)."""
        if not isinstance(model, PeftModel):
            raise TypeError("merge expects the model returned by apply")
        if not hasattr(model, "merge_and_unload"):  # prompt learning: virtual tokens, no weights
            kind = self.peft_config_dict()["peft_type"]
            raise NotImplementedError(f"a {kind} PEFT adapter cannot be merged into the base")
        return model.merge_and_unload()

    def config_dict(self) -> dict[str, Any]:
        """The settings with the PEFT config inline: logged runs and saved models then rebuild
        the same adapter through `get_method` without the original file."""
        try:
            resolved = json.dumps(self.peft_config_dict(), sort_keys=True)
        except UsageError:
            return super().config_dict()
        return {"config_file": "", "config_json": resolved}
