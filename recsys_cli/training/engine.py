"""The shared epoch loop of every trainable recommender (DAE, two-tower, LightGCN, ...).

A model subclasses :class:`TrainableRecommender` and implements four hooks; :class:`Trainer` does
the rest (optimizer, device/dtype, autocast, gradient clipping, validation, early stopping, best
weights, checkpoints, resume, NaN detection, per-epoch log, ``train_log.csv`` and the curve PNG)::

    @register
    class MyModel(TrainableRecommender):
        name = "my-model"; Config = MyConfig

        def build(self, train):                 # create parameters for train's shape (seeded for you)
            self.emb = nn.Embedding(...)
        def epoch_batches(self, train, generator):  # one epoch of shuffled mini-batches
            for idx in torch.randperm(n, generator=generator).split(bs):
                yield (users[idx], items[idx])  # any object; tensors may stay on the CPU
        def training_loss(self, batch):          # a scalar tensor (runs under autocast when it applies)
            ...
        def score(self, users):                  # (len(users), n_items) on self.device
            ...
        # optional: prepare(train), before_evaluation(), batch_samples(batch), num_batches(train)

``fit`` is inherited: it builds, prepares and runs ``Trainer(self, ctx).fit(train)``.
``self.training_config`` is the run's ``training`` section (batch size, ...). ``self.rng`` is a
CPU ``torch.Generator`` seeded from (seed, epoch) that the hooks may use for anything random during
an epoch (noise masks, dropout); because each epoch reseeds it, resuming from a checkpoint replays
exactly what an uninterrupted run does.
"""

from __future__ import annotations

import contextlib
import math
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import scipy.sparse as sp
import torch
from torch import nn

from recsys_cli import console
from recsys_cli.config.schema import ModelConfig, TrainingConfig
from recsys_cli.errors import ConfigError, RunFailed
from recsys_cli.models.base import FitContext, Recommender
from recsys_cli.training import checkpoint as ckpt
from recsys_cli.training import curves

LOW_PRECISION = (torch.float16, torch.bfloat16)
Evaluator = Callable[[Recommender, sp.csr_matrix, sp.csr_matrix], float]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's generator: a fixed mix of the run seed and the epoch number."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2**63 - 1)


def param_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """Weights stay float32 under float16/bfloat16: autocast runs the maths in low precision."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


def autocast_for(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype in LOW_PRECISION:
        return torch.autocast(device_type=device.type, dtype=dtype)
    return contextlib.nullcontext()


def make_optimizer(params: Iterable[torch.nn.Parameter], training: TrainingConfig) -> torch.optim.Optimizer:
    params = list(params)
    if training.optimizer == "sgd":
        return torch.optim.SGD(params, lr=training.learning_rate, momentum=training.momentum,
                               weight_decay=training.weight_decay)
    cls = torch.optim.AdamW if training.optimizer == "adamw" else torch.optim.Adam
    try:  # the fused kernel is several times faster on large embedding tables (same maths)
        return cls(params, lr=training.learning_rate, weight_decay=training.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return cls(params, lr=training.learning_rate, weight_decay=training.weight_decay)


class TrainableRecommender(Recommender, nn.Module):
    """A recommender whose parameters are learned by :class:`Trainer`. See the module docstring."""

    trainable = True

    def __init__(self, config: ModelConfig, *, device: torch.device, dtype: torch.dtype, seed: int = 0):
        nn.Module.__init__(self)
        Recommender.__init__(self, config, device=device, dtype=dtype, seed=seed)
        self.param_dtype = param_dtype_for(dtype)
        self.rng = torch.Generator().manual_seed(int(seed))
        self.best_epoch: int | None = None
        self.epochs_trained = 0
        self.training_config = TrainingConfig()  # the Trainer sets the run's before building

    # -- hooks ------------------------------------------------------------------------------------
    @abstractmethod
    def build(self, train: sp.csr_matrix) -> None:
        """Create the parameters for ``train``'s shape (n_users/n_items are set; torch is seeded)."""

    def prepare(self, train: sp.csr_matrix) -> None:
        """Precompute what training and scoring need from ``train`` (samplers, normalised matrices).

        Called after :meth:`build` both when fitting and when loading a saved model."""

    @abstractmethod
    def epoch_batches(self, train: sp.csr_matrix, generator: torch.Generator) -> Iterator[Any]:
        """The mini-batches of one epoch, shuffled with ``generator``."""

    @abstractmethod
    def training_loss(self, batch: Any) -> torch.Tensor:
        """Scalar loss of one batch (the mean over its samples)."""

    def before_evaluation(self) -> None:
        """Called in eval mode under ``no_grad`` before scoring (cache item towers, final embeddings)."""

    def batch_samples(self, batch: Any) -> int:
        """Number of training samples in a batch, for the loss average and samples/s."""
        first = batch
        while isinstance(first, (tuple, list)):
            first = first[0]
        if isinstance(first, dict):
            first = next(iter(first.values()))
        return int(len(first))

    def num_batches(self, train: sp.csr_matrix) -> int | None:
        """Batches per epoch, for the progress bar (None: unknown)."""
        return None

    # -- Recommender ------------------------------------------------------------------------------
    def build_for(self, train: sp.csr_matrix) -> None:
        """Set the shape, build seeded parameters on the model's device and prepare."""
        self.n_users, self.n_items = (int(x) for x in train.shape)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            self.build(train)
        self.to(device=self.device, dtype=self.param_dtype)
        self.prepare(train)

    def fit(self, train: sp.csr_matrix, ctx: FitContext) -> None:
        Trainer(self, ctx).fit(train)

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.state_dict().items()}

    def load_state(self, state: dict[str, torch.Tensor], train: sp.csr_matrix) -> None:
        self.build_for(train)
        self.load_state_dict(state)
        self.finish_training()

    def extra_metadata(self) -> dict[str, Any]:
        return {"best_epoch": self.best_epoch, "epochs_trained": self.epochs_trained}

    def finish_training(self) -> None:
        self.eval()
        with torch.no_grad(), autocast_for(self.device, self.dtype):
            self.before_evaluation()


