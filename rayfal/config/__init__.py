"""Job files: YAML -> validated pydantic models, with dotted ``--set a.b=value`` overrides.

* :mod:`~rayfal.config.models` — the sections (``extra="forbid"``, strict types; the dataset a
  union discriminated by ``name``; strategy and mode parameters checked against their
  ``Params``);
* :mod:`~rayfal.config.load` — :func:`load_job` (a file or a mapping, plus overrides),
  :func:`config_from_dict`, :func:`expand_variants`, :func:`set_dotted`,
  :func:`campaign_training`;
* :mod:`~rayfal.config.errors` — :class:`ConfigError` (one line: source, dotted key, bad value,
  allowed values);
* :mod:`~rayfal.config.schema` — :func:`job_schema` (``rayfal schema``).
"""

from rayfal.config.errors import ConfigError, Invalid, format_validation_error
from rayfal.config.load import (
    _set_dotted,
    campaign_training,
    config_from_dict,
    expand_variants,
    load_job,
    parse_override,
    set_dotted,
)
from rayfal.config.models import (
    DATASETS,
    AdultDataset,
    ALConfig,
    CampaignConfig,
    ColoredMnistDataset,
    Dataset,
    DatasetConfig,
    EvaluationConfig,
    GlyphsDataset,
    JobConfig,
    ModelConfig,
    OracleConfig,
    ParquetDataset,
    RayConfig,
    ScoringConfig,
    SimulatedOracle,
    TrainingConfig,
    Variant,
)
from rayfal.config.schema import job_schema

__all__ = [
    "DATASETS",
    "ALConfig",
    "AdultDataset",
    "CampaignConfig",
    "ColoredMnistDataset",
    "ConfigError",
    "Dataset",
    "DatasetConfig",
    "EvaluationConfig",
    "GlyphsDataset",
    "Invalid",
    "JobConfig",
    "ModelConfig",
    "OracleConfig",
    "ParquetDataset",
    "RayConfig",
    "ScoringConfig",
    "SimulatedOracle",
    "TrainingConfig",
    "Variant",
    "_set_dotted",
    "campaign_training",
    "config_from_dict",
    "expand_variants",
    "format_validation_error",
    "job_schema",
    "load_job",
    "parse_override",
    "set_dotted",
]
