"""CodeSearchNet examples for docstring -> code generation, from the hub, local files or the sample.

Every source ends as `Example` records: the source is the docstring's first paragraph, the target
is the function's code with its docstring removed (CodeSearchNet's Python `code` field still holds
the docstring verbatim: left in, the model would be graded on copying its input).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import random
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmark.cleaning import (  # noqa: F401  (found here by the rest of the harness)
    PY_NON_CODE,
    STRIPPERS,
    Example,
    RawRow,
    _fold,
    clean,
    fingerprint,
    first_paragraph,
    strip_javascript_docstring,
    strip_python_docstring,
)
from benchmark.config import DataConfig, UsageError

log = logging.getLogger("adaptbench")

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data" / "sample"
SPLITS = ("train", "validation", "test")
FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".parquet")

# The two CodeSearchNet schemas: raw jsonl (github/CodeSearchNet) and the Hugging Face one.
RAW_FIELDS = {"code": "code", "docstring": "docstring", "language": "language"}
HF_FIELDS = {
    "code": "func_code_string",
    "docstring": "func_documentation_string",
    "language": "language",
}
RAW_OPTIONAL = {"repo": "repo", "path": "path", "func_name": "func_name", "url": "url"}
HF_OPTIONAL = {
    "repo": "repository_name",
    "path": "func_path_in_repository",
    "func_name": "func_name",
    "url": "func_code_url",
}
SPLIT_NAMES = {"train": "train", "valid": "validation", "validation": "validation", "test": "test"}


class DataError(ValueError):
    """A data source that cannot be read as CodeSearchNet: names the file, line and field."""


@dataclass
class LoadStats:
    rows_read: int = 0
    bad_rows: int = 0
    dropped: Counter = field(default_factory=Counter)

    def as_metrics(self, prefix: str) -> dict[str, float]:
        out = {f"{prefix}/rows_read": self.rows_read, f"{prefix}/bad_rows": self.bad_rows}
        out.update({f"{prefix}/dropped_{k}": v for k, v in sorted(self.dropped.items())})
        return out


@dataclass
class LanguageData:
    """The examples of one language: train, validation (loss) and evaluation (generation); every
    task reading CodeSearchNet takes its own input and target fields from them."""

    language: str
    train: list[Example]
    validation: list[Example]
    evaluation: list[Example]
    source: str
    stats: LoadStats

    def fingerprint(self) -> str:
        return fingerprint(self.train + self.validation + self.evaluation)


# ---------------------------------------------------------------- reading local files


def _detect_schema(columns: Iterable[str], origin: str) -> tuple[dict, dict]:
    cols = set(columns)
    if set(RAW_FIELDS.values()) <= cols:
        return RAW_FIELDS, RAW_OPTIONAL
    if set(HF_FIELDS.values()) <= cols:
        return HF_FIELDS, HF_OPTIONAL
    raw_missing = sorted(set(RAW_FIELDS.values()) - cols)
    hf_missing = sorted(set(HF_FIELDS.values()) - cols)
    raise DataError(
        f"{origin}: the columns fit neither CodeSearchNet schema. Raw schema lacks "
        f"{', '.join(raw_missing)}; Hugging Face schema lacks {', '.join(hf_missing)}. "
        f"Columns found: {', '.join(sorted(cols)) or 'none'}"
    )


def _split_from_name(path: Path) -> str | None:
    words = re.split(r"[^a-z]+", "/".join(path.parts[-4:]).lower())
    for word in reversed(words):
        if word in SPLIT_NAMES:
            return SPLIT_NAMES[word]
    return None


def _normalise(record: dict, schema: tuple[dict, dict], origin: str) -> dict[str, Any]:
    required, optional = schema
    out: dict[str, Any] = {}
    for key, column in required.items():
        if column not in record:
            raise DataError(f"{origin}: missing field {column!r}")
        value = record[column]
        if not isinstance(value, str):
            raise DataError(
                f"{origin}: field {column!r} should be a string, got {type(value).__name__}"
            )
        out[key] = value
    for key, column in optional.items():
        out[key] = record.get(column) or ""
    ident = record.get("id")  # CodeXGLUE numbers its rows from 0: 0 is an id, not a missing one
    out["id"] = "" if ident is None else str(ident)
    out["split"] = record.get("partition") or record.get("split_name") or ""
    return out


class _Undecodable(str):
    """A line that is not UTF-8: read_file refuses it or, with skip_bad_rows, counts it."""


def _iter_json_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Numbered lines of a text or gzipped file; a line that is not UTF-8 comes as _Undecodable.

    Read as bytes and decoded line by line, so one bad line is named by its number (and can be
    skipped) instead of ending the whole file with a decoder error.
    """
    gzipped = path.name.endswith(".gz")
    opener = gzip.open if gzipped else open
    line_no = 0
    try:
        with opener(path, "rb") as fh:
            for line_no, raw in enumerate(fh, start=1):
                try:
                    # A byte-order mark (Windows editors write one) is not part of the data.
                    yield line_no, raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    yield line_no, _Undecodable(f"byte {err.start + 1} is not UTF-8")
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        where = f"after line {line_no}" if line_no else "at its start"
        raise DataError(
            f"{path}: not a complete, valid gzip file ({err}; it breaks {where}): download it "
            "again, or give the uncompressed .jsonl"
        ) from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from None


