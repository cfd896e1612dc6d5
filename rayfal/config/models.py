"""The job file as pydantic v2 models: every name, key, type and range is checked here.

Every section forbids unknown keys and takes strict types (an integer is accepted where a number
is expected, nothing else is converted). The ``dataset`` section is a union discriminated by
``name`` (each member has only its own keys); strategy parameters are checked against the
strategy's ``Params`` (:mod:`rayfal.acquisition.base`) and ``training.mode_params`` against the
mode's ``Params`` (declared next to each mode in :mod:`rayfal.training`). Validators report
problems as :class:`~rayfal.config.errors.Invalid`, which the loader turns into one line naming
the dotted key, the bad value and what is allowed.

Checks that touch the file system (Parquet globs, raw data files of ``adult`` and
``colored_mnist``) run only when the validation context has ``check_files: true``
(:func:`rayfal.config.load_job` sets it).
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from rayfal.config.errors import Invalid, first_problem


class Section(BaseModel):
    """Base of every job-file section: unknown keys are errors, types are strict."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _check_files(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("check_files"))


# ----------------------------------------------------------------------------- value types


def _plain_name(value: str) -> str:
    if (not value or value.strip() != value or value in (".", "..")
            or any(c in value for c in "/\\\x00")):
        raise Invalid("must be a plain name (used in paths: not empty, no '/', '\\', '..', "
                      "no surrounding spaces)", value=value)
    return value


#: a name used as a directory name (job name, campaign label, variant name)
PlainName = Annotated[str, AfterValidator(_plain_name)]


def _count_or_auto(value: Any) -> Any:
    if value == "auto" and isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Invalid("must be an integer >= 1 or 'auto'", value=value)
    return value


def _amount_or_auto(value: Any) -> Any:
    if value == "auto" and isinstance(value, str):
        return value
    if (isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
            or value == float("inf")):
        raise Invalid("must be a number > 0 or 'auto'", value=value)
    return float(value)


#: an actor count: an integer >= 1, or ``"auto"`` (sized from the cluster)
CountOrAuto = Annotated[int | Literal["auto"],
                        PlainValidator(_count_or_auto,
                                       json_schema_input_type=int | Literal["auto"])]
#: a CPU amount: a number > 0, or ``"auto"``
AmountOrAuto = Annotated[float | Literal["auto"],
                         PlainValidator(_amount_or_auto,
                                        json_schema_input_type=float | Literal["auto"])]


# ----------------------------------------------------------------------------- dataset


def _parquet_files(pattern: str) -> list[str]:
    """The files ``pattern`` names as :func:`rayfal.data.pool.expand_paths` reads it (a
    directory: its ``*.parquet``; a glob; a file)."""
    p = Path(pattern)
    if p.is_dir():
        return sorted(glob.glob(str(p / "*.parquet")))
    if any(c in pattern for c in "*?["):
        return [f for f in sorted(glob.glob(pattern)) if Path(f).is_file()]
    return [pattern] if p.is_file() else []


def _check_per_seed(ds: Any) -> Any:
    if ds.per_seed and ds.dir:
        raise Invalid("cannot be combined with per_seed: true (each seed writes its own data "
                      "into the run directory)", loc=("dir",), value=ds.dir)
    return ds


def _prepared(directory: str | None, manifest: str) -> bool:
    return bool(directory) and (Path(directory) / manifest).is_file()


class DatasetConfig(Section):
    """Where the pool and the held-out test set come from: one of the members below, chosen by
    ``name`` (``glyphs`` when left out).

    ``DatasetConfig(name="adult", ...)`` builds the member named (``AdultDataset``);
    ``isinstance(x, DatasetConfig)`` holds for every member.
    """

    name: str

    def __new__(cls, *args: Any, **data: Any) -> Any:
        if cls is DatasetConfig:  # dispatch to the member named (its __init__ validates)
            member = dataset_member(data.get("name", "glyphs"))
            return member.__new__(member)
        return super().__new__(cls)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if cls is DatasetConfig:
            return TypeAdapter(Dataset).validate_python(obj, **kwargs)
        return super().model_validate(obj, **kwargs)


