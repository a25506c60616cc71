"""The served model (models from code): rebuilds base, method and trained weights; generates code.

MLflow loads this file with `mlflow.pyfunc.load_model`, `mlflow models serve` or
`python -m benchmark.serving`; the bundle artifact written by `benchmark.packaging` holds
everything it needs, and is checked against its manifest before anything in it loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

# Bounds on what one request may ask for (a request outside them gets a 400 naming the value).
PARAM_LIMITS = {
    "max_new_tokens": (1, 1024),
    "num_beams": (1, 16),
    "length_penalty": (-10.0, 10.0),
    "temperature": (1e-4, 10.0),
    "top_p": (1e-4, 1.0),
}


def _bad_request(message: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(message)


class AdaptedCodeModel(PythonModel):
    """Generates what its task serves (generation: a function from its docstring) with a base
    model adapted by a benchmark method."""

    def load_context(self, context: Any) -> None:
        from benchmark.packaging import load_bundle

        bundle = Path(context.artifacts["bundle"])
        self.model, self.tokenizer, self.meta = load_bundle(bundle)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        from benchmark.evaluation import generate

        task = self.meta.get("task") or {}  # bundles written before tasks: docstring -> code
        template = task.get("prompt", "{input}")
        prompts = [template.format(input=p) for p in self._prompts(model_input)]
        settings = self._generation_settings(params or {})
        sampling = {}
        if settings["do_sample"]:
            sampling = {
                "do_sample": True,
                "temperature": settings["temperature"],
                "top_p": settings["top_p"],
            }
        codes = generate(
            self.model,
            self.tokenizer,
            prompts,
            self.meta["max_source_length"],
            max_new_tokens=settings["max_new_tokens"],
            num_beams=settings["num_beams"],
            batch_size=self.meta["batch_size"],
            progress=False,
            **sampling,
            length_penalty=settings["length_penalty"],
        )
        return pd.DataFrame({task.get("serves", "code"): codes})

    def _prompts(self, model_input: Any) -> list[str]:
        if isinstance(model_input, pd.DataFrame):
            if "prompt" not in model_input.columns:
                raise _bad_request(
                    "the request has no 'prompt' column: send "
                    '{"dataframe_records": [{"prompt": "Return the sum of a list."}]}'
                )
            prompts = model_input["prompt"].tolist()
        elif isinstance(model_input, dict) and "prompt" in model_input:
            prompts = list(model_input["prompt"])
        elif isinstance(model_input, list):
            prompts = model_input
        else:
            raise _bad_request("send a table with a 'prompt' column (the docstrings)")
        if not prompts:
            raise _bad_request("the request has no rows: send at least one prompt")
        limit = self.meta["max_rows"]
        if len(prompts) > limit:
            raise _bad_request(
                f"the request has {len(prompts)} prompts; this model takes at most {limit} per "
                "request: split it into several requests"
            )
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise _bad_request(
                    f"prompt {i} is {type(prompt).__name__}, not a string: send docstrings as text"
                )
        return prompts

    def _generation_settings(self, params: dict[str, Any]) -> dict[str, Any]:
        # Bundles written before the length penalty was a setting decode with transformers' 1.0.
        # MLflow fills what a request leaves out from the signature's defaults, so a penalty
        # cannot be told apart from the model's own: with one beam it is ignored, not refused.
        settings = {"length_penalty": 1.0, **self.meta["generation"]}
        settings.update({k: v for k, v in params.items() if v is not None})
        for name, (low, high) in PARAM_LIMITS.items():
            value = settings[name]
            if not low <= value <= high:
                raise _bad_request(f"parameter {name}={value!r} is out of range [{low}, {high}]")
        settings["do_sample"] = bool(settings["do_sample"])
        return settings


mlflow.models.set_model(AdaptedCodeModel())
