"""MkDocs hooks for the documentation site (`mkdocs.yml`): pages made from the code at build time.

- `methods.md` and `metrics.md`: the plugin packages' own READMEs, which stay beside their code.

`docs/settings.md` (every setting's section, name, type, default, range and help) is written from
the config dataclasses (`benchmark.config`, declared with `core.settings.setting`) by
`python scripts/docs_hooks.py` (`make docs` runs it); it is committed so that it reads on the
repository's own pages too, and `tests/test_docs.py` fails when it differs from the code.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECTIONS = ("run", "data", "model", "train", "eval")
PACKAGE_PAGES = {
    "methods.md": ROOT / "methods" / "README.md",
    "metrics.md": ROOT / "metrics" / "README.md",
}


def _type_name(annotation: typing.Any) -> str:
    if typing.get_args(annotation):  # list[str], int | None
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", str(annotation))


def settings_page() -> str:
    """The settings table, one section per config dataclass, from their metadata."""
    from benchmark import config
    from core.settings import range_text

    classes = {
        "run": config.RunConfig,
        "data": config.DataConfig,
        "model": config.ModelConfig,
        "train": config.TrainConfig,
        "eval": config.EvalConfig,
    }
    out = [
        "# Settings",
        "",
        "Every setting, as `--set <section>.<name>=<value>` (top-level ones without a section:",
        "`--set languages=python`). Generated from the config dataclasses in `benchmark/config.py`",
        "by `python scripts/docs_hooks.py`; each range is checked before anything loads. Presets",
        "(`benchmark/presets/*.toml`) set their own values; a method's own settings",
        "(`method.<name>`) are listed by `python -m benchmark methods` and in",
        "[Methods](methods.md).",
        "",
    ]
    for section in SECTIONS:
        cls = classes[section]
        hints = typing.get_type_hints(cls)
        out += [f"## `{section}`" if section != "run" else "## Top level", ""]
        out += ["| setting | type | default | range | what it does |", "|---|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]) or f.name == "method_options":
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            else:
                default = f.default_factory()  # type: ignore[misc]
            name = f.name if section == "run" else f"{section}.{f.name}"
            help_text = f.metadata.get("help", "").replace("|", "\\|")
            out.append(
                f"| `{name}` | {_type_name(hints[f.name])} | `{default!r}` | "
                f"{range_text(f.metadata) or ''} | {help_text} |"
            )
        out.append("")
    return "\n".join(out)


def on_files(files: Files, config: typing.Any) -> Files:
    for name, path in PACKAGE_PAGES.items():
        files.append(File.generated(config, name, content=path.read_text(encoding="utf-8")))
    return files


if __name__ == "__main__":
    (ROOT / "docs" / "settings.md").write_text(settings_page() + "\n", encoding="utf-8")