class GlyphsDataset(DatasetConfig):
    """Synthetic Synbols-like glyphs (rayfal/data/sources/glyphs.py), generated once and cached
    in ``dir`` (default: the run directory's ``data/``)."""

    name: Literal["glyphs"] = "glyphs"
    scenario: Literal["sensitive_attribute", "minority_group", "four_class"] = Field(
        "sensitive_attribute", description="bias scenario (four_class: 4 classes, noisy group 1)")
    n_pool: int = Field(2000, ge=1, description="pool rows")
    n_test: int = Field(1000, ge=1, description="test rows")
    seed: int = Field(0, description="data seed (independent of the campaign seeds)")
    per_seed: bool = Field(False, description="each campaign seed s draws its own data with "
                                              "data seed `seed + s`; the strategies of a seed "
                                              "share it (paired comparisons)")
    image_size: int = Field(32, ge=8, description="image side in pixels")
    minority_fraction: float = Field(0.1, ge=0, le=1,
                                     description="minority_group/four_class: minority share")
    correlation: float = Field(0.9, ge=0, le=1,
                               description="sensitive_attribute: p(colour | class) in the pool")
    shard_rows: int = Field(50_000, ge=1, description="rows per Parquet shard")
    dir: str | None = Field(None, description="where the data are written (default: the run "
                                              "directory's data/)")

    @model_validator(mode="after")
    def _per_seed_dir(self) -> GlyphsDataset:
        return _check_per_seed(self)


def _check_parquet_indexes(ds: Any, info: ValidationInfo) -> Any:
    """``pool`` and ``test`` of ``ds`` each match Parquet files (when files are checked)."""
    if _check_files(info):
        for key in ("pool", "test"):
            pattern = getattr(ds, key)
            if not _parquet_files(pattern):
                raise Invalid("no Parquet files match this path", loc=(key,), value=pattern)
    return ds


class ParquetDataset(DatasetConfig):
    """Existing Parquet shards in the pool schema (rayfal/data/schema.py)."""

    name: Literal["parquet"] = "parquet"
    pool: str = Field(description="the pool: a glob, a directory or a file of Parquet shards")
    test: str = Field(description="the labelled test set: a glob, a directory or a file")

    @model_validator(mode="after")
    def _files_exist(self, info: ValidationInfo) -> ParquetDataset:
        return _check_parquet_indexes(self, info)


class AdultDataset(DatasetConfig):
    """UCI Adult with PANDA's split (rayfal/data/sources/adult.py): meta / pool / test."""

    name: Literal["adult"] = "adult"
    src_dir: str | None = Field(None, description="folder with adult.data, adult.test and "
                                                   "adult.names (default $RAYFAL_ADULT_DIR or "
                                                   "../shared/data/adult)")
    seed: int = Field(0, description="split seed")
    per_seed: bool = Field(False, description="each campaign seed s draws its own data with "
                                              "data seed `seed + s`; the strategies of a seed "
                                              "share it (paired comparisons)")
    d0_size: int | None = Field(None, ge=1, description="rows of D labelled before round 0 "
                                                         "(null: all of D)")
    standardize: Literal["all", "numeric"] = Field("all", description="columns standardised")
    dir: str | None = Field(None, description="where the splits are written")

    FILES: ClassVar[tuple[str, ...]] = ("adult.data", "adult.test", "adult.names")

    @model_validator(mode="after")
    def _per_seed_dir(self) -> AdultDataset:
        return _check_per_seed(self)

    @model_validator(mode="after")
    def _files_exist(self, info: ValidationInfo) -> AdultDataset:
        if _check_files(info) and self.src_dir and not _prepared(self.dir, "manifest.json"):
            missing = [f for f in self.FILES if not (Path(self.src_dir) / f).is_file()]
            if missing:
                raise Invalid(f"{', '.join(missing)} not found in this folder", loc=("src_dir",),
                              value=self.src_dir)
        return self