class Trainer:
    """Runs the epochs of one :class:`TrainableRecommender` under a :class:`FitContext`.

    ``evaluator(model, train, validation) -> float`` replaces the project evaluator (tests use a
    stand-in); by default it is ``recsys_cli.evaluation.evaluate`` at the configured metric/cutoff.
    """

    def __init__(self, model: TrainableRecommender, ctx: FitContext, *, evaluator: Evaluator | None = None):
        self.model = model
        self.ctx = ctx
        self.tc: TrainingConfig = ctx.training
        self.es = ctx.training.early_stopping
        self.metric_name = f"{self.es.metric}@{self.es.cutoff}"
        self.evaluator = evaluator or self._project_evaluator
        self.history: list[dict[str, Any]] = []
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.bad_evaluations = 0
        self.stopped_early = False
        self._best_in_memory: dict[str, torch.Tensor] | None = None

    # -- validation -------------------------------------------------------------------------------
    def _project_evaluator(self, model: Recommender, train: sp.csr_matrix, validation: sp.csr_matrix) -> float:
        from recsys_cli.evaluation import evaluate

        ev = self.ctx.evaluation
        result = evaluate(
            model, train, validation, [self.es.cutoff], min_ratings_per_user=ev.min_ratings_per_user,
            exclude_seen=ev.exclude_seen, ignore_users=ev.ignore_users, ignore_items=ev.ignore_items,
            block_size=ev.user_batch_size, device=model.device, progress=False,
            keep_per_user=False,  # a validation value per epoch needs no per-user file
        )
        return float(result.value(self.es.metric, self.es.cutoff))

    def validate(self, train: sp.csr_matrix) -> float:
        self.model.eval()
        try:
            with torch.no_grad(), autocast_for(self.model.device, self.model.dtype):
                self.model.before_evaluation()
                return self.evaluator(self.model, train, self.ctx.validation)
        finally:
            self.model.train()

    # -- checkpoints ------------------------------------------------------------------------------
    def _sidecar(self, epoch: int, finished: bool) -> dict[str, Any]:
        return {
            "model_name": self.model.name, "epoch": epoch, "finished": finished,
            "metric": self.metric_name, "best_metric": self.best_metric, "best_epoch": self.best_epoch,
            "bad_evaluations": self.bad_evaluations, "stopped_early": self.stopped_early,
            "n_users": self.model.n_users, "n_items": self.model.n_items, "seed": self.model.seed,
            "model": self.model.config.model_dump(mode="json"), "training": self.tc.model_dump(mode="json"),
            "history": self.history,
        }

    def _resume(self, optimizer, scaler) -> int:
        """Load the last checkpoint of ctx.resume_from; return the first epoch still to run."""
        tensors, side = ckpt.load_checkpoint(self.ctx.resume_from, "last")
        if side.get("model_name") != self.model.name or [side.get("n_users"), side.get("n_items")] != [
            self.model.n_users, self.model.n_items,
        ]:
            raise ConfigError(
                f"the checkpoint in {self.ctx.resume_from} is for {side.get('model_name')} on "
                f"{side.get('n_users')}×{side.get('n_items')}, not {self.model.name} on "
                f"{self.model.n_users}×{self.model.n_items}",
                hint="resume with the run's own config (RUN_DIR/config.yaml)",
            )
        self.model.load_state_dict(tensors["model"])
        optimizer.load_state_dict(tensors["optimizer"])
        if scaler is not None and tensors.get("scaler"):
            scaler.load_state_dict(tensors["scaler"])
        self.history = list(side.get("history", []))
        self.best_metric, self.best_epoch = side.get("best_metric"), side.get("best_epoch")
        self.bad_evaluations = int(side.get("bad_evaluations", 0))
        self.stopped_early = bool(side.get("stopped_early", False))
        epoch = int(side["epoch"])
        console.info(f"resuming from {self.ctx.resume_from} after epoch {epoch}"
                     + (f" (best {self.metric_name} {self.best_metric:.5f} at epoch {self.best_epoch})"
                        if self.best_metric is not None else ""))
        return epoch + 1

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self, train: sp.csr_matrix) -> TrainableRecommender:
        model, ctx, tc = self.model, self.ctx, self.tc
        model.training_config = tc
        model.build_for(train)
        device, dtype = model.device, model.dtype
        optimizer = make_optimizer(model.parameters(), tc)
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 and device.type == "cuda" else None
        run_dir = Path(ctx.run_dir) if ctx.run_dir is not None else None
        validating = ctx.validation is not None and ctx.validation.nnz > 0
        if not validating:
            console.warn("no validation split: training runs all epochs and keeps the last weights "
                         "(set data.split.val_fraction > 0 for early stopping)")
        start = self._resume(optimizer, scaler) if ctx.resume_from is not None else 1
        if self.stopped_early:
            start = tc.epochs + 1
        params = [p for p in model.parameters() if p.requires_grad]
        total_batches = model.num_batches(train)
        fit_start = time.perf_counter()
        samples_total = 0
        model.train()
        try:
            for epoch in range(start, tc.epochs + 1):
                generator = torch.Generator().manual_seed(epoch_seed(model.seed, epoch))
                model.rng = generator
                t0 = time.perf_counter()
                loss_sum, n_samples = 0.0, 0
                with console.progress() as bar:
                    task = bar.add_task(f"epoch {epoch}/{tc.epochs}", total=total_batches, rate="")
                    for b, batch in enumerate(model.epoch_batches(train, generator), start=1):
                        optimizer.zero_grad(set_to_none=True)
                        with autocast_for(device, dtype):
                            loss = model.training_loss(batch)
                        value = float(loss.detach())
                        if not math.isfinite(value):
                            raise RunFailed(
                                f"training loss became {value} at epoch {epoch}, batch {b}",
                                hint=f"lower training.learning_rate (now {tc.learning_rate:g}) "
                                     "or set training.grad_clip",
                            )
                        if scaler is not None:
                            scaler.scale(loss).backward()
                            if tc.grad_clip:
                                scaler.unscale_(optimizer)
                                nn.utils.clip_grad_norm_(params, tc.grad_clip)
                            scaler.step(optimizer)
                            scaler.update()
                        else:
                            loss.backward()
                            if tc.grad_clip:
                                nn.utils.clip_grad_norm_(params, tc.grad_clip)
                            optimizer.step()
                        n = model.batch_samples(batch)
                        loss_sum += value * n
                        n_samples += n
                        bar.update(task, advance=1, rate=f"loss {loss_sum / max(n_samples, 1):.4f}")
                train_seconds = time.perf_counter() - t0
                samples_total += n_samples
                row: dict[str, Any] = {
                    "epoch": epoch, "loss": loss_sum / max(n_samples, 1), "val_metric": None,
                    "seconds": round(train_seconds, 4),
                    "samples_per_second": round(n_samples / train_seconds, 1) if train_seconds > 0 else None,
                    "best": False,
                }
                improved = False
                if validating and (epoch % tc.eval_every == 0 or epoch == tc.epochs):
                    t1 = time.perf_counter()
                    metric = self.validate(train)
                    row["val_metric"] = metric
                    row["val_seconds"] = round(time.perf_counter() - t1, 4)
                    if self.best_metric is None or metric > self.best_metric + self.es.min_delta:
                        self.best_metric, self.best_epoch, self.bad_evaluations = metric, epoch, 0
                        improved = row["best"] = True
                    else:
                        self.bad_evaluations += 1
                self.history.append(row)
                self._epoch_line(row)
                if (validating and self.es.enabled and self.bad_evaluations >= self.es.patience
                        and epoch >= self.es.min_epochs):
                    self.stopped_early = True
                if run_dir is not None:
                    if improved:
                        ckpt.save_checkpoint(run_dir, "best", {"model": model.state_dict()},
                                             self._sidecar(epoch, finished=False))
                    finished = self.stopped_early or epoch == tc.epochs
                    ckpt.save_checkpoint(
                        run_dir, "last",
                        {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scaler": scaler.state_dict() if scaler is not None else {}},
                        self._sidecar(epoch, finished=finished),
                    )
                    curves.write_log(run_dir, self.history)
                if improved and run_dir is None:
                    self._best_in_memory = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if self.stopped_early:
                    console.info(f"early stopping after epoch {epoch}: no {self.metric_name} improvement "
                                 f"> {self.es.min_delta:g} in {self.es.patience} evaluations")
                    break
        except KeyboardInterrupt:
            if run_dir is not None and self.history:
                console.warn(f"interrupted during epoch {len(self.history) + 1}; the checkpoint of epoch "
                             f"{self.history[-1]['epoch']} is kept: continue with "
                             f"`recsys train {run_dir / 'config.yaml'} --resume {run_dir}`")
            raise
        finally:
            if run_dir is not None and self.history:
                with contextlib.suppress(Exception):  # a plotting failure must not mask the real outcome
                    curves.write_curve(run_dir, self.history, metric_name=self.metric_name,
                                       title=f"{model.name}: loss and validation {self.metric_name}")
        self._restore_best(run_dir, validating)
        model.epochs_trained = self.history[-1]["epoch"] if self.history else 0
        model.best_epoch = self.best_epoch
        model.finish_training()
        seconds = time.perf_counter() - fit_start
        if ctx.timing is not None:
            ctx.timing.figures["training_samples_per_second"] = round(samples_total / seconds, 1) if seconds else None
            ctx.timing.figures["best_epoch"] = self.best_epoch
            ctx.timing.figures["best_validation_metric"] = self.best_metric
            ctx.timing.figures["epochs_trained"] = model.epochs_trained
        return model

    def _restore_best(self, run_dir: Path | None, validating: bool) -> None:
        if not (validating and self.es.enabled and self.best_epoch is not None):
            return
        last = self.history[-1]["epoch"] if self.history else None
        if last == self.best_epoch:
            pass
        elif run_dir is not None:
            tensors, _ = ckpt.load_checkpoint(run_dir, "best")
            self.model.load_state_dict(tensors["model"])
        elif self._best_in_memory is not None:
            self.model.load_state_dict(self._best_in_memory)
        console.info(f"best epoch {self.best_epoch}: validation {self.metric_name} {self.best_metric:.5f}"
                     + ("" if last == self.best_epoch else " (weights restored)"))

    def _epoch_line(self, row: dict[str, Any]) -> None:
        parts = [f"epoch {row['epoch']:>3}/{self.tc.epochs}", f"loss {row['loss']:.5f}"]
        if row["val_metric"] is not None:
            parts.append(f"val {self.metric_name} {row['val_metric']:.5f}" + (" *" if row["best"] else ""))
        parts.append(f"{row['seconds']:.2f} s")
        if row["samples_per_second"]:
            parts.append(f"{row['samples_per_second']:,.0f} samples/s")
        console.info("  ".join(parts))