def read_file(path: Path, skip_bad_rows: bool, stats: LoadStats) -> Iterator[RawRow]:
    """Rows of one `.jsonl`, `.jsonl.gz` or `.parquet` file in either CodeSearchNet schema."""
    default_split = _split_from_name(path)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as err:
            raise DataError(
                f"{path}: not a readable parquet file ({str(err).splitlines()[0]}): download it "
                "again, or convert it to .jsonl"
            ) from None
        schema = _detect_schema(table.column_names, str(path))
        records: Iterable[tuple[int, Any]] = enumerate(table.to_pylist(), start=1)
        parsed = True
    else:
        records = _iter_json_lines(path)
        schema = None
        parsed = False
    for line_no, item in records:
        origin = f"{path}:{line_no}" if not parsed else f"{path} row {line_no}"
        stats.rows_read += 1
        try:
            if not parsed:
                if isinstance(item, _Undecodable):
                    raise DataError(f"{origin}: not UTF-8 text ({item}): save the file as UTF-8")
                if not item.strip():
                    stats.rows_read -= 1
                    continue
                try:
                    item = json.loads(item)
                except json.JSONDecodeError as err:
                    raise DataError(
                        f"{origin}: malformed JSON ({err.msg} at column {err.colno})"
                    ) from None
                if not isinstance(item, dict):
                    raise DataError(f"{origin}: expected a JSON object, got {type(item).__name__}")
                if schema is None:
                    schema = _detect_schema(item.keys(), origin)
            fields = _normalise(item, schema, origin)
        except DataError as err:
            if not skip_bad_rows:
                raise DataError(
                    f"{err} (fix the row, or pass data.skip_bad_rows=true to skip and count bad "
                    "rows)"
                ) from None
            stats.bad_rows += 1
            continue
        split = SPLIT_NAMES.get(str(fields.pop("split")).lower(), default_split)
        if split is None:
            raise DataError(
                f"{origin}: cannot tell the split: no 'partition'/'split_name' field and the file "
                "name names no split (train, valid, validation or test)"
            )
        yield RawRow(fields=fields, split=split, origin=origin)