class ColoredMnistDataset(DatasetConfig):
    """Colored-MNIST (GBA paper; rayfal/data/sources/colored_mnist.py) from ``mnist_5k.csv.gz``."""

    name: Literal["colored_mnist"] = "colored_mnist"
    src_dir: str | None = Field(None, description="folder with mnist_5k.csv.gz (default "
                                                   "../shared/data/mnist5k)")
    skew: float = Field(0.95, ge=0, le=1, description="fraction of bias-aligned pool rows")
    n_pool: int = Field(2000, ge=1, description="pool rows")
    n_test: int = Field(1000, ge=1, description="test rows")
    seed: int = Field(0, description="data seed")
    per_seed: bool = Field(False, description="each campaign seed s draws its own data with "
                                              "data seed `seed + s`; the strategies of a seed "
                                              "share it (paired comparisons)")
    image_size: int = Field(32, ge=28, description="image side (digits are 28 px)")
    shard_rows: int = Field(50_000, ge=1, description="rows per Parquet shard")
    dir: str | None = Field(None, description="where the data are written")

    @model_validator(mode="after")
    def _per_seed_dir(self) -> ColoredMnistDataset:
        return _check_per_seed(self)

    CSV: ClassVar[str] = "mnist_5k.csv.gz"

    @model_validator(mode="after")
    def _files_exist(self, info: ValidationInfo) -> ColoredMnistDataset:
        if _check_files(info) and self.src_dir and not _prepared(self.dir, "dataset.json"):
            if not (Path(self.src_dir) / self.CSV).is_file():
                raise Invalid(f"{self.CSV} not found in this folder", loc=("src_dir",),
                              value=self.src_dir)
        return self


class ImageFilesDataset(DatasetConfig):
    """Image files by path or URI (local, ``file://``, ``s3://``, ``gs://``): pool and test set
    are Parquet indexes with a ``uri`` column (``rayfal data index-images``), decoded batch by
    batch where they are scored and trained on (rayfal/data/images.py): Pillow decode, RGB or
    greyscale, resize to cover ``image_size`` and crop the centre, pixels in [0, 1]."""

    name: Literal["image_files"] = "image_files"
    pool: str = Field(description="the pool index: a glob, a directory or a file of Parquet "
                                  "shards with a 'uri' column")
    test: str = Field(description="the labelled test set's index (same layout)")
    image_size: int | None = Field(None, ge=8, le=4096,
                                   description="side of the decoded square image in pixels "
                                               "(null: the index's, set by index-images)")
    channels: Literal[1, 3] = Field(3, description="3 (RGB) or 1 (greyscale)")
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="an unlabelled pool file that cannot be read or decoded while "
                            "scoring: fail (error naming row_id and path) or skip (not scored, "
                            "reported with row_id and path); labelled and test rows always fail")

    @model_validator(mode="after")
    def _files_exist(self, info: ValidationInfo) -> ImageFilesDataset:
        return _check_parquet_indexes(self, info)

    def pool_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`rayfal.data.pool.Pool` for these indexes."""
        return {"image_size": self.image_size, "channels": self.channels,
                "on_error": self.on_error}


DATASETS: dict[str, type[DatasetConfig]] = {
    "glyphs": GlyphsDataset, "parquet": ParquetDataset, "adult": AdultDataset,
    "colored_mnist": ColoredMnistDataset, "image_files": ImageFilesDataset,
}


def dataset_member(name: Any) -> type[DatasetConfig]:
    """The dataset model called ``name``."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise Invalid("unknown", loc=("name",), value=name, allowed=sorted(DATASETS)) from None


def _default_dataset_name(value: Any) -> Any:
    if isinstance(value, dict) and "name" not in value:
        return {"name": "glyphs", **value}
    return value


Dataset = Annotated[
    Union[GlyphsDataset, ParquetDataset, AdultDataset, ColoredMnistDataset,  # noqa: UP007
          ImageFilesDataset],
    Field(discriminator="name"),
    BeforeValidator(_default_dataset_name),
]


