"""Build the comparison report of an experiment and copy its main plots to docs/ for the README.

docs/demo-metrics-<language>.png (the main plot: each metric by method with 95 % intervals) and
docs/demo-pareto-<language>.png are the README's figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reports.compare import build_report  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", default="adaptbench", help="MLflow experiment name")
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
        help="tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    parser.add_argument("--filter", default="tags.preset = 'demo'", help="MLflow filter string")
    parser.add_argument(
        "--reference", default="none", help="method the others are tested against (none: the base)"
    )
    parser.add_argument("--out", default=str(ROOT / "reports" / "latest"), help="report folder")
    parser.add_argument("--docs", default=str(ROOT / "docs"), help="where the plots are copied")
    parser.add_argument("--language", default="python", help="whose plots to copy")
    parser.add_argument("--task", default="generation", help="which task's plots to copy")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = build_report(
        experiment=args.experiment,
        filter_string=args.filter,
        out_dir=args.out,
        reference=args.reference,
        tracking_uri=args.tracking_uri,
        n_boot=args.n_boot,
        log_to_mlflow=False,
    )
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    scope = f"{args.task}_{args.language}"  # the report's file name of the task's section
    copies = {
        f"metrics_{scope}.png": [f"demo-metrics-{args.language}.png"],
        f"pareto_{scope}.png": [f"demo-pareto-{args.language}.png"],
    }
    for source, targets in copies.items():
        if not (out / source).is_file():
            print(f"no {source} in {out}: no comparable {args.language} runs?", file=sys.stderr)
            return 1
        for target in targets:
            shutil.copy(out / source, docs / target)
            print(docs / target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
