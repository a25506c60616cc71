"""Corpus BLEU on code tokens (sacrebleu), with per-example sentence BLEU."""

from __future__ import annotations

import sacrebleu
from sacrebleu.metrics import BLEU

from metrics import Metric, MetricResult, register
from metrics._text import code_tokens


@register
class Bleu(Metric):
    """sacrebleu BLEU-4 after splitting code into `\\w+|[^\\s\\w]` tokens (0-100)."""

    name = "bleu"

    def __init__(self) -> None:
        self._corpus = BLEU(tokenize="none")
        self._sentence = BLEU(tokenize="none", effective_order=True)

    def compute(self, predictions: list[str], references: list[str], language: str) -> MetricResult:
        hyps = [" ".join(code_tokens(p)) for p in predictions]
        refs = [" ".join(code_tokens(r)) for r in references]
        corpus = self._corpus.corpus_score(hyps, [refs]).score
        per_example = [self._sentence.sentence_score(h, [r]).score for h, r in zip(hyps, refs)]
        return MetricResult(corpus=corpus, per_example=per_example)

    def signature(self) -> str:
        # sacrebleu's own signature fields, written out: get_signature() needs a scored corpus.
        return (
            f"bleu|nrefs:1|case:mixed|eff:no|tok:none|smooth:exp|version:{sacrebleu.__version__}"
            "|pretok:re(\\w+|[^\\s\\w])|sentence:eff:yes"
        )
