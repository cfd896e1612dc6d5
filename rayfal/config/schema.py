"""The JSON Schema of job files (``rayfal schema > job.schema.json``), for editors.

The models' own schema (:meth:`JobConfig.model_json_schema`), completed with what lives in the
registries: the strategy names and each strategy's ``params``, the training modes and each
mode's ``mode_params`` (``if``/``then`` on the name), and the keys of the ``tune:`` section.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from rayfal.config.models import JobConfig

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _sub_schema(model: type[BaseModel], defs: dict[str, Any]) -> dict[str, Any]:
    """``model``'s schema with its ``$defs`` merged into ``defs`` (prefixed by the model name)."""
    prefix = model.__name__ + "."
    schema = model.model_json_schema(ref_template="#/$defs/" + prefix + "{model}")
    for name, sub in schema.pop("$defs", {}).items():
        defs[prefix + name] = sub
    return schema


def _by_name(key: str, value: str, then_key: str, then: dict[str, Any]) -> dict[str, Any]:
    return {"if": {"properties": {key: {"const": value}}, "required": [key]},
            "then": {"properties": {then_key: then}}}


def job_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a job file."""
    import rayfal.acquisition  # noqa: F401  (registers every strategy)
    from rayfal.acquisition.base import STRATEGIES
    from rayfal.config.tune_section import TUNE_KEYS
    from rayfal.training import mode_names, mode_params_model

    schema = copy.deepcopy(JobConfig.model_json_schema())
    defs = schema.setdefault("$defs", {})

    camp = defs["CampaignConfig"]
    camp["properties"]["strategy"]["enum"] = STRATEGIES.names()
    camp["allOf"] = [
        _by_name("strategy", name, "params", _sub_schema(STRATEGIES.get(name).Params, defs))
        for name in STRATEGIES.names()
    ]

    training = defs["TrainingConfig"]
    names = mode_names()
    training["properties"]["mode"] = {
        **training["properties"]["mode"], "anyOf": [{"enum": names}, {"type": "string"}],
    }
    training["allOf"] = [
        _by_name("mode", name, "mode_params", _sub_schema(mode_params_model(name), defs))
        for name in names
    ]
    camp["properties"]["training"]["propertyNames"] = {
        "enum": sorted(training["properties"])}

    # a dataset without 'name' is glyphs: the other members need it (so 'oneOf' picks one)
    from rayfal.config.models import DATASETS

    for name, member in DATASETS.items():
        if name != "glyphs":
            defs[member.__name__]["required"] = sorted({*defs[member.__name__].get("required", ()),
                                                        "name"})

    schema["properties"]["tune"]["propertyNames"] = {"enum": sorted(TUNE_KEYS)}
    schema["$schema"] = SCHEMA_DIALECT
    schema["title"] = "rayfal job"
    schema["description"] = ("A rayfal job file: data set, model, training, labelling schedule, "
                             "scoring, evaluation, campaigns (strategy x seeds).")
    return schema


__all__ = ["SCHEMA_DIALECT", "job_schema"]
