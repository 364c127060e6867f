"""The experiment config: one YAML file, parsed into these typed, validated sections.

Every section forbids unknown keys. The ``model`` section is validated by the schema that the named
model registers (see :mod:`recsys_cli.models.registry`), so each model owns its hyperparameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator, model_validator

from recsys_cli.config.search import SearchConfig, canonical_metric

MAX_NAME_LENGTH = 100  # run directory names must stay well under the file systems' 255 bytes


class Section(BaseModel):
    """Base of every config section: strict about unknown keys and non-finite floats, validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)


class ExperimentConfig(Section):
    name: str = Field("experiment", description="Experiment name; part of the run directory's name (at most "
                      "100 printable characters).")
    seed: int = Field(42, ge=0, lt=2**63, description="Seeds Python, NumPy and torch, and the data split "
                      "(0 ≤ seed < 2^63).")
    runs_dir: Path = Field(Path("runs"), description="Where run directories are created (env RECSYS_RUNS_DIR).")

    @field_validator("name")
    @classmethod
    def _name_is_path_safe(cls, value: str) -> str:
        if not value or any(c in value for c in '/\\:*?"<>|') or value.strip() != value:
            raise ValueError("must be non-empty, without spaces at the ends or any of / \\ : * ? \" < > |")
        if len(value) > MAX_NAME_LENGTH or not value.isprintable():
            raise ValueError(f"must be at most {MAX_NAME_LENGTH} printable characters (no tabs, newlines or "
                             "control characters)")
        return value


class SplitConfig(Section):
    protocol: Literal["holdout", "leave-k-out", "temporal", "import"] = Field(
        "holdout", description="holdout: global random sample of interactions (test, then validation from the rest)."
    )
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Share of interactions held out for test.")
    val_fraction: float = Field(
        0.2, ge=0, lt=1, description="Share of the remaining interactions held out for validation (0: none)."
    )
    k: int = Field(1, ge=1, description="leave-k-out: test (and validation) items per user.")
    order: Literal["random", "latest"] = Field("random", description="leave-k-out: which items a user leaves out.")
    course_compatible: bool = Field(
        False, description="holdout: the reference implementation's split exactly (legacy NumPy RNG, permutation applied twice)."
    )
    import_dir: Path | None = Field(None, description="import: folder with train.npz, test.npz and optional val.npz.")
    seed: int | None = Field(None, ge=0, lt=2**63,
                             description="Seed of the split (and of the synthetic data set); null: experiment.seed.")


class SyntheticConfig(Section):
    n_users: int = Field(2000, ge=2, description="synthetic data set: number of users.")
    n_items: int = Field(1000, ge=2, description="synthetic data set: number of items.")
    n_interactions: int = Field(100_000, ge=1, description="synthetic data set: target number of interactions.")
    n_factors: int = Field(8, ge=1, description="synthetic data set: rank of the planted preference structure.")
    popularity_exponent: float = Field(1.0, ge=0, description="synthetic data set: Zipf exponent of item popularity.")
    activity_exponent: float = Field(1.0, ge=0, description="synthetic data set: Zipf exponent of user activity.")


class DataConfig(Section):
    dataset: str = Field("movielens-10m", description="Data set name (recsys download --help lists them).")
    data_dir: Path = Field(Path("data"), description="Downloads, caches and splits (env RECSYS_DATA_DIR).")
    source: str | None = Field(None, description="Local zip or mirror URL to use instead of GroupLens.")
    md5: str | None = Field(None, description="Expected MD5 of the source zip, overriding the pinned one.")
    verify: bool = Field(True, description="Verify the zip's checksum.")
    split: SplitConfig = Field(default_factory=SplitConfig)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)


class EarlyStoppingConfig(Section):
    enabled: bool = Field(True, description="Stop when the validation metric stops improving.")
    metric: str = Field("NDCG", description="Validation metric column (any of the 27 evaluator columns).")
    cutoff: int = Field(10, ge=1, description="Cutoff of the validation metric.")
    patience: int = Field(5, ge=1, description="Evaluations without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest increase that counts as an improvement.")
    min_epochs: int = Field(0, ge=0, description="Never stop early before this many epochs.")
    patience_epochs: int | None = Field(
        None, ge=1, description="Stop when this many epochs pass after the best one (counted in epochs, whatever "
        "the evaluation schedule); replaces patience when set."
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        return canonical_metric(value)


class TrainingConfig(Section):
    epochs: int = Field(30, ge=1, description="Maximum number of epochs.")
    batch_size: int = Field(1024, ge=1, description="Mini-batch size (samples, or users for autoencoders).")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="Optimizer.")
    learning_rate: float = Field(1e-3, gt=0, description="Learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay of the optimizer.")
    momentum: float = Field(0.0, ge=0, lt=1, description="Momentum (sgd only).")
    grad_clip: float | None = Field(None, gt=0, description="Clip the gradient norm to this value.")
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="Average the weights: after each optimizer step average = decay * average "
        "+ (1 - decay) * weights, spanning ~1/(1 - decay) steps; validation, checkpoints and the final model use "
        "the average (null: off)."
    )
    eval_every: int = Field(1, ge=1, description="Validate every this many epochs.")
    eval_every_epoch_until: int = Field(
        0, ge=0, description="Validate after every epoch up to this one, then every eval_every epochs."
    )
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)


