"""The summarization task's score is CodeXGLUE code-to-text's smoothed BLEU-4, checked on the
evaluator's own published example (Code-Text/code-to-text/evaluator: reference.txt and
predictions.txt, whose README gives 9.554726113590661; CodeXGLUE, MIT licence)."""

from __future__ import annotations

import math

import pytest

import tasks
from metrics import get_metric, resolve
from metrics.smoothed_bleu import normalize, sentence_bleu, split_puncts

REFERENCES = [
    "Outputs the deferred summary information saved via",
    "Inspect the file referenced in the kubectl stderr to make it easier for developer to "
    "understand what s going on",
    "make sure to never prune the ejson - keys secret",
    "Determine the best compressor for the current system . This method returns the class not "
    "an instance of the class .",
    "Create the bff file using + mkinstallp + .",
]
PREDICTIONS = [
    "Prints a summary message",
    "Finds the output from the output file",
    "Verify that the given JSON element is present .",
    "Determines the specified compression compression .",
    "Creates a new project .",
]


def test_the_evaluators_published_example_scores_exactly_its_published_number():
    result = get_metric("smoothed_bleu").compute(PREDICTIONS, REFERENCES, "python")
    assert result.corpus == 9.554726113590661  # the evaluator's README, to the last digit
    assert result.corpus == pytest.approx(sum(result.per_example) / 5, abs=1e-12)


def test_smoothing_brevity_and_tokenisation_follow_the_evaluator():
    assert sentence_bleu("Return the sum.", "return the SUM .") == pytest.approx(1.0)
    # Add-one smoothing of the 2- to 4-gram precisions only: 1/4, then 1/4, 1/3, 1/2.
    one = sentence_bleu("alpha beta gamma delta", "alpha x y z")
    expected = math.exp((math.log(1 / 4) + math.log(1 / 4) + math.log(1 / 3) + math.log(1 / 2)) / 4)
    assert one == pytest.approx(expected)
    # Brevity in log space: min(0, 1 - (r + 1) / (c + 1)); an empty prediction is not 0.
    assert sentence_bleu("a b c", "") == pytest.approx(math.exp(1 - 4 / 1))
    assert split_puncts("  Get_value(x)!  ") == "get_value ( x ) !"
    assert normalize("a-\nb &quot;c&quot; 3.5, x.") == ["ab", '"', "c", '"', "3.5", ",", "x", "."]


def test_summarization_reads_code_and_scores_the_docstring():
    task = tasks.get_task("summarization")
    assert (task.input_field, task.target_field, task.trains) == ("code", "docstring", True)
    assert task.metrics[0] == "smoothed_bleu"
    assert "smoothed_bleu" not in [m.name for m in resolve(["all"])]  # generation's set unchanged