# ----------------------------------------------------------------------------- model, oracle


def _target_problem(target: str) -> str | None:
    """Why ``"package.module:Attribute"`` cannot be loaded (``None``: it can)."""
    from rayfal.models.custom import load_target

    try:
        load_target(target)
    except ValueError as exc:
        return str(exc).removeprefix("model.target: ")
    return None


class PretrainConfig(Section):
    """How the ``glyph-trunk`` is pretrained (:mod:`rayfal.models.pretrain`): a 10-way
    classifier of the job's CNN architecture on a glyph set disjoint from every campaign
    (other characters, fonts and colours), trained once with Ray Train and cached in
    ``RUN_DIR/pretrained/glyph-trunk-<hash>`` (hash of these settings and the architecture)."""

    steps: int = Field(600, ge=1, description="optimiser steps (at least one pass over n_rows)")
    n_rows: int = Field(4000, ge=1, description="training rows of the pretraining set")
    n_test: int = Field(1000, ge=1, description="held-out rows (the reported accuracy)")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    seed: int = Field(0, description="data and training seed of the pretraining")
    num_workers: int = Field(0, ge=0, description="Ray Train workers (0: in the driver)")


class ModelConfig(Section):
    """The network: a built-in model (``name``) or a user's torch model by import path
    (``target``, built as ``Class(input_shape, num_classes, **kwargs)``).

    ``pretrained: glyph-trunk`` starts the CNN's trunk from weights pretrained on a disjoint
    synthetic glyph set (``pretrain`` settings; the head stays randomly initialised) and
    ``freeze_trunk`` keeps those trunk weights fixed during training."""

    name: Literal["auto", "cnn", "mlp", "linear", "torchvision"] = Field(
        "auto", description="auto: cnn for images, mlp for feature vectors; torchvision: a "
                            "torchvision backbone (arch) as the trunk under an MC-dropout head")
    arch: Literal["resnet18", "resnet50", "mobilenet_v3_small", "efficientnet_b0",
                  "vit_b_16"] | None = Field(None, description="torchvision: the backbone")
    weights: str | None = Field(None, description="torchvision: the backbone's weights, a "
                                                  ".safetensors file of its state_dict (null: "
                                                  "random initialisation; nothing is "
                                                  "downloaded)")
    dropout: float = Field(0.5, ge=0, lt=1, description="MC-dropout rate of the head")
    hidden: int = Field(128, ge=1, description="hidden units of the head")
    width: int = Field(32, ge=1, description="cnn: channels of the first conv layer")
    target: str | None = Field(None, description="a user's model, 'package.module:Class' "
                                                 "(name must then be 'auto')")
    kwargs: dict[str, Any] = Field(default_factory=dict,
                                   description="keyword arguments of the target's constructor")
    pretrained: Literal["glyph-trunk"] | None = Field(
        None, description="glyph-trunk: the cnn trunk pretrained on a disjoint glyph set "
                          "(null: random initialisation)")
    freeze_trunk: bool = Field(False, description="with pretrained or torchvision: train the "
                                                  "head only")
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig,
                                     description="settings of the glyph-trunk pretraining")

    @model_validator(mode="after")
    def _check_torchvision(self, info: ValidationInfo) -> ModelConfig:
        if self.name != "torchvision":
            for key in ("arch", "weights"):
                if getattr(self, key) is not None:
                    raise Invalid("only used with model.name: torchvision", loc=(key,),
                                  value=getattr(self, key))
            return self
        if self.arch is None:
            raise Invalid("model.name torchvision needs an arch", loc=("arch",), value=None,
                          allowed=["resnet18", "resnet50", "mobilenet_v3_small",
                                   "efficientnet_b0", "vit_b_16"])
        if self.weights is not None:
            if not self.weights.endswith(".safetensors"):
                raise Invalid("must be a .safetensors file (never pickle)", loc=("weights",),
                              value=self.weights)
            if _check_files(info) and not Path(self.weights).is_file():
                raise Invalid("file not found", loc=("weights",), value=self.weights)
        return self

    @model_validator(mode="after")
    def _check_target(self) -> ModelConfig:
        if self.pretrained is not None and (self.target is not None
                                            or self.name not in ("auto", "cnn")):
            raise Invalid("glyph-trunk is a cnn trunk: needs model.name auto or cnn and no "
                          "model.target", loc=("pretrained",), value=self.pretrained)
        if self.freeze_trunk and self.pretrained is None and self.name != "torchvision":
            raise Invalid("freezing a random trunk: set model.pretrained too",
                          loc=("freeze_trunk",), value=self.freeze_trunk)
        if self.target is None:
            if self.kwargs:
                raise Invalid("only used with model.target", loc=("kwargs",), value=self.kwargs)
            return self
        if self.name != "auto":
            raise Invalid("must be 'auto' when model.target is set", loc=("name",),
                          value=self.name)
        problem = _target_problem(self.target)
        if problem:
            raise Invalid(problem, loc=("target",), value=self.target)
        return self


