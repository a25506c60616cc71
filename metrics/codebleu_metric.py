"""CodeBLEU (the `codebleu` package): n-gram, weighted n-gram, syntax and data-flow match."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from metrics import Metric, MetricResult, register

WEIGHTS = (0.25, 0.25, 0.25, 0.25)
_PACKAGE = "codebleu"
# The package's data-flow match numbers variables in the iteration order of a set of their
# names, which depends on Python's string hashing: the same pairs score differently from one
# process to the next (JavaScript CodeBLEU moved in the third decimal between two identical
# demo runs). It is computed in a process with this fixed hash seed instead.
HASH_SEED = "0"
# The package's own BLEU weights for its two n-gram parts (calc_codebleu leaves them default).
NGRAM_WEIGHTS = (0.25, 0.25, 0.25, 0.25)
# What the package raises on a pair it cannot score (a string that is not UTF-8 encodable, for
# one): the pair scores 0, and so does a corpus holding it (the whole call fails).
FAILURES = (ZeroDivisionError, ValueError, IndexError)

# One pair's row of counts (`pair_statistics`), the package's running totals in calc_codebleu.
KEPT, FAILED = 0, 1  # a non-empty prediction; the package fails on the pair
NGRAM = 2  # matches for orders 1-4, hypothesis n-grams 1-4, hypothesis and reference length
WEIGHTED = 12  # the same for the keyword-weighted n-gram recall (reference length: see below)
SYNTAX = 22  # reference subtrees found in the prediction, reference subtrees
DATAFLOW = 24  # reference data flows matched, reference data flows
COLUMNS = 26


def _not_from_codebleu(record: logging.LogRecord) -> bool:
    # The package warns through the root logger, once per pair without reference data flow
    # (thousands of lines for a test set); the number it then uses is documented below.
    return f"{_PACKAGE}{os.sep}" not in record.pathname


logging.getLogger().addFilter(_not_from_codebleu)


@register
class CodeBleu(Metric):
    """CodeBLEU (Ren et al., 2020) from the `codebleu` package, weights 0.25 each for n-gram,
    weighted n-gram, syntax and data-flow match; corpus = what `calc_codebleu` gives on all
    pairs, per example = what it gives on one pair (0-1).

    Kept as the package computes it: whitespace tokens; where no data flow is found in the
    references (or none matches) the package counts the data-flow part as 1. Our changes: an
    empty prediction scores 0 (the package gives it 0.5: empty trees match, data flow counts 1)
    and enters the corpus value as 0; and it runs with string hashing fixed (PYTHONHASHSEED=0,
    in child processes unless this one already has it), so a score does not change from one
    run to the next (see HASH_SEED).

    `calc_codebleu`'s corpus value is a function of counts summed over the pairs, so each pair
    is parsed and matched once, by the package's own functions (`pair_statistics`), and both
    values are scored from those counts; the pairs are shared between child processes, one a
    core. The numbers are those of `calc_codebleu` called on the corpus and on each pair, to
    the last bit (tests/metrics/test_metrics.py checks it on real pairs).
    """

    name = "codebleu"
    languages = ("python", "javascript")

    def compute(self, predictions: list[str], references: list[str], language: str) -> MetricResult:
        if sys.flags.hash_randomization == 0:  # started with PYTHONHASHSEED=0
            return compute_here(predictions, references, language)
        return scored(_in_fixed_hash_processes(predictions, references, language))

    def signature(self) -> str:
        versions = ",".join(
            f"{p}:{importlib.metadata.version(p)}"
            for p in ("codebleu", "tree-sitter", "tree-sitter-python", "tree-sitter-javascript")
        )
        return f"codebleu|weights:{','.join(map(str, WEIGHTS))}|hashseed:{HASH_SEED}|{versions}"


def column_sums(rows: list[list[float]]) -> list[float]:
    """Each column summed over the rows in their order, from 0, as the package accumulates its
    totals pair after pair (the weighted counts are floats: the order is kept to the last bit)."""
    totals: list[float] = [0] * COLUMNS
    for row in rows:
        for column, value in enumerate(row):
            totals[column] += value
    return totals


def _bleu(counts: Sequence[float], module) -> float:
    """The end of the package's `corpus_bleu` (in `module`: its bleu or weighted_ngram_match) on
    summed counts: brevity penalty, 0 without unigram matches, smoothing method 1, geometric
    mean of the n-gram precisions."""
    matches, possible = counts[0:4], counts[4:8]
    hyp_len, ref_len = counts[8], counts[9]
    penalty = module.brevity_penalty(ref_len, hyp_len)
    if matches[0] == 0:
        return 0
    precisions = module.SmoothingFunction().method1(list(zip(matches, possible)))
    logs = (w * math.log(p[0] / p[1]) for w, p in zip(NGRAM_WEIGHTS, precisions))
    return penalty * math.exp(math.fsum(logs))


def score(totals: Sequence[float], count: int) -> float:
    """CodeBLEU of `count` pairs from their summed `pair_statistics` (one pair: its row): what
    `calc_codebleu` gives on the non-empty ones, scaled by their share (0 when it would fail)."""
    from codebleu import bleu, weighted_ngram_match

    if not totals[KEPT] or totals[FAILED]:
        return 0.0
    ngram = _bleu(totals[NGRAM : NGRAM + 10], bleu)
    weighted = _bleu(totals[WEIGHTED : WEIGHTED + 10], weighted_ngram_match)
    syntax = totals[SYNTAX] / totals[SYNTAX + 1]
    flows = totals[DATAFLOW + 1]
    dataflow = totals[DATAFLOW] / flows if flows else 0
    alpha, beta, gamma, theta = WEIGHTS
    value = alpha * ngram + beta * weighted + gamma * syntax + theta * (dataflow or 1)
    return totals[KEPT] / count * float(value)


class _Parsed:
    """Stands in for the tree-sitter parser the package's `get_data_flow` is given: it answers
    with the tree already parsed from the same code for the syntax match (the same tree)."""

    def __init__(self, tree) -> None:
        self.tree = tree

    def parse(self, source: bytes):
        return self.tree


def _subtrees(root) -> list[str]:
    """The s-expression of every subtree with children, the root's always (the package's
    syntax match compares these)."""
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        found.append(str(node))
        stack.extend(child for child in node.children if child.child_count)
    return found


class _Scorer:
    """One language's fixed parts: the parser, the keywords, the data-flow extractor."""

    def __init__(self, language: str) -> None:
        from codebleu import dataflow_match
        from codebleu.codebleu import PACKAGE_DIR
        from codebleu.utils import get_tree_sitter_language
        from tree_sitter import Parser

        self.language = language
        self.parser = Parser(get_tree_sitter_language(language))
        with open(PACKAGE_DIR / "keywords" / f"{language}.txt", encoding="utf-8") as f:
            self.keywords = {line.strip() for line in f.readlines()}  # as calc_codebleu reads them
        self.data_flow = dataflow_match.dfg_function[language]

    def without_comments(self, code: str) -> str:
        from codebleu.parser import remove_comments_and_docstrings

        try:
            return remove_comments_and_docstrings(code, self.language)
        except Exception:  # the package's own fallback: the code as it is
            return code

    def pair(self, prediction: str, reference: str) -> list[float]:
        """`pair_statistics` of one pair."""
        from codebleu import bleu, weighted_ngram_match

        row: list[float] = [0] * COLUMNS
        if not prediction.strip():
            return row
        row[KEPT] = 1
        hypothesis, reference = prediction.strip(), reference.strip()
        hyp, ref = hypothesis.split(), reference.split()
        try:
            for n in range(1, 5):
                row[NGRAM + n - 1], row[NGRAM + 3 + n] = bleu.modified_precision([ref], hyp, n)
            row[NGRAM + 8] = len(hyp)
            row[NGRAM + 9] = bleu.closest_ref_length([ref], len(hyp))
            weighted_ref = [[ref, {t: 1 if t in self.keywords else 0.2 for t in ref}]]
            for n in range(1, 5):
                row[WEIGHTED + n - 1], row[WEIGHTED + 3 + n] = weighted_ngram_match.modified_recall(
                    weighted_ref, hyp, n
                )
            row[WEIGHTED + 8] = len(hyp)
            # The package's closest_ref_length here measures the [tokens, weights] pair: 2.
            row[WEIGHTED + 9] = weighted_ngram_match.closest_ref_length(weighted_ref, len(hyp))
            row[SYNTAX : DATAFLOW + 2] = self.structure(hypothesis, reference)
        except FAILURES:
            row[FAILED] = 1
        return row

    def structure(self, hypothesis: str, reference: str) -> list[int]:
        """Syntax match (reference subtrees found in the prediction's) and data-flow match
        (reference flows matched, each prediction flow once), as the package counts them."""
        from codebleu.dataflow_match import get_data_flow, normalize_dataflow

        candidate, reference = self.without_comments(hypothesis), self.without_comments(reference)
        candidate_tree = self.parser.parse(bytes(candidate, "utf8"))
        reference_tree = self.parser.parse(bytes(reference, "utf8"))
        in_candidate = set(_subtrees(candidate_tree.root_node))
        reference_subtrees = _subtrees(reference_tree.root_node)
        found = sum(subtree in in_candidate for subtree in reference_subtrees)

        def flows(code: str, tree) -> Counter:
            normalised = normalize_dataflow(get_data_flow(code, [_Parsed(tree), self.data_flow]))
            return Counter(
                (name, relation, tuple(parents)) for name, relation, parents in normalised
            )

        candidate_flows = flows(candidate, candidate_tree)
        reference_flows = flows(reference, reference_tree)
        matched = sum((candidate_flows & reference_flows).values())
        return [found, len(reference_subtrees), matched, sum(reference_flows.values())]


