"""CodeBLEU (the `codebleu` package): n-gram, weighted n-gram, syntax and data-flow match."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from metrics import Metric, MetricResult, register

WEIGHTS = (0.25, 0.25, 0.25, 0.25)
_PACKAGE = "codebleu"
# The package's data-flow match numbers variables in the iteration order of a set of their
# names, which depends on Python's string hashing: the same pairs score differently from one
# process to the next (JavaScript CodeBLEU moved in the third decimal between two identical
# demo runs). It is computed in a process with this fixed hash seed instead.
HASH_SEED = "0"


def _not_from_codebleu(record: logging.LogRecord) -> bool:
    # The package warns through the root logger, once per pair without reference data flow
    # (thousands of lines for a test set); the number it then uses is documented below.
    return f"{_PACKAGE}{os.sep}" not in record.pathname


logging.getLogger().addFilter(_not_from_codebleu)


def _codebleu(references: list[str], predictions: list[str], language: str) -> float:
    from codebleu import calc_codebleu

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(
                calc_codebleu(references, predictions, lang=language, weights=WEIGHTS)["codebleu"]
            )
        except (ZeroDivisionError, ValueError, IndexError):
            return 0.0  # e.g. an empty prediction: nothing to match


@register
class CodeBleu(Metric):
    """CodeBLEU (Ren et al., 2020) from the `codebleu` package, weights 0.25 each for n-gram,
    weighted n-gram, syntax and data-flow match; corpus = `calc_codebleu` on all pairs,
    per example = `calc_codebleu` on one pair (0-1).

    Kept as the package computes it: whitespace tokens; where no data flow is found in the
    references (or none matches) the package counts the data-flow part as 1. Our changes: an
    empty prediction scores 0 (the package gives it 0.5: empty trees match, data flow counts 1)
    and enters the corpus value as 0; and it runs with string hashing fixed (PYTHONHASHSEED=0,
    in a child process unless this one already has it), so a score does not change from one
    run to the next (see HASH_SEED). The per-pair calls double the cost (about 9 s per 5,000
    pairs on top of the corpus call's 9 s).
    """

    name = "codebleu"
    languages = ("python", "javascript")

    def compute(self, predictions: list[str], references: list[str], language: str) -> MetricResult:
        if sys.flags.hash_randomization == 0:  # started with PYTHONHASHSEED=0
            return compute_here(predictions, references, language)
        return _in_fixed_hash_process(predictions, references, language)

    def signature(self) -> str:
        versions = ",".join(
            f"{p}:{importlib.metadata.version(p)}"
            for p in ("codebleu", "tree-sitter", "tree-sitter-python", "tree-sitter-javascript")
        )
        return f"codebleu|weights:{','.join(map(str, WEIGHTS))}|hashseed:{HASH_SEED}|{versions}"


def per_example_scores(predictions: list[str], references: list[str], language: str) -> list[float]:
    """CodeBLEU of each pair on its own; an empty prediction scores 0."""
    return [
        _codebleu([r], [p], language) if p.strip() else 0.0 for p, r in zip(predictions, references)
    ]


def corpus_score(predictions: list[str], references: list[str], language: str) -> float:
    """CodeBLEU of the corpus, empty predictions entering as 0."""
    # The package scores an empty prediction above zero (its data-flow match defaults to
    # 1): empty predictions count as 0 here, the others enter the corpus computation.
    kept = [(p, r) for p, r in zip(predictions, references) if p.strip()]
    if not kept:
        return 0.0
    share = len(kept) / len(predictions)
    return share * _codebleu([r for _, r in kept], [p for p, _ in kept], language)


def compute_here(predictions: list[str], references: list[str], language: str) -> MetricResult:
    """CodeBLEU in this process (reproducible only where string hashing is fixed)."""
    return MetricResult(
        corpus=corpus_score(predictions, references, language),
        per_example=per_example_scores(predictions, references, language),
    )


def _in_fixed_hash_process(
    predictions: list[str], references: list[str], language: str
) -> MetricResult:
    """`CodeBleu.compute` in child processes whose string hashing is fixed (see HASH_SEED).

    The corpus call and the per-pair calls cost about the same and depend on nothing but their
    inputs, so they run side by side in two children (a core each where there are two): the
    same numbers, about half the wait.
    """
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONHASHSEED": HASH_SEED}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH", "")]))
    request = {"predictions": predictions, "references": references, "language": language}
    with tempfile.TemporaryDirectory(prefix="codebleu-") as work:
        folder = Path(work)
        (folder / "request.json").write_text(json.dumps(request))
        children = {}
        for part in ("corpus", "per_example"):
            # Files, not pipes, for everything a child writes: neither can block on a full pipe
            # while this process waits for the other.
            with (
                (folder / f"{part}.out").open("w") as out,
                (folder / f"{part}.err").open("w") as err,
            ):
                children[part] = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "metrics.codebleu_metric",
                        part,
                        str(folder / "request.json"),
                    ],
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    cwd=root,
                    env=env,
                )
        answers = {}
        for part, child in children.items():
            if child.wait() != 0:
                detail = (folder / f"{part}.err").read_text()[-3000:]
                raise RuntimeError(f"CodeBLEU's child process ({part}) failed:\n{detail}")
            answers[part] = json.loads((folder / f"{part}.out").read_text())
    return MetricResult(corpus=answers["corpus"], per_example=answers["per_example"])


if __name__ == "__main__":  # a child process of _in_fixed_hash_process: part, request file
    part, path = sys.argv[1], sys.argv[2]
    request = json.loads(Path(path).read_text())
    args = (request["predictions"], request["references"], request["language"])
    scores = corpus_score if part == "corpus" else per_example_scores
    json.dump(scores(*args), sys.stdout)