class SimulatedOracle(Section):
    """Labels come from the data's hidden ``label`` column."""

    kind: Literal["simulated"] = "simulated"


Aggregation = Literal["none", "majority"]


class FilesOracle(Section):
    """People label each query batch in files: the campaign writes
    ``RUN_DIR/queries/<campaign>/seed_<s>/round_NNN.{parquet,csv,png}`` and waits;
    ``rayfal labels import`` brings the labels in, ``rayfal run RUN_DIR --resume`` goes on."""

    kind: Literal["files"] = "files"
    aggregation: Aggregation = Field(
        "none", description="several annotators of one row: 'none' = disagreement is an "
                            "error; 'majority' = the most frequent label (ties reported)")


class LabelStudioOracle(Section):
    """People label each query batch in a Label Studio project (tasks imported by rayfal,
    annotations pulled by ``rayfal labels sync``)."""

    kind: Literal["label_studio"] = "label_studio"
    url: str = Field(description="the Label Studio server, e.g. http://127.0.0.1:8080")
    project: str = Field(description="project title (created when missing, else reused)")
    api_key_env: str = Field("LABEL_STUDIO_API_KEY",
                             description="environment variable holding the API token")
    aggregation: Aggregation = "none"

    @model_validator(mode="after")
    def _check_url(self) -> LabelStudioOracle:
        if not self.url.startswith(("http://", "https://")):
            raise Invalid("must start with http:// or https://", loc=("url",), value=self.url)
        return self


def _default_oracle_kind(value: Any) -> Any:
    if isinstance(value, dict) and "kind" not in value:
        return {"kind": "simulated", **value}
    return value


OracleConfig = Annotated[
    Union[SimulatedOracle, FilesOracle, LabelStudioOracle],  # noqa: UP007
    Field(discriminator="kind"),
    BeforeValidator(_default_oracle_kind),
]


# ----------------------------------------------------------------------------- training