def pair_statistics(prediction: str, reference: str, language: str) -> list[float]:
    """One pair's counts, the running totals of the package's `calc_codebleu` (columns: KEPT,
    FAILED, NGRAM, WEIGHTED, SYNTAX, DATAFLOW); reproducible only where string hashing is
    fixed (the data-flow part)."""
    return _Scorer(language).pair(prediction, reference)


def statistics_here(
    predictions: list[str], references: list[str], language: str
) -> list[list[float]]:
    """`pair_statistics` of every pair, in this process."""
    scorer = _Scorer(language)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [scorer.pair(p, r) for p, r in zip(predictions, references)]


def scored(rows: list[list[float]]) -> MetricResult:
    """The corpus value and each pair's from the pairs' `pair_statistics` rows."""
    return MetricResult(
        corpus=score(column_sums(rows), len(rows)), per_example=[score(row, 1) for row in rows]
    )


def compute_here(predictions: list[str], references: list[str], language: str) -> MetricResult:
    """CodeBLEU in this process (reproducible only where string hashing is fixed)."""
    return scored(statistics_here(predictions, references, language))


def _workers(pairs: int) -> int:
    """Child processes for `pairs` pairs: one a core, at least 200 pairs each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, pairs // 200))


def _in_fixed_hash_processes(
    predictions: list[str], references: list[str], language: str
) -> list[list[float]]:
    """`pair_statistics` of every pair, computed in child processes whose string hashing is
    fixed (see HASH_SEED), each taking every k-th pair (similar shares of long and short code)."""
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONHASHSEED": HASH_SEED}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH", "")]))
    workers = _workers(len(predictions))
    with tempfile.TemporaryDirectory(prefix="codebleu-") as work:
        folder = Path(work)
        children = []
        for k in range(workers):
            request = {
                "predictions": predictions[k::workers],
                "references": references[k::workers],
                "language": language,
            }
            (folder / f"{k}.json").write_text(json.dumps(request))
            # Files, not pipes, for everything a child writes: none can block on a full pipe
            # while this process waits for another.
            with (folder / f"{k}.out").open("w") as out, (folder / f"{k}.err").open("w") as err:
                children.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "metrics.codebleu_metric",
                            str(folder / f"{k}.json"),
                        ],
                        stdout=out,
                        stderr=err,
                        stdin=subprocess.DEVNULL,
                        cwd=root,
                        env=env,
                    )
                )
        shares = []
        for k, child in enumerate(children):
            if child.wait() != 0:
                detail = (folder / f"{k}.err").read_text()[-3000:]
                raise RuntimeError(f"CodeBLEU's child process {k} of {workers} failed:\n{detail}")
            shares.append(json.loads((folder / f"{k}.out").read_text()))
    rows: list[list[float]] = [[]] * len(predictions)
    for k, share in enumerate(shares):
        rows[k::workers] = share
    return rows


if __name__ == "__main__":  # a child process of _in_fixed_hash_processes: its request file
    request = json.loads(Path(sys.argv[1]).read_text())
    args = (request["predictions"], request["references"], request["language"])
    json.dump(statistics_here(*args), sys.stdout)
