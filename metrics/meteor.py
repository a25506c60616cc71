"""METEOR (NLTK) on code tokens, with WordNet synonyms when WordNet is installed."""

from __future__ import annotations

import functools
import importlib.metadata
import os
from pathlib import Path

from metrics import Metric, MetricResult, register
from metrics._text import code_tokens

ROOT = Path(__file__).resolve().parent.parent


class _NoSynonyms:
    """Stands in for WordNet: METEOR then matches exact tokens and stems only."""

    def synsets(self, *args, **kwargs) -> list:
        return []


class _RememberedSynsets:
    """WordNet's `synsets` for METEOR, each word looked up once: the same answers (a lookup
    is a pure function of the word), without WordNet's morphology and index search for every
    occurrence of a word."""

    def __init__(self, wordnet) -> None:
        self.synsets = functools.lru_cache(maxsize=1 << 16)(wordnet.synsets)


class _RememberedStems:
    """NLTK's Porter stemmer as METEOR uses it by default, each word stemmed once."""

    def __init__(self) -> None:
        from nltk.stem.porter import PorterStemmer

        self.stem = functools.lru_cache(maxsize=1 << 16)(PorterStemmer().stem)


@functools.cache
def _matchers() -> tuple:
    """The stemmer and the synonym source every METEOR call shares (one per process)."""
    wordnet = wordnet_or_none()
    return _RememberedStems(), _RememberedSynsets(wordnet) if wordnet else _NoSynonyms()


def nltk_data_dirs() -> list[str]:
    """Where this project's NLTK data may be: `$NLTK_DATA` and `<repo>/.venv/nltk_data`
    (`make install` runs `scripts/install_wordnet.sh .venv/nltk_data`)."""
    dirs = [d for d in os.environ.get("NLTK_DATA", "").split(os.pathsep) if d]
    venv = ROOT / ".venv" / "nltk_data"
    if venv.is_dir():
        dirs.append(str(venv))
    return dirs


@functools.cache
def wordnet_or_none():
    """NLTK's WordNet reader if its data is installed, else None."""
    import nltk

    # NLTK >= 3.9 only opens data under `nltk.data.path`, so our folders must be on it.
    for folder in nltk_data_dirs():
        if folder not in nltk.data.path:
            nltk.data.path.append(folder)
    from nltk.corpus import wordnet

    try:
        wordnet.ensure_loaded()
        return wordnet
    except LookupError:
        return None


@register
class Meteor(Metric):
    """NLTK METEOR (alpha 0.9, beta 3, gamma 0.5) on `\\w+|[^\\s\\w]` code tokens, one reference,
    mean over examples (0-1). Matching: exact, Porter stem and WordNet synonyms when WordNet
    is installed (signature `wordnet:3.0`), else exact and stem only (`wordnet:none`). An empty
    prediction scores 0."""

    name = "meteor"

    def compute(self, predictions: list[str], references: list[str], language: str) -> MetricResult:
        from nltk.translate.meteor_score import meteor_score

        stemmer, wordnet = _matchers()
        values = [
            meteor_score([code_tokens(r)], code_tokens(p), stemmer=stemmer, wordnet=wordnet)
            if p.strip()
            else 0.0
            for p, r in zip(predictions, references)
        ]
        return MetricResult(corpus=sum(values) / len(values) if values else 0.0, per_example=values)

    def signature(self) -> str:
        wordnet = wordnet_or_none()
        source = f"wordnet:{wordnet.get_version()}" if wordnet else "wordnet:none|match:exact+stem"
        return (
            f"meteor|alpha:0.9|beta:3|gamma:0.5|codetok|{source}"
            f"|nltk:{importlib.metadata.version('nltk')}"
        )
