"""The Hugging Face hub behind hub ids: the exact commit a name stands for, and whether the hub
answers at all, so that a run pins what it loads and an unreachable hub fails in seconds.

Offline (`HF_HUB_OFFLINE=1`) the commit is the hub cache's (what `hf download` left: `refs/<branch>`
names a snapshot folder `snapshots/<commit>/`); online it is the hub's own answer.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from benchmark.config import UsageError

COMMIT = re.compile(r"[0-9a-f]{40}")
CHECK_TIMEOUT_S = 5.0
PREFILL = (
    "`hf download Salesforce/codet5-small`, "
    "`hf download --repo-type dataset google/code_x_glue_ct_code_to_text`"
)


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) keeps transformers off the network."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_snapshot(repo_id: str, revision: str, repo_type: str, marker: str) -> Path | None:
    """The cached snapshot folder of `repo_id` at `revision` (a branch, tag or commit; "" = main)
    that holds `marker` (a file every copy has), or None."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, marker, revision=revision or None, repo_type=repo_type)
    if not isinstance(path, str):  # None, or the cache's note that the file does not exist
        return None
    snapshot = Path(path).parent
    for _ in Path(marker).parent.parts:
        snapshot = snapshot.parent
    return snapshot if COMMIT.fullmatch(snapshot.name) else None


def hub_commit(repo_id: str, revision: str, repo_type: str, setting: str) -> str:
    """The commit the hub names for `repo_id` at `revision` ("" = main). Online only."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    require_hub(f"{setting} {repo_id!r}")
    kind = "data set" if repo_type == "dataset" else "model"
    try:
        info = HfApi().repo_info(
            repo_id, revision=revision or None, repo_type=repo_type, timeout=30
        )
    except RevisionNotFoundError:
        raise UsageError(
            f"{setting} {repo_id!r}: the hub has no revision {revision!r} (a branch, tag or commit)"
        ) from None
    except GatedRepoError as err:
        raise UsageError(f"{setting} {repo_id!r} is gated on the hub: {err}") from None
    except RepositoryNotFoundError:
        raise UsageError(
            f"{setting} {repo_id!r}: no such {kind} on the hub (or it is private: log in with "
            "`hf auth login`)"
        ) from None
    if not info.sha or not COMMIT.fullmatch(info.sha):
        raise UsageError(f"{setting} {repo_id!r}: the hub named no commit for it ({info.sha!r})")
    return info.sha


def require_hub(what: str) -> None:
    """Fail fast, in one line, when the hub cannot be reached and offline mode is off."""
    from huggingface_hub import constants

    problem = _unreachable(constants.ENDPOINT)
    if problem:
        raise UsageError(
            f"the Hugging Face hub at {constants.ENDPOINT} cannot be reached ({problem}) and "
            f"offline mode is off, so loading {what} would spend minutes in retries. Set "
            f"HF_HUB_OFFLINE=1 to load from the hub cache (pre-fill it where there is internet: "
            f"{PREFILL}), or point model.name / data.source at local folders"
        )


@functools.cache
def _unreachable(endpoint: str) -> str:
    """Why the endpoint gives no answer at all ("" when it answers, whatever the status).

    Asked once per process: one short request, no retries."""
    from huggingface_hub import get_session

    try:
        get_session().head(endpoint, timeout=CHECK_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - any failure to get an answer means unreachable
        return f"{type(err).__name__}: {err}".splitlines()[0][:200]
    return ""
