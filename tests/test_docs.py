"""The documentation site builds with no warning (MkDocs --strict: no broken link, no page left
out of the navigation), and its settings page is the code's settings."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from benchmark import config
from tests.conftest import REPO


def test_the_docs_site_builds_strict(tmp_path: Path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    done = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WARNING" not in done.stderr, done.stderr[-3000:]
    settings = (tmp_path / "site" / "settings" / "index.html").read_text()
    for cls, section in ((config.DataConfig, "data"), (config.TrainConfig, "train")):
        for f in dataclasses.fields(cls):
            assert f"{section}.{f.name}" in settings, f"{section}.{f.name} missing from the page"
    assert (tmp_path / "site" / "methods" / "index.html").is_file()


def test_the_committed_settings_page_is_the_codes():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import docs_hooks
    finally:
        sys.path.remove(str(REPO / "scripts"))
    committed = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    assert committed == docs_hooks.settings_page() + "\n", (
        "docs/settings.md is stale: run python scripts/docs_hooks.py (make docs)"
    )


def test_the_settings_page_states_each_range():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import docs_hooks
    finally:
        sys.path.remove(str(REPO / "scripts"))
    page = docs_hooks.settings_page()
    assert "| `eval.batch_size` | int | `32` | at least 1 | generation batch size |" in page
    assert "| `train.warmup_ratio` | float | `0.06` | at least 0 and below 1 |" in page
    assert "| `protocol` | str | `'fresh'` | one of fresh, sequential |" in page


def test_every_link_in_the_readme_leads_somewhere():
    import re

    text = (REPO / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert targets
    missing = [t for t in targets if "://" not in t and not (REPO / t).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
    assert len(text.splitlines()) <= 200, "the README is an entry point: details go to docs/"
