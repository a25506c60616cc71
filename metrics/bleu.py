"""Corpus BLEU on code tokens (sacrebleu), with per-example sentence BLEU."""

from __future__ import annotations

from collections.abc import Sequence

import sacrebleu
from sacrebleu.metrics import BLEU

from metrics import Metric, MetricResult, register
from metrics._text import code_tokens


def _tokenised(texts: list[str]) -> list[str]:
    return [" ".join(code_tokens(t)) for t in texts]


def _row(found) -> list[int]:
    """A sentence score's counts in `Bleu.statistics`' order."""
    return [found.sys_len, found.ref_len, *found.counts, *found.totals]


@register
class Bleu(Metric):
    """sacrebleu BLEU-4 after splitting code into `\\w+|[^\\s\\w]` tokens (0-100)."""

    name = "bleu"

    def __init__(self) -> None:
        self._corpus = BLEU(tokenize="none")
        self._sentence = BLEU(tokenize="none", effective_order=True)

    def compute(self, predictions: list[str], references: list[str], language: str) -> MetricResult:
        # One sentence score a pair gives both: its value and its counts, whose sums make the
        # corpus score (what `corpus_score` computes from the same counts, without counting the
        # n-grams of every pair a second time).
        scores = self._sentence_scores(predictions, references)
        rows = [_row(found) for found in scores]
        totals = [sum(column) for column in zip(*rows)] if rows else [0] * 10
        return MetricResult(
            corpus=self.score(totals, len(rows)), per_example=[found.score for found in scores]
        )

    def _sentence_scores(self, predictions: list[str], references: list[str]) -> list:
        hyps, refs = _tokenised(predictions), _tokenised(references)
        return [self._sentence.sentence_score(h, [r]) for h, r in zip(hyps, refs)]

    def statistics(
        self, predictions: list[str], references: list[str], language: str
    ) -> list[list[float]]:
        """sacrebleu's sufficient statistics per example: hypothesis and reference lengths,
        then n-gram matches and hypothesis n-grams for orders 1-4 (the order `score` reads)."""
        return [_row(found) for found in self._sentence_scores(predictions, references)]

    def score(self, totals: Sequence[float], count: int) -> float:
        """Corpus BLEU from summed statistics: what `corpus_score` gives on those examples."""
        order = self._corpus.max_ngram_order
        return BLEU.compute_bleu(
            correct=list(totals[2 : 2 + order]),
            total=list(totals[2 + order :]),
            sys_len=int(totals[0]),
            ref_len=int(totals[1]),
            smooth_method=self._corpus.smooth_method,
            smooth_value=self._corpus.smooth_value,
            effective_order=self._corpus.effective_order,
            max_ngram_order=order,
        ).score

    def signature(self) -> str:
        # sacrebleu's own signature fields, written out: get_signature() needs a scored corpus.
        return (
            f"bleu|nrefs:1|case:mixed|eff:no|tok:none|smooth:exp|version:{sacrebleu.__version__}"
            "|pretok:re(\\w+|[^\\s\\w])|sentence:eff:yes"
        )
