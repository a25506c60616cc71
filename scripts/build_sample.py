"""Build the bundled CodeSearchNet-style sample from code available offline.

Python: functions of this machine's standard library (PSF licence). JavaScript: JSDoc'd functions
of MIT-licensed npm packages fetched with `npm pack`. Rows use the raw CodeSearchNet schema and
its release layout (`<lang>/final/jsonl/{train,valid,test}/<lang>_<split>_0.jsonl.gz`); Python
`code` keeps its docstring verbatim, as CodeSearchNet's does, so the harness's removal is exercised.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import io
import json
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmark.data import PY_NON_CODE  # noqa: E402

SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "turtledemo", "ensurepip"}
# Pinned MIT-licensed packages with many JSDoc'd functions (the licence is checked on unpack).
NPM_PACKAGES = (
    "lodash@4.17.21",
    "async@3.2.6",
    "three@0.160.0",
    "moment@2.30.1",
    "underscore@1.13.7",
    "express@4.21.2",
    "jquery@3.7.1",
    "ramda@0.30.1",
    "chart.js@4.4.1",
    "date-fns@2.30.0",
)
MAX_LINES = 60
TOKEN = re.compile(r"\w+|[^\s\w]")


def split_of(key: str) -> str:
    """A stable split from a file path: every function of one file lands in the same split."""
    bucket = int(hashlib.sha256(key.encode()).hexdigest(), 16) % 100
    return "train" if bucket < 60 else ("valid" if bucket < 80 else "test")


def first_paragraph(doc: str) -> str:
    return re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0]


def keep(func_name: str, path: str, summary: str, code: str) -> bool:
    """CodeSearchNet's filters plus a length cap for the tiny demo model."""
    lines = [line for line in code.splitlines() if line.strip()]
    short_name = func_name.rsplit(".", 1)[-1]
    return (
        len(TOKEN.findall(summary)) >= 3
        and 3 <= len(lines) <= MAX_LINES
        and "test" not in func_name.lower()
        and "test" not in path.lower()
        and not (short_name.startswith("__") and short_name.endswith("__"))
    )


def python_tokens(code: str, doc_node: ast.AST | None) -> list[str]:
    skip_line = getattr(doc_node, "lineno", None)
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type in PY_NON_CODE:
                continue
            if tok.type == tokenize.STRING and skip_line and tok.start[0] == skip_line:
                continue
            out.append(tok.string)
    except (tokenize.TokenError, IndentationError):
        return TOKEN.findall(code)
    return out


def python_rows() -> list[dict]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    version = ".".join(map(str, sys.version_info[:3]))
    rows = []
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib)
        if SKIP_DIRS & set(rel.parts):
            continue
        source = path.read_text(encoding="utf-8", errors="replace")
        try:
            found = list(documented_functions(source, str(rel)))
        except SyntaxError:
            continue
        for node, qualname, doc, text in found:
            summary = first_paragraph(doc)
            rows.append(
                {
                    "repo": "python/cpython",
                    "path": f"Lib/{rel}",
                    "func_name": qualname,
                    "original_string": text,
                    "language": "python",
                    "code": text,
                    "code_tokens": python_tokens(text, None),
                    "docstring": doc,
                    "docstring_tokens": TOKEN.findall(summary),
                    "sha": "",
                    "url": f"https://github.com/python/cpython/blob/v{version}/Lib/{rel}"
                    f"#L{node.lineno}-L{node.end_lineno}",
                    "partition": split_of(f"Lib/{rel}"),
                }
            )
    return rows


