"""The Model Registry: `run --register-as`'s `latest-<preset>` alias, and `compare --promote`
pointing an alias at the registered version of the model a comparison chose.

A registered name holds one task's model of one language (`NAME-generation-python`), so an alias
is set per task and language.
Promotion is planned before anything is written: a refusal (a bad alias, a best model that is
not registered and no name to register it under) leaves the registry as it was.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from benchmark.config import UsageError
from core import record as rec  # the run record's names

ALIAS = re.compile(r"^[\w-]{1,255}$")
RESERVED_ALIAS = re.compile(r"^(latest|[vV]\d+)$", re.IGNORECASE)


def check_alias(alias: str, option: str = "--promote") -> None:
    """Refuse an alias MLflow would refuse, in one line naming the option."""
    if not ALIAS.match(alias):
        raise UsageError(
            f"{option} {alias!r}: an alias is 1-255 letters, digits, underscores or dashes "
            "(e.g. production)"
        )
    if RESERVED_ALIAS.match(alias):
        raise UsageError(
            f"{option} {alias!r}: 'latest' and v<number> are MLflow's own names for versions; "
            "choose another alias (e.g. production)"
        )


def set_latest_alias(name: str, version: int | str, preset: str) -> str:
    """Point `latest-<preset>` at the version a run just registered; the alias."""
    alias = rec.latest_alias(preset)
    MlflowClient().set_registered_model_alias(name, alias, str(version))
    return alias


@dataclass
class Choice:
    """The model a comparison chose for one language, and why."""

    language: str
    method: str
    run_id: str
    metric: str
    value: float
    higher_is_better: bool


@dataclass
class Step:
    """What promoting one language's model does: the version the alias will point at, or the
    model to register first (`version` empty)."""

    choice: Choice
    name: str
    model_id: str
    version: str
    registered_now: bool = False


def model_id_of(client: MlflowClient, run_id: str, scope: str) -> str:
    """The id of a run's logged model of a `<task>/<language>` scope, from its model-URI tag."""
    tag = rec.model_uri_tag(*rec.split_scope(scope))
    uri = client.get_run(run_id).data.tags.get(tag, "")
    if not uri.startswith("models:/"):
        raise UsageError(
            f"run {run_id} has no logged {scope} model (no models:/ URI in its {tag} tag): it "
            "cannot be promoted; rerun it"
        )
    return uri.removeprefix("models:/").split("/")[0]


def plan(
    client: MlflowClient, alias: str, choices: list[Choice], register_as: str = ""
) -> list[Step]:
    """The promotion of each chosen model, checked before anything is written.

    A chosen model already registered is promoted as that version (under `register_as`'s name
    when given, else under the one name it is registered under); one that is not is registered
    as `<register_as>-<language>` first, and without `register_as` the plan is refused.
    """
    check_alias(alias)
    steps = []
    for choice in choices:
        model_id = model_id_of(client, choice.run_id, choice.language)
        versions = [
            v
            for v in client.search_model_versions(f"run_id = '{choice.run_id}'")
            if model_id in (v.model_id, v.source.removeprefix("models:/"))  # the store's choice
        ]
        wanted = rec.registered_name(register_as, choice.language) if register_as else ""
        if wanted:
            found = [v for v in versions if v.name == wanted]
            version = str(max(int(v.version) for v in found)) if found else ""
            steps.append(Step(choice, wanted, model_id, version))
            continue
        names = sorted({v.name for v in versions})
        if not names:
            raise UsageError(
                f"the best {choice.language} model ({choice.method}, run {choice.run_id}) is not "
                "in the Model Registry: pass --register-as NAME to register it as "
                f"{rec.registered_name('NAME', choice.language)}"
            )
        if len(names) > 1:
            raise UsageError(
                f"the best {choice.language} model ({choice.method}, run {choice.run_id}) is "
                f"registered as {', '.join(names)}: pass --register-as NAME to say which"
            )
        newest = max((v for v in versions if v.name == names[0]), key=lambda v: int(v.version))
        steps.append(Step(choice, names[0], model_id, str(newest.version)))
    return steps


def promote(client: MlflowClient, alias: str, steps: list[Step], comparison_run_id: str) -> None:
    """Register what the plan says, point `alias` at each version and tag it with the
    comparison run that chose it (and the metric); `steps` gets the versions."""
    for step in steps:
        if not step.version:
            if not _exists(client, step.name):
                client.create_registered_model(step.name)
            created = client.create_model_version(
                step.name,
                f"models:/{step.model_id}",
                run_id=step.choice.run_id,
                model_id=step.model_id,
            )
            step.version, step.registered_now = str(created.version), True
            _note_version(client, step.model_id, step.name, step.version)
        client.set_registered_model_alias(step.name, alias, step.version)
        choice = step.choice
        way = "higher" if choice.higher_is_better else "lower"
        client.set_model_version_tag(step.name, step.version, rec.PROMOTED_BY, comparison_run_id)
        client.set_model_version_tag(
            step.name,
            step.version,
            rec.PROMOTED_METRIC,
            f"{choice.metric}={choice.value:.6g} ({way} is better)",
        )


def _note_version(client: MlflowClient, model_id: str, name: str, version: str) -> None:
    """Add the version to the logged model's own list, as `mlflow.register_model` does: the
    Models tab's "Registered models" column reads it."""
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    listed = client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS)
    versions = [*(json.loads(listed) if listed else []), {"name": name, "version": version}]
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(versions)})


def _exists(client: MlflowClient, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        return False
    return True
