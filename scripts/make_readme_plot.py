"""Build the comparison report of an experiment and copy its main plot to docs/ for the README."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reports.compare import build_report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", default="adaptbench")
    parser.add_argument("--filter", default="tags.preset = 'demo'", help="MLflow filter string")
    parser.add_argument("--out", default=str(ROOT / "reports" / "latest"))
    parser.add_argument("--language", default="python", help="whose metrics plot to copy")
    args = parser.parse_args()
    out = build_report(args.experiment, args.filter, args.out, log_to_mlflow=False)
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    for name in (f"metrics_{args.language}", f"pareto_{args.language}"):
        shutil.copy(out / f"{name}.png", docs / f"demo-{name.replace('_', '-')}.png")
        print(f"docs/demo-{name.replace('_', '-')}.png")


if __name__ == "__main__":
    main()