class TrainingConfig(Section):
    """Ray Train settings and the per-round optimisation.

    ``mode`` is a registered training mode or a composition ``"robust+fair"``
    (``rayfal strategies`` lists them); ``mode_params`` are checked against its ``Params``.

    Weights: reset to the campaign's initial weights every round (default, the BALD-fairness
    paper's protocol) or, with ``warm_start: true``, round ``r > 0`` fine-tunes round
    ``r - 1``'s trained weights (FRAL, Algorithm 1 line 12). Optimiser (fresh every round):
    ``optimizer`` adam (default) or sgd (with ``momentum``), ``schedule`` constant (default) or
    cosine over the round's steps after a linear warm-up of ``warmup_frac`` of them, and
    ``grad_clip`` (global gradient-norm clipping; null: none). The defaults train exactly as
    before these keys existed.
    """

    mode: str = Field("standard", description="training mode, e.g. standard, trades, grad, "
                                              "trades+grad (rayfal strategies lists them)")
    mode_params: dict[str, Any] = Field(default_factory=dict,
                                        description="the mode's parameters")
    epochs: int = Field(20, ge=1, description="epochs per round")
    min_steps: int = Field(100, ge=0, description="at least this many optimiser steps")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0, description="learning rate (peak of the schedule)")
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adam", "sgd"] = Field("adam", description="adam or sgd (with momentum)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (ignored by adam)")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="learning rate over a round's steps: constant or cosine "
                                "annealing to 0")
    warmup_frac: float = Field(0.0, ge=0, lt=1, description="linear warm-up over this fraction "
                                                            "of a round's steps")
    grad_clip: float | None = Field(None, gt=0, description="clip the global gradient L2 norm "
                                                            "to this (null: no clipping)")
    warm_start: bool = Field(False, description="round r > 0 starts from round r-1's trained "
                                                "weights (false: the initial weights, every "
                                                "round)")
    num_workers: int = Field(0, ge=0, description="Ray Train workers (0: train in the driver "
                                                  "process)")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"

    @model_validator(mode="after")
    def _check_mode(self) -> TrainingConfig:
        check_training_mode(self.mode, self.mode_params)
        return self


def check_training_mode(mode: str, params: dict[str, Any]) -> None:
    """``mode`` against the registry and ``params`` against its ``Params``, as :class:`Invalid`
    located at ``mode`` / ``mode_params.<key>``."""
    from rayfal.training import mode_names
    from rayfal.training.compose import check_mode, mode_params_model

    try:
        check_mode(mode)
    except KeyError as exc:
        unknown = str(exc.args[0]) if exc.args else str(exc)
        why = "unknown" if "+" not in mode else unknown.split(";")[0]
        raise Invalid(why, loc=("mode",), value=mode, allowed=mode_names()) from None
    except ValueError as exc:
        raise Invalid(str(exc), loc=("mode",), value=mode) from None
    model = mode_params_model(mode)
    try:
        model.model_validate(dict(params))
    except ValidationError as exc:
        raise first_problem(exc, model, prefix=("mode_params",)) from None


# ----------------------------------------------------------------------------- schedule, scoring


class ALConfig(Section):
    """The labelling schedule: ``initial_labels`` random rows, then ``query_size`` per round,
    for ``rounds`` rounds or until ``max_frac`` of the pool is labelled."""

    initial_labels: int = Field(20, ge=1)
    query_size: int = Field(50, ge=1)
    rounds: int | None = Field(None, ge=0, description="query rounds (wins over max_frac)")
    max_frac: float | None = Field(0.1, gt=0, le=1, description="stop at this labelled fraction")

    @model_validator(mode="after")
    def _one_stop(self) -> ALConfig:
        if self.rounds is None and self.max_frac is None:
            raise Invalid("set 'rounds' or 'max_frac' (both are null)")
        return self


_RAY_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


class ScoringConfig(Section):
    """Ray Data pool scoring: actor pool size/CPUs ('auto' adapts to the cluster).

    ``compute: actors`` scores with an actor pool (model loaded once per actor); ``tasks`` with
    a task pool whose worker processes cache the model; ``auto`` uses actors for pools of
    ``actor_min_rows`` rows or more. ``actor_resources`` (e.g. ``{rayfal_scorer: 1}``) are
    custom Ray resources each scoring actor/task requests.
    """

    compute: Literal["auto", "actors", "tasks"] = "auto"
    actor_min_rows: int = Field(100_000, ge=0)
    batch_size: int = Field(512, ge=1)
    actors: CountOrAuto = "auto"
    cpus_per_actor: AmountOrAuto = "auto"
    gpus_per_actor: float = Field(0.0, ge=0)
    mc_samples: int = Field(20, ge=1, description="MC-dropout samples per row")
    scheduling_strategy: Literal["DEFAULT", "SPREAD"] = "SPREAD"
    actor_start_timeout_s: int = Field(600, ge=1)
    actor_locality: bool = True
    actor_resources: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="custom Ray resources per scoring actor/task")

    @model_validator(mode="after")
    def _custom_resources(self) -> ScoringConfig:
        for name, amount in self.actor_resources.items():
            if name in _RAY_RESOURCES:
                raise Invalid("only custom resource names (CPU/GPU/memory are set by "
                              "cpus_per_actor/gpus_per_actor)",
                              loc=("actor_resources", name), value=amount)
        return self