def local_files(root: Path) -> list[Path]:
    """The data files under `root` (a file, a folder, or the original `<lang>/final/jsonl` tree)."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise UsageError(
            f"data.source {str(root)!r} is neither 'sample', 'hub' nor an existing file or folder"
        )
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(FILE_SUFFIXES))
    if not files:
        raise UsageError(
            f"no .jsonl, .jsonl.gz or .parquet files under {root}: point data.source at "
            "CodeSearchNet files (raw or Hugging Face schema)"
        )
    return files


# ---------------------------------------------------------------- selection


def _select(
    rows: Iterable[RawRow],
    language: str,
    size: int,
    config: DataConfig,
    stats: LoadStats,
    seen_code: set[str],
) -> list[Example]:
    """The first `size` rows (in the given order) that survive cleaning and deduplication."""
    chosen: list[Example] = []
    for row in rows:
        if len(chosen) >= size:
            break
        result = clean(row, language, config.apply_csn_filters)
        if isinstance(result, str):
            stats.dropped[result] += 1
            continue
        key = _fold(result.code)
        if key in seen_code:
            stats.dropped["duplicate"] += 1
            continue
        seen_code.add(key)
        chosen.append(result)
    return chosen


def _build_language(
    language: str,
    rows_by_split: dict[str, list[RawRow]] | dict[str, Iterable[RawRow]],
    config: DataConfig,
    stats: LoadStats,
    source: str,
) -> LanguageData:
    # Training examples are chosen first; a validation or evaluation example whose code also
    # sits in the training set is dropped as a duplicate (no train/test leakage).
    seen: set[str] = set()
    train = _select(rows_by_split["train"], language, config.train_size, config, stats, seen)
    evaluation_split = config.eval_split
    evaluation = _select(
        rows_by_split[evaluation_split], language, config.eval_size, config, stats, seen
    )
    validation = _select(
        rows_by_split["validation"], language, config.val_size, config, stats, seen
    )
    if not train:
        raise DataError(f"{source}: no usable {language} training examples")
    if not evaluation:
        raise DataError(f"{source}: no usable {language} examples in the {evaluation_split} split")
    if not validation and config.val_size > 0:
        log.warning(
            "%s: no %s validation examples left for the validation loss (the evaluation took "
            "%d of the validation split: data.eval_split=validation); lower data.eval_size to "
            "keep some, or evaluate on the test split",
            source,
            language,
            len(evaluation) if evaluation_split == "validation" else 0,
        )
    return LanguageData(language, train, validation, evaluation, source, stats)


def _shuffled(rows: list[RawRow], seed: int) -> list[RawRow]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows


def load_local(
    root: Path, languages: list[str], config: DataConfig, source: str
) -> dict[str, LanguageData]:
    """Read every file once, then select per language and split (shuffled with the seed)."""
    stats_all = LoadStats()
    by_language: dict[str, dict[str, list[RawRow]]] = {}
    for path in local_files(root):
        for row in read_file(path, config.skip_bad_rows, stats_all):
            lang = row.fields["language"].lower()
            by_language.setdefault(lang, {s: [] for s in SPLITS})[row.split].append(row)
    missing = [lang for lang in languages if not any(by_language.get(lang, {}).values())]
    if missing:
        found = ", ".join(sorted(by_language)) or "none"
        raise DataError(
            f"{source}: no examples for language(s) {', '.join(missing)}. Languages found: {found}"
        )
    tasks = {}
    for lang in languages:
        stats = LoadStats(
            rows_read=sum(len(v) for v in by_language[lang].values()),
            bad_rows=stats_all.bad_rows,
        )
        rows = {s: _shuffled(r, config.selection_seed) for s, r in by_language[lang].items()}
        tasks[lang] = _build_language(lang, rows, config, stats, source)
    return tasks


def load_hub(languages: list[str], config: DataConfig) -> dict[str, LanguageData]:
    """CodeXGLUE's parquet copy of CodeSearchNet from the Hugging Face hub, pinned to one commit.

    `load_dataset("code_search_net")` no longer works (datasets >= 4 refuses loading scripts);
    `google/code_x_glue_ct_code_to_text` is parquet, one config per language, raw schema + id.
    Online it comes through `load_dataset` at the commit the hub names. Offline
    (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), where `load_dataset` refuses before looking at the
    hub cache, the parquet shards come straight from the hub cache's snapshot (what `hf download`
    leaves), else from datasets' own cache of an earlier online load. Every route gives the same
    rows in the same order; the source names the route and the commit (see `hub_source`).
    """
    from datasets import config as datasets_config

    from benchmark import hub

    name, revision = config.hub_dataset, config.hub_revision
    offline = bool(datasets_config.HF_HUB_OFFLINE)
    snapshot, commit = None, ""
    if offline:
        snapshot = hub.cached_snapshot(name, revision, "dataset", "README.md")
    else:
        commit = hub.hub_commit(name, revision, "dataset", "data.hub_dataset")
    tasks = {}
    for lang in languages:
        if not offline:
            splits = _load_dataset(name, lang, commit)
            source = hub_source(name, commit, "load_dataset")
        elif snapshot is not None and (files := _snapshot_files(snapshot, lang)):
            splits = {split: _parquet_split(paths) for split, paths in files.items()}
            source = hub_source(name, snapshot.name, "hub cache")
        else:
            splits, cached_commit = _load_cached_dataset(name, lang, revision, snapshot)
            source = hub_source(name, cached_commit, "datasets cache")
        stats = LoadStats()
        rows: dict[str, Iterable[RawRow]] = {}
        for split in SPLITS:
            if split not in splits:
                raise DataError(f"{source}: {lang} has no {split} split (it has {sorted(splits)})")
            part = splits[split].shuffle(seed=config.selection_seed)
            rows[split] = _hub_rows(part, split, f"{name}/{lang}/{split}", stats)
        tasks[lang] = _build_language(lang, rows, config, stats, source)
    return tasks


def hub_source(dataset: str, commit: str, route: str) -> str:
    """`hub:<dataset>@<commit> via <route>`: which data set, at which commit, read which way."""
    return f"hub:{dataset}@{commit} via {route}"


def split_hub_source(source: str) -> tuple[str, str, str]:
    """(dataset, commit, route) of a `hub:` source string; route "" where it names none."""
    body, _, route = source.removeprefix("hub:").partition(" via ")
    dataset, _, commit = body.partition("@")
    return dataset, commit, route


def _snapshot_files(snapshot: Path, lang: str) -> dict[str, list[str]]:
    """Each split's parquet files for config `lang` in a hub cache snapshot ({} when absent),
    mapped as `load_dataset` maps them: the data card's `configs` patterns, resolved by datasets'
    own pattern code (sorted), else its default split names under the `<lang>/` folder."""
    from datasets.data_files import DataFilesDict, get_data_patterns, sanitize_patterns
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    entry = MetadataConfigs.from_dataset_card_data(DatasetCard.load(snapshot / "README.md").data)
    entry = entry.get(lang, {})
    base = snapshot / entry.get("data_dir", "" if entry else lang)
    try:
        if "data_files" in entry:
            patterns = sanitize_patterns(entry["data_files"])
        else:
            patterns = get_data_patterns(str(base))
        files = DataFilesDict.from_patterns(
            patterns, base_path=str(base), allowed_extensions=[".parquet"]
        )
    except FileNotFoundError:  # datasets' EmptyDatasetError and DataFilesNotFoundError
        return {}
    return {str(split): list(paths) for split, paths in files.items() if paths}


# What _normalise reads; the token lists and original_string are left in the file.
_HUB_COLUMNS = {
    *RAW_FIELDS.values(),
    *RAW_OPTIONAL.values(),
    *HF_FIELDS.values(),
    *HF_OPTIONAL.values(),
    "id",
    "partition",
    "split_name",
}


def _parquet_split(paths: list[str]) -> Any:
    """One split's shards, concatenated in order, as a `datasets.Dataset` (its shuffle is the one
    `load_dataset`'s data would get)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset
    from datasets.table import InMemoryTable

    tables = []
    for path in paths:
        names = pq.read_schema(path).names
        tables.append(pq.read_table(path, columns=[c for c in names if c in _HUB_COLUMNS]))
    key = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]
    return Dataset(InMemoryTable(pa.concat_tables(tables)), fingerprint=key)


