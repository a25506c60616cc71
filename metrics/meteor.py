"""METEOR (NLTK) on code tokens, with WordNet synonyms when WordNet is installed."""

from __future__ import annotations

import functools
import importlib.metadata

from metrics import Metric, MetricResult, register
from metrics._text import code_tokens


class _NoSynonyms:
    """Stands in for WordNet: METEOR then matches exact tokens and stems only."""

    def synsets(self, *args, **kwargs) -> list:
        return []


@functools.cache
def wordnet_or_none():
    """NLTK's WordNet reader if its data is installed (`make install` puts it in the venv)."""
    from nltk.corpus import wordnet

    try:
        wordnet.ensure_loaded()
        return wordnet
    except LookupError:
        return None


@register
class Meteor(Metric):
    """NLTK METEOR (alpha 0.9, beta 3, gamma 0.5) on `\\w+|[^\\s\\w]` code tokens (0-1);
    exact, stem and WordNet-synonym matching, or exact+stem without WordNet."""

    name = "meteor"

    def compute(self, predictions: list[str], references: list[str], language: str) -> MetricResult:
        from nltk.translate.meteor_score import meteor_score

        wordnet = wordnet_or_none() or _NoSynonyms()
        values = [
            meteor_score([code_tokens(r)], code_tokens(p), wordnet=wordnet) if p.strip() else 0.0
            for p, r in zip(predictions, references)
        ]
        return MetricResult(corpus=sum(values) / len(values) if values else 0.0, per_example=values)

    def signature(self) -> str:
        wordnet = wordnet_or_none()
        source = f"wordnet:{wordnet.get_version()}" if wordnet else "wordnet:none(exact+stem)"
        return (
            f"meteor|alpha:0.9|beta:3|gamma:0.5|codetok|{source}"
            f"|nltk:{importlib.metadata.version('nltk')}"
        )