class EvaluationConfig(Section):
    """Test metrics per round; ``robust: true`` adds FRAL's robust metrics (L-inf PGD).
    ``val_fraction > 0`` moves that fraction of the test rows to a validation split used only
    to find the worst group z*."""

    mc_samples: int = Field(20, ge=1)
    batch_size: int = Field(512, ge=1)
    robust: bool = False
    robust_eps: float = Field(8 / 255, ge=0)
    robust_alpha: float = Field(2 / 255, gt=0)
    robust_steps: int = Field(20, ge=0)
    val_fraction: float = Field(0.0, ge=0, lt=1)
    worst_group_by: Literal["accuracy", "robust_accuracy"] = "accuracy"

    @model_validator(mode="after")
    def _robust_needed(self) -> EvaluationConfig:
        if self.worst_group_by == "robust_accuracy" and not self.robust:
            raise Invalid("needs evaluation.robust: true", loc=("worst_group_by",),
                          value=self.worst_group_by)
        return self


# ----------------------------------------------------------------------------- campaigns, job


class CampaignConfig(Section):
    """One strategy (with its parameters and optional training overrides) run over the seeds."""

    strategy: str = Field("random", description="a registered strategy (rayfal strategies)")
    label: PlainName | None = Field(None, description="the campaign's name (default: strategy)")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="the strategy's parameters")
    training: dict[str, Any] = Field(default_factory=dict,
                                     description="overrides of the job's training section")

    @property
    def name(self) -> str:
        return self.label or self.strategy

    @model_validator(mode="after")
    def _check_strategy(self) -> CampaignConfig:
        import rayfal.acquisition  # noqa: F401  (registers every strategy)
        from rayfal.acquisition.base import STRATEGIES

        if self.strategy not in STRATEGIES:
            raise Invalid("unknown", loc=("strategy",), value=self.strategy,
                          allowed=STRATEGIES.names())
        params_model = STRATEGIES.get(self.strategy).Params
        try:
            params_model.model_validate(dict(self.params))
        except ValidationError as exc:
            raise first_problem(exc, params_model, prefix=("params",)) from None
        return self


class RayConfig(Section):
    """Where Ray runs: ``address`` (null: an embedded local Ray) and its local settings."""

    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    object_store_memory: int | None = Field(1_000_000_000, ge=1)
    include_dashboard: bool = False


class Variant(Section):
    """A sub-job: the job with ``set`` (dotted keys) applied, run in ``RUN_DIR/<name>``."""

    name: PlainName
    set: dict[str, Any] = Field(default_factory=dict, description="{dotted.key: value}")


def _tracking_uri(value: str) -> str:
    from urllib.parse import urlparse

    allowed = "sqlite:///PATH, file:PATH or http(s)://HOST[:PORT]"
    scheme = value.split(":", 1)[0].lower() if ":" in value else ""
    if scheme == "sqlite":
        path = value[len("sqlite:///"):].split("?", 1)[0] if value.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            raise Invalid("an SQLite tracking URI names a database file: sqlite:///RELATIVE/PATH "
                          "or sqlite:////ABSOLUTE/PATH", value=value)
    elif scheme == "file":
        import os

        if not urlparse(value).path:
            raise Invalid(f"a file store URI needs a path (file:///ABSOLUTE/DIR); allowed: "
                          f"{allowed}", value=value)
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
            raise Invalid("MLflow 3 refuses its file store (maintenance mode): use "
                          "sqlite:///PATH, or set MLFLOW_ALLOW_FILE_STORE=true", value=value)
    elif scheme in ("http", "https"):
        if not urlparse(value).netloc:
            raise Invalid(f"a tracking server URI needs a host; allowed: {allowed}", value=value)
    else:
        raise Invalid(f"not an MLflow tracking URI; allowed: {allowed}", value=value)
    return value


