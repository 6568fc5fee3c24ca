"""The Model Registry: a run's logged model becomes a new version of a registered model, with an alias.

Versions are created with `mlflow.register_model` (which also lists the version on the logged model's
page: its `mlflow.modelVersions` tag), on the store of the client given.
"""

from __future__ import annotations

CHAMPION = "champion"
DESCRIPTION = "lightsweep classifier: raw samples in, class probabilities out"


def register(client, run, model, name: str, alias: str = CHAMPION, extra_tags: dict | None = None):
    """A new version of `name` for `model` (the run's LoggedModel), tagged with the run's metrics and
    overrides; `alias` moves to it (earlier versions stay). A model registered before keeps its version."""
    import mlflow

    from lightsweep.tracking.store import as_default

    source = f"models:/{model.model_id}"
    for existing in client.search_model_versions(f"name = '{name}'"):
        if existing.source == source:  # registered before: the alias moves back to it, no duplicate
            client.set_registered_model_alias(name, alias, existing.version)
            return existing
    tags = {"run_id": run.info.run_id, "run_name": run.info.run_name or ""}
    tags.update(
        {
            k: run.data.tags[k]
            for k in ("data", "model", "optimizer", "seed", "overrides", "stage")
            if k in run.data.tags
        }
    )
    tags.update({k: repr(v) for k, v in run.data.metrics.items() if k.startswith(("test/", "val/"))})
    tags.update(extra_tags or {})
    with as_default(client):
        # The registered model if it is new; the version (its run: the model's source run), and the
        # version's entry in the logged model's `mlflow.modelVersions` tag.
        version = mlflow.register_model(source, name, tags={k: str(v)[:5000] for k, v in tags.items()})
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=DESCRIPTION)
    client.set_registered_model_alias(name, alias, version.version)
    return version


def registry_name(run) -> str:
    """The default registered model name: `<data>-<model>` of the run (`fashion_mnist-mlp`)."""
    tags = run.data.tags
    return f"{tags.get('data', 'data')}-{tags.get('model', 'model')}"