def _load_dataset(name: str, lang: str, commit: str) -> Any:
    from datasets import load_dataset

    return load_dataset(name, lang, revision=commit)


class _CachedVersionNotice(logging.Filter):
    """Drops datasets' notices that it fell back on its cache: the source records that route."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(
            ("Using the latest cached version of the dataset", "Found the latest cached dataset")
        )


def _load_cached_dataset(
    name: str, lang: str, revision: str, snapshot: Path | None
) -> tuple[Any, str]:
    """Offline, without the data set in the hub cache: datasets' own cache, and its commit."""
    from datasets import load_dataset

    from benchmark import hub

    loggers = [
        logging.getLogger(n) for n in ("datasets.load", "datasets.packaged_modules.cache.cache")
    ]
    notice = _CachedVersionNotice()
    for logger in loggers:
        logger.addFilter(notice)
    try:
        splits = load_dataset(name, lang, **({"revision": revision} if revision else {}))
    except (ConnectionError, FileNotFoundError, ValueError) as err:
        where = (
            f"the hub cache's snapshot {snapshot} has no {lang} parquet files"
            if snapshot is not None
            else f"it is not in the hub cache ({hub.cache_dir()})"
        )
        raise UsageError(
            f"data.source=hub offline: {name} {lang} cannot be loaded: {where}, nor in datasets' "
            f"cache ({str(err).splitlines()[0][:200]}). Fill the hub cache where there is "
            f"internet (`hf download --repo-type dataset {name}`), or point data.source at "
            "local CodeSearchNet files"
        ) from None
    finally:
        for logger in loggers:
            logger.removeFilter(notice)
    # datasets keeps a hub data set under .../<config>/<version>/<commit>/<files>.arrow
    folders = {
        Path(f["filename"]).parent.name for part in splits.values() for f in part.cache_files
    }
    commits = sorted(f for f in folders if hub.COMMIT.fullmatch(f))
    commit = commits[0] if len(commits) == 1 else "unknown-commit"
    if revision and hub.COMMIT.fullmatch(revision) and commit != revision:
        raise UsageError(
            f"data.hub_revision={revision}: datasets' cache holds {name} at {commit} instead; "
            f"fill the hub cache at that commit (`hf download --repo-type dataset {name} "
            f"--revision {revision}`)"
        )
    return splits, commit