class MlflowTrackingConfig(Section):
    """An MLflow tracking store: each campaign (x seed) is a run nested under one run of the
    job (rayfal/tracking/mlflow.py)."""

    uri: Annotated[str, AfterValidator(_tracking_uri)] = Field(
        description="tracking URI: sqlite:///PATH, file:PATH or http(s)://HOST[:PORT]")
    experiment: str | None = Field(None, min_length=1,
                                   description="experiment name (default: the job's name)")
    run_name_prefix: str | None = Field(None, description="prefix of every run's name")
    artifact_location: str | None = Field(
        None, min_length=1, description="artefact root of a new experiment (default with "
                                        "sqlite: mlartifacts/ next to the database file)")


class TrackingConfig(Section):
    """Experiment tracking (null: off)."""

    mlflow: MlflowTrackingConfig | None = Field(None, description="log to MLflow")


class JobConfig(Section):
    """A job file (see the README's table of keys)."""

    name: PlainName = Field("job", description="the job's name (default run dir runs/<name>)")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    dataset: Dataset = Field(default_factory=GlyphsDataset)
    model: ModelConfig = Field(default_factory=ModelConfig)
    oracle: OracleConfig = Field(default_factory=SimulatedOracle)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    al: ALConfig = Field(default_factory=ALConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    campaigns: list[CampaignConfig] = Field(default_factory=lambda: [CampaignConfig()],
                                            min_length=1)
    ray: RayConfig = Field(default_factory=RayConfig)
    variants: list[Variant] = Field(default_factory=list,
                                    description="sub-jobs, each {name, set: {key: value}}")
    tune: dict[str, Any] = Field(default_factory=dict,
                                 description="rayfal tune: space, objectives, num_samples, ...")
    tracking: TrackingConfig | None = Field(None, description="experiment tracking, e.g. "
                                                              "{mlflow: {uri, experiment}}")

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> JobConfig:
        if len(set(self.seeds)) != len(self.seeds):
            raise Invalid("duplicate seeds", loc=("seeds",), value=self.seeds)
        names = [c.name for c in self.campaigns]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise Invalid(f"duplicate campaign name (campaigns[{names.index(name)}] has it); "
                              "give each campaign a distinct 'label'",
                              loc=("campaigns", i), value=name)
        base = self.training.model_dump()
        for i, c in enumerate(self.campaigns):
            if c.training:
                try:
                    TrainingConfig.model_validate({**base, **c.training}, context=info.context)
                except ValidationError as exc:
                    raise first_problem(exc, TrainingConfig,
                                        prefix=("campaigns", i, "training")) from None
        vnames = [v.name for v in self.variants]
        for i, name in enumerate(vnames):
            if name in vnames[:i]:
                raise Invalid("duplicate variant name", loc=("variants", i, "name"), value=name)
        if self.tune:
            from rayfal.config.errors import ConfigError
            from rayfal.config.tune_section import parse_tune

            try:
                parse_tune(self.tune)
            except ConfigError as exc:  # its message names tune.<key>
                raise Invalid(str(exc)) from None
        return self

    def to_dict(self) -> dict[str, Any]:
        """The resolved job (every default filled in) as plain data."""
        return self.model_dump()


__all__ = [
    "DATASETS",
    "ALConfig",
    "AdultDataset",
    "CampaignConfig",
    "ColoredMnistDataset",
    "Dataset",
    "DatasetConfig",
    "EvaluationConfig",
    "GlyphsDataset",
    "ImageFilesDataset",
    "JobConfig",
    "ModelConfig",
    "OracleConfig",
    "ParquetDataset",
    "PlainName",
    "RayConfig",
    "ScoringConfig",
    "Section",
    "SimulatedOracle",
    "TrainingConfig",
    "Variant",
    "check_training_mode",
    "dataset_member",
]