class EvaluationConfig(Section):
    cutoffs: list[int] = Field([10], min_length=1, description="Cutoffs of the metric table.")
    split: Literal["val", "test"] = Field("test", description="Which held-out part to evaluate on.")
    user_batch_size: int | None = Field(
        None, ge=1, description="Users scored per block (default: min(1000, 5e8 / n_items), on the CPU also at most "
        "24 MiB of float32 scores)."
    )
    min_ratings_per_user: int = Field(1, ge=1, description="Skip users with fewer ground-truth items.")
    exclude_seen: bool = Field(True, description="Remove each user's training items from the ranking.")
    ignore_users: list[int] = Field([], description="User indices left out of the evaluation.")
    ignore_items: list[int] = Field([], description="Item indices never recommended nor counted.")
    save_recommendations: int | None = Field(
        None, ge=1, description="recsys run also writes each user's top-K list to recommendations.parquet (null: no)."
    )

    @field_validator("cutoffs")
    @classmethod
    def _positive_sorted(cls, value: list[int]) -> list[int]:
        if any(k < 1 for k in value):
            raise ValueError("every cutoff must be >= 1")
        return sorted(set(value))


class DeviceConfig(Section):
    accelerator: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="auto picks cuda, then mps, then cpu."
    )
    dtype: Literal["float32", "float64", "float16", "bfloat16"] = Field(
        "float32", description="Floating-point type of models and tensors."
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: torch's choice).")
    memory_budget_gb: float | None = Field(
        None, gt=0, description="Cap on memory a model may plan to use (default: what the device has free)."
    )
    tf32: bool = Field(False, description="Allow TF32 matmuls on CUDA (faster, less exact float32).")


class RunConfig(Section):
    save_model: bool = Field(
        True, description="Save the fitted model in the run directory (needed by recsys evaluate; EASE on ML-10M "
        "writes ~456 MB)."
    )
    plot_formats: list[Literal["png", "pdf", "svg"]] = Field(
        ["png"], min_length=1, description="Files written for each plot (training curve, bench-dtype): png, pdf, svg."
    )


class ModelConfig(Section):
    """Base of every model's hyperparameter schema; subclasses fix ``name`` to their registered name."""

    name: str = Field(..., description="Registered model name (recsys models lists them).")


class Config(Section):
    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: SerializeAsAny[ModelConfig]
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    device: DeviceConfig = Field(default_factory=DeviceConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    # read by `recsys tune` only; left out of dumps so a trial's config.yaml and hash are a plain run's
    search: SearchConfig = Field(default_factory=SearchConfig, exclude=True)

    @field_validator("model", mode="before")
    @classmethod
    def _validate_model(cls, value: Any) -> ModelConfig:
        from recsys_cli.models.registry import model_config_class

        if isinstance(value, ModelConfig):
            return value
        if not isinstance(value, dict):
            raise ValueError("must be a mapping with at least a 'name' key")
        if "name" not in value:
            raise ValueError("needs a 'name' key naming the model")
        schema = model_config_class(str(value["name"]))
        return schema.model_validate(value)

    @model_validator(mode="after")
    def _check_cross_section(self) -> Config:
        from recsys_cli.models.registry import get_model_class

        if get_model_class(self.model.name).task == "recommendation":  # the Iris check names its own data
            from recsys_cli.data.registry import KNOWN_NAMES, unknown_name_error

            if self.data.dataset not in KNOWN_NAMES:
                raise ValueError(f"data.dataset: {unknown_name_error(self.data.dataset).one_line()}")
        if self.data.split.protocol == "import" and self.data.split.import_dir is None:
            raise ValueError("data.split.import_dir is required when data.split.protocol is 'import'")
        if self.search.space:
            from recsys_cli.config.search import check_space

            check_space(self)
        return self
