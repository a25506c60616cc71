"""Score a base model as it is, before any adaptation, on a preset's evaluation examples.

The baseline row of the demo's table: what the methods' scores are measured against.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmark.config import make_config, parse_overrides  # noqa: E402
from benchmark.data import load_languages  # noqa: E402
from benchmark.evaluation import evaluate  # noqa: E402
from benchmark.models import load_base  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="K=V")
    parser.add_argument("--json", default="", help="also write the scores to this file")
    args = parser.parse_args()
    config = make_config("lora", args.preset, parse_overrides(args.settings))
    model, tokenizer, _ = load_base(config.model)
    tasks = load_languages(config.languages, config.data)
    scores = {}
    for language, task in tasks.items():
        result = evaluate(
            model, tokenizer, task.evaluation, language, config.eval, config.data.max_source_length
        )
        scores[language] = {k: round(v, 4) for k, v in result.as_metrics().items()}
        print(language, json.dumps(scores[language]))
    if args.json:
        Path(args.json).write_text(json.dumps(scores, indent=2))


if __name__ == "__main__":
    main()
