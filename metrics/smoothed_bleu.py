"""CodeXGLUE code-to-text's smoothed sentence BLEU-4, as its evaluator computes it.

CodeXGLUE's `Code-Text/code-to-text/evaluator/evaluator.py` (after MOSES's `bleu.py`) lowercases
each line and splits off punctuation (`splitPuncts`), then tokenises it again the NIST way
(`normalize`), scores each sentence on its own with add-one smoothing of the 2- to 4-gram
precisions (not the unigram's) and a brevity penalty of `min(0, 1 - (r + 1) / (c + 1))` in log
space, and reports the mean over sentences times 100. CodeT5's code summarisation table is this
number. It is not `codexglue_bleu` (CodeXGLUE's text-to-code corpus BLEU, smoothed on every order).
"""

from __future__ import annotations

import math
import re
import sys
import xml.sax.saxutils
from collections import Counter

from metrics import Metric, MetricResult, register

ORDER = 4
# normalize() of the evaluator (NIST mteval-v11a), in its order.
_JOIN = [(re.compile(r"<skipped>"), ""), (re.compile(r"-\n"), ""), (re.compile(r"\n"), " ")]
_SPLIT = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation (not the apostrophe)
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless after a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # ... unless before a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # a dash after a digit
]
_WORDS = re.compile(r"[\w]+|[^\s\w]")


def split_puncts(line: str) -> str:
    """The evaluator's `splitPuncts(line.strip().lower())`: words and single punctuation marks."""
    return " ".join(_WORDS.findall(line.strip().lower()))


def normalize(text: str) -> list[str]:
    """The evaluator's `normalize`: NIST tokenisation, lowercased."""
    for pattern, replace in _JOIN:
        text = pattern.sub(replace, text)
    text = xml.sax.saxutils.unescape(text, {"&quot;": '"'})
    text = f" {text} ".lower()
    for pattern, replace in _SPLIT:
        text = pattern.sub(replace, text)
    return text.split()


def _ngrams(words: list[str]) -> Counter:
    return Counter(
        tuple(words[i : i + k]) for k in range(1, ORDER + 1) for i in range(len(words) - k + 1)
    )


def sentence_bleu(reference: str, prediction: str) -> float:
    """One pair's smoothed BLEU-4 (0-1), as the evaluator's `bleu([reference], prediction)[0]`
    after both went through `split_puncts`."""
    ref, test = normalize(split_puncts(reference)), normalize(split_puncts(prediction))
    wanted, found = _ngrams(ref), _ngrams(test)
    correct = [0] * ORDER
    for gram, count in found.items():
        correct[len(gram) - 1] += min(wanted.get(gram, 0), count)
    guess = [max(len(test) - k + 1, 0) for k in range(1, ORDER + 1)]
    tiny = sys.float_info.min  # the evaluator's guard against log(0)
    log_bleu = 0.0
    for k in range(ORDER):
        add = 1 if k > 0 else 0
        log_bleu += math.log(correct[k] + add + tiny) - math.log(guess[k] + add + tiny)
    log_bleu /= ORDER
    brevity = min(0.0, 1 - (len(ref) + 1) / (len(test) + 1))
    return math.exp(log_bleu + brevity)


@register
class SmoothedBleu(Metric):
    """CodeXGLUE code-to-text BLEU-4: per sentence, smoothed, averaged (0-100)."""

    name = "smoothed_bleu"
    default = False  # a summary's metric: not part of `eval.metrics=all` on code

    def compute(self, predictions: list[str], references: list[str], language: str) -> MetricResult:
        values = [100.0 * sentence_bleu(r, p) for p, r in zip(predictions, references)]
        return MetricResult(sum(values) / len(values) if values else 0.0, values)

    def signature(self) -> str:
        return (
            "smoothed_bleu|codexglue:code-to-text|tok:splitPuncts+nist|lc|order:4"
            "|smooth:add-one-2+|sentence-mean"
        )