def _hub_rows(part: Any, split: str, name: str, stats: LoadStats) -> Iterator[RawRow]:
    schema = _detect_schema(part.column_names, name)
    for index, record in enumerate(part):
        stats.rows_read += 1
        origin = f"{name} row {index}"
        yield RawRow(_normalise(record, schema, origin), split, origin)


def load_languages(languages: list[str], config: DataConfig) -> dict[str, LanguageData]:
    """One `LanguageData` per language from the configured source."""
    if config.source == "hub":
        return load_hub(languages, config)
    if config.source == "sample":
        if not SAMPLE_DIR.is_dir():
            raise UsageError(f"the bundled sample is missing from {SAMPLE_DIR}: reinstall the repo")
        return load_local(SAMPLE_DIR, languages, config, "sample")
    root = Path(config.source).expanduser()
    return load_local(root, languages, config, f"local:{root}")


def pairs(examples: list[Example], task: Any) -> tuple[list[str], list[str]]:
    """The task's (inputs, targets) of `examples`; without a task, (docstrings, code)."""
    if task is None:
        return [ex.docstring for ex in examples], [ex.code for ex in examples]
    return [task.source(ex) for ex in examples], [task.target(ex) for ex in examples]


def to_records(examples: list[Example]) -> list[dict[str, str]]:
    return [asdict(ex) for ex in examples]