def documented_functions(source: str, path: str):
    """(node, qualified name, docstring, code) of each function in `source` CodeSearchNet would
    keep: documented, a body beyond the docstring that is not only pass/raise, `keep`'s filters.
    The code starts at the `def` line, as CodeSearchNet's; a SyntaxError propagates."""
    lines = source.splitlines(keepends=True)
    for node, qualname in _functions(ast.parse(source)):
        doc = ast.get_docstring(node)
        body = node.body[1:]
        if not doc or not body or all(isinstance(b, (ast.Pass, ast.Raise)) for b in body):
            continue
        text = "".join(lines[node.lineno - 1 : node.end_lineno]).lstrip()
        if keep(qualname, path, first_paragraph(doc), text):
            yield node, qualname, doc, text


def _functions(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node, node.name
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield item, f"{node.name}.{item.name}"


def jsdoc_description(comment: str) -> str:
    """The JSDoc text before the first @tag, with the leading `*` of each line removed."""
    body = comment.strip()[3:-2]
    lines = [re.sub(r"^\s*\*?\s?", "", line) for line in body.splitlines()]
    text = []
    for line in lines:
        if line.strip().startswith("@"):
            break
        text.append(line.rstrip())
    return "\n".join(text).strip()


def javascript_rows(work: Path) -> tuple[list[dict], dict[str, str]]:
    import tree_sitter_javascript
    from tree_sitter import Language, Parser

    parser = Parser(Language(tree_sitter_javascript.language()))
    rows, licences = [], {}
    for spec in NPM_PACKAGES:
        name, version = spec.rsplit("@", 1)
        subprocess.run(["npm", "pack", spec, "--silent"], cwd=work, check=True, capture_output=True)
        tarball = work / f"{name}-{version}.tgz"
        target = work / name
        with tarfile.open(tarball) as tar:
            tar.extractall(target, filter="data")
        package = target / "package"
        meta = json.loads((package / "package.json").read_text())
        if meta.get("license") != "MIT":
            raise SystemExit(f"{spec} is not MIT-licensed ({meta.get('license')!r})")
        licence = next((p for p in package.iterdir() if p.name.upper().startswith("LICEN")), None)
        licences[spec] = licence.read_text() if licence else f"MIT (package.json of {spec})"
        for path in sorted(package.rglob("*.js")):
            rel = path.relative_to(package).as_posix()
            if re.search(r"(^|/)(dist|build|min|node_modules|test|tests)/|\.min\.js$", rel):
                continue
            source = path.read_bytes()
            if len(source) > 2_000_000:
                continue
            tree = parser.parse(source)
            rows += list(_js_functions(tree.root_node, source, name, version, rel))
    return rows, licences


def _js_functions(root, source: bytes, package: str, version: str, rel: str):
    kinds = {
        "function_declaration",
        "method_definition",
        "lexical_declaration",
        "variable_declaration",
        "expression_statement",
        "export_statement",
    }
    stack = [root]
    while stack:
        node = stack.pop()
        stack.extend(reversed(node.children))
        if node.type != "comment" or not node.text.startswith(b"/**"):
            continue
        target = node.next_named_sibling
        if target is None or target.type not in kinds:
            continue
        func = target if "function" in target.type or target.type == "method_definition" else None
        if func is None:
            found = [
                c
                for c in _walk(target)
                if c.type in ("function_expression", "arrow_function", "function")
            ]
            if not found:
                continue
            func = target
        code = source[func.start_byte : func.end_byte].decode("utf-8", errors="replace")
        doc = jsdoc_description(node.text.decode("utf-8", errors="replace"))
        summary = first_paragraph(doc)
        name_node = func.child_by_field_name("name")
        func_name = name_node.text.decode() if name_node else _assigned_name(func)
        if not func_name or not keep(func_name, rel, summary, code):
            continue
        yield {
            "repo": f"npm/{package}",
            "path": rel,
            "func_name": func_name,
            "original_string": code,
            "language": "javascript",
            "code": code,
            "code_tokens": TOKEN.findall(code),
            "docstring": doc,
            "docstring_tokens": TOKEN.findall(summary),
            "sha": "",
            "url": f"https://www.npmjs.com/package/{package}/v/{version}#{rel}",
            "partition": split_of(f"{package}/{rel}"),
        }


def _walk(node):
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(current.children)


def _assigned_name(node) -> str:
    match = re.match(rb"\s*(?:var|let|const)?\s*([\w$.]+)\s*=", node.text)
    return match.group(1).decode() if match else ""


def dedupe(rows: list[dict]) -> list[dict]:
    seen, out = set(), []
    for row in rows:
        key = " ".join(row["code"].split())
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def write(rows: list[dict], language: str, sizes: dict[str, int], out: Path, seed: int) -> dict:
    counts = {}
    for split, size in sizes.items():
        chosen = [r for r in rows if r["partition"] == split]
        random.Random(seed).shuffle(chosen)
        chosen = sorted(chosen[:size], key=lambda r: (r["path"], r["func_name"]))
        folder = out / language / "final" / "jsonl" / split
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{language}_{split}_0.jsonl.gz", "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:  # mtime 0: reproducible
                for row in chosen:
                    fh.write((json.dumps(row, sort_keys=True) + "\n").encode())
        counts[split] = len(chosen)
    return counts


def notice(sizes: dict[str, int]) -> str:
    """Provenance and licences of the sample, written next to it."""
    version = ".".join(map(str, sys.version_info[:3]))
    packages = "\n".join(
        f"- `{spec}` (MIT): `licenses/{spec.rsplit('@', 1)[0]}-LICENSE.txt`"
        for spec in NPM_PACKAGES
    )
    return f"""# The bundled sample: provenance and licences

Built by `scripts/build_sample.py` (deterministic: the same machine state gives the same bytes),
in the raw CodeSearchNet schema and release layout, at most {sizes["train"]} train /
{sizes["valid"]} valid / {sizes["test"]} test functions per language (fewer where the sources
have fewer: JavaScript's validation and test splits). Splits are assigned per source file by a
hash of its path, so no file contributes to two splits. CodeSearchNet's filters were applied.

## Python: the CPython {version} standard library

Functions and methods with a docstring from `Lib/` (tests, idlelib, lib2to3, turtledemo and
ensurepip left out). Python Software Foundation License: `licenses/PSF-LICENSE.txt`.
As in CodeSearchNet, `code` keeps the docstring verbatim; the harness removes it from targets.

## JavaScript: MIT-licensed npm packages (fetched with `npm pack`)

Functions, methods and function expressions preceded by a JSDoc comment (`/** ... */`), whose
description (the text before the first `@tag`) is the docstring.

{packages}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "data" / "sample"), help="output folder")
    parser.add_argument("--train", type=int, default=1000, help="train examples per language")
    parser.add_argument("--valid", type=int, default=200, help="validation examples per language")
    parser.add_argument("--test", type=int, default=400, help="test examples per language")
    parser.add_argument("--seed", type=int, default=42, help="sampling seed")
    args = parser.parse_args()
    start = time.perf_counter()
    out = Path(args.out)
    sizes = {"train": args.train, "valid": args.valid, "test": args.test}
    for language in ("python", "javascript"):
        shutil.rmtree(out / language, ignore_errors=True)
    py = dedupe(python_rows())
    print("python", write(py, "python", sizes, out, args.seed), f"of {len(py)} candidates")
    with tempfile.TemporaryDirectory() as tmp:
        js, licences = javascript_rows(Path(tmp))
    js = dedupe(js)
    print("javascript", write(js, "javascript", sizes, out, args.seed), f"of {len(js)} candidates")
    licence_dir = out / "licenses"
    licence_dir.mkdir(parents=True, exist_ok=True)
    psf = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    if psf.is_file():
        shutil.copy(psf, licence_dir / "PSF-LICENSE.txt")
    for spec, text in licences.items():
        (licence_dir / f"{spec.rsplit('@', 1)[0]}-LICENSE.txt").write_text(text)
    (out / "NOTICE.md").write_text(notice(sizes))
    print(f"wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
