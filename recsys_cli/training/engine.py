"""The shared training engine of every trainable recommender (DAE, Mult-VAE, two-tower, LightGCN, ...).

A model subclasses :class:`TrainableRecommender`; :class:`Trainer` runs its epochs in small steps
(optimizer, device/dtype, autocast, gradient clipping, weight averaging, validation, early stopping,
best weights, checkpoints, resume, NaN detection, per-epoch log, ``train_log.csv``, the curve PNG,
hooks)::

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
        # optional: prepare(train), before_evaluation(), batch_samples(batch), num_batches(train),
        #           train_epoch(trainer, train, epoch, generator) -> {"loss": ..., other logged values},
        #           training_state() / load_training_state(state) for state beyond the weights

One epoch is ``model.train_epoch(trainer, train, epoch, generator)``; by default it is
:meth:`Trainer.gradient_epoch` (mini-batches of ``epoch_batches`` through ``training_loss``, one
optimizer step each). A model without gradient parameters sets ``uses_optimizer = False`` and
overrides ``train_epoch`` (e.g. alternating least squares). ``fit`` is inherited: it runs
``Trainer(self, ctx).fit(train)``. ``self.training_config`` is the run's ``training`` section.
``self.rng`` is a CPU ``torch.Generator`` seeded from (seed, epoch) that the model may use for
anything random during an epoch (noise masks, dropout); because each epoch reseeds it, resuming
from a checkpoint replays exactly what an uninterrupted run does.
"""

from __future__ import annotations

import contextlib
import math
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import scipy.sparse as sp
import torch
from torch import nn

from recsys_cli import console
from recsys_cli.config.schema import ModelConfig, TrainingConfig
from recsys_cli.errors import ConfigError, RunFailed
from recsys_cli.models.base import FitContext, Recommender
from recsys_cli.training import checkpoint as ckpt
from recsys_cli.training import curves
from recsys_cli.training.ema import ParameterEMA
from recsys_cli.training.hooks import TrainingHook, TrainingStopped, first_stop_reason

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


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """The epoch's loss sum stays on the device in float64 (MPS has none: float32)."""
    return torch.float32 if device.type == "mps" else torch.float64


class TrainableRecommender(Recommender, nn.Module):
    """A recommender whose parameters are learned by :class:`Trainer`. See the module docstring."""

    trainable = True
    uses_optimizer: ClassVar[bool] = True  # False: no optimizer/scaler, checkpoints hold the weights only

    def __init__(self, config: ModelConfig, *, device: torch.device, dtype: torch.dtype, seed: int = 0):
        nn.Module.__init__(self)
        Recommender.__init__(self, config, device=device, dtype=dtype, seed=seed)
        self.param_dtype = param_dtype_for(dtype)
        self.rng = torch.Generator().manual_seed(int(seed))
        self.best_epoch: int | None = None
        self.epochs_trained = 0
        self.stop_reason: str | None = None
        self.training_config = TrainingConfig()  # the Trainer sets the run's before building

    # -- hooks ------------------------------------------------------------------------------------
    @abstractmethod
    def build(self, train: sp.csr_matrix) -> None:
        """Create the parameters for ``train``'s shape (n_users/n_items are set; torch is seeded)."""

    def prepare(self, train: sp.csr_matrix) -> None:
        """Precompute what training and scoring need from ``train`` (samplers, normalised matrices).

        Called after :meth:`build` both when fitting and when loading a saved model."""

    def train_epoch(self, trainer: Trainer, train: sp.csr_matrix, epoch: int,
                    generator: torch.Generator) -> dict[str, float]:
        """One epoch; returns the values to log (at least ``"loss"``; any other key becomes a
        ``train_log.csv`` column). Default: :meth:`Trainer.gradient_epoch`. An override that takes
        optimisation steps of its own advances ``trainer.global_step``."""
        return trainer.gradient_epoch(train, epoch, generator)

    def epoch_batches(self, train: sp.csr_matrix, generator: torch.Generator) -> Iterator[Any]:
        """The mini-batches of one epoch, shuffled with ``generator`` (for the default epoch)."""
        raise NotImplementedError(f"{type(self).__name__} defines neither epoch_batches nor train_epoch")

    def training_loss(self, batch: Any) -> torch.Tensor:
        """Scalar loss of one batch (the mean over its samples), for the default epoch."""
        raise NotImplementedError(f"{type(self).__name__} defines neither training_loss nor train_epoch")

    def training_state(self) -> dict[str, Any]:
        """State beyond the weights that an exact resume needs (JSON values: numbers, strings, lists)."""
        return {}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`training_state`'s output from a checkpoint."""

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
        return {"best_epoch": self.best_epoch, "epochs_trained": self.epochs_trained,
                "stop_reason": self.stop_reason}

    def finish_training(self) -> None:
        self.eval()
        with torch.no_grad(), autocast_for(self.device, self.dtype):
            self.before_evaluation()


class Trainer:
    """Runs the epochs of one :class:`TrainableRecommender` under a :class:`FitContext`.

    :meth:`fit` is a sequence of steps, each a method: :meth:`setup` (build, optimizer, resume),
    then per epoch ``model.train_epoch`` (by default :meth:`gradient_epoch`, which calls
    :meth:`train_step` per batch), :meth:`validate_epoch` (validation, best epoch, hooks),
    :meth:`stop_decision` (early stopping) and :meth:`save_checkpoints`; then :meth:`finish`
    (best weights, figures, hooks). ``evaluator(model, train, validation) -> float`` replaces the
    project evaluator (tests use a stand-in). The summed loss stays on the device and is read back
    every ``loss_readback_every`` optimizer steps and at the end of each epoch.
    """

    loss_readback_every: int = 50

    def __init__(self, model: TrainableRecommender, ctx: FitContext, *, evaluator: Evaluator | None = None,
                 loss_readback_every: int | None = None):
        self.model = model
        self.ctx = ctx
        self.tc: TrainingConfig = ctx.training
        self.es = ctx.training.early_stopping
        self.metric_name = f"{self.es.metric}@{self.es.cutoff}"
        self.evaluator = evaluator or self._project_evaluator
        self.hooks: list[TrainingHook] = list(ctx.hooks or [])
        if loss_readback_every is not None:
            self.loss_readback_every = max(1, int(loss_readback_every))
        self.history: list[dict[str, Any]] = []
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.bad_evaluations = 0
        self.stopped_early = False
        self.stop_reason: str | None = None
        self.global_step = 0  # optimizer steps over the whole fit (resume included)
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.run_dir = Path(ctx.run_dir) if ctx.run_dir is not None else None
        self.validating = ctx.validation is not None and ctx.validation.nnz > 0
        self._params: list[nn.Parameter] = []
        self.ema: ParameterEMA | None = None
        self._best_in_memory: dict[str, torch.Tensor] | None = None

    # -- setup ------------------------------------------------------------------------------------
    def setup(self, train: sp.csr_matrix) -> int:
        """Build the model and its optimizer; load the checkpoint when resuming. Returns the first epoch."""
        model = self.model
        model.training_config = self.tc
        model.build_for(train)
        if model.uses_optimizer:
            self.optimizer = make_optimizer(model.parameters(), self.tc)
            if model.dtype == torch.float16 and model.device.type == "cuda":
                self.scaler = torch.amp.GradScaler("cuda")
        self._params = [p for p in model.parameters() if p.requires_grad]
        if self.tc.ema_decay is not None:
            if model.uses_optimizer:
                self.ema = ParameterEMA(model, self.tc.ema_decay)
            else:
                console.warn(f"training.ema_decay is ignored: {model.name} takes no gradient steps")
        if not self.validating:
            kept = "the last weight average" if self.ema is not None else "the last weights"
            console.warn(f"no validation split: training runs all epochs and keeps {kept} "
                         "(set data.split.val_fraction > 0 for early stopping)")
        start = self._resume() if self.ctx.resume_from is not None else 1
        return self.tc.epochs + 1 if self.stopped_early else start

    def _resume(self) -> int:
        """Load the last checkpoint of ctx.resume_from; return the first epoch still to run."""
        tensors, side = ckpt.load_checkpoint(self.ctx.resume_from, "last")
        model = self.model
        if side.get("model_name") != model.name or [side.get("n_users"), side.get("n_items")] != [
            model.n_users, model.n_items,
        ]:
            raise ConfigError(
                f"the checkpoint in {self.ctx.resume_from} is for {side.get('model_name')} on "
                f"{side.get('n_users')}×{side.get('n_items')}, not {model.name} on "
                f"{model.n_users}×{model.n_items}",
                hint="resume with the run's own config (RUN_DIR/config.yaml)",
            )
        changed = ckpt.differing_keys({"model": side.get("model")}, {"model": model.config.model_dump(mode="json")})
        if side.get("model") is not None and changed:
            raise ConfigError(f"--resume: the model config differs from the checkpoint's in {', '.join(changed)}",
                              hint="resume with the run's own config (RUN_DIR/config.yaml)")
        model.load_state_dict(tensors["model"])
        if self.ema is not None:
            if tensors.get("ema"):
                self.ema.load_state_dict(tensors["ema"])
            else:  # the checkpoint's run kept no average: start one from its weights
                self.ema = ParameterEMA(model, self.ema.decay)
                console.warn(f"the checkpoint in {self.ctx.resume_from} has no weight average "
                             "(training.ema_decay was off): the average starts from its weights")
        if self.optimizer is not None:
            self.optimizer.load_state_dict(tensors["optimizer"])
        if self.scaler is not None and tensors.get("scaler"):
            self.scaler.load_state_dict(tensors["scaler"])
        model.load_training_state(side.get("training_state") or {})
        self.history = list(side.get("history", []))
        self.best_metric, self.best_epoch = side.get("best_metric"), side.get("best_epoch")
        self.bad_evaluations = int(side.get("bad_evaluations", 0))
        self.stopped_early = bool(side.get("stopped_early", False))
        self.stop_reason = side.get("stop_reason")
        self.global_step = int(side.get("global_step", 0))
        epoch = int(side["epoch"])
        self.resumed_after = epoch  # the next epoch's log row says so; the curve marks it
        console.info(f"resuming from {self.ctx.resume_from} after epoch {epoch}"
                     + (f" (best {self.metric_name} {self.best_metric:.5f} at epoch {self.best_epoch})"
                        if self.best_metric is not None else ""))
        return epoch + 1

    # -- one epoch of mini-batches ----------------------------------------------------------------
    def train_step(self, batch: Any) -> torch.Tensor:
        """One optimizer step on ``batch``; returns the batch's loss, detached and on the device (no sync)."""
        model, optimizer, scaler = self.model, self.optimizer, self.scaler
        if optimizer is None:
            raise TypeError(f"{model.name} has uses_optimizer = False: its train_epoch takes no gradient steps")
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(model.device, model.dtype):
            loss = model.training_loss(batch)
        if scaler is not None:
            scaler.scale(loss).backward()
            if self.tc.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(self._params, self.tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if self.tc.grad_clip:
                nn.utils.clip_grad_norm_(self._params, self.tc.grad_clip)
            optimizer.step()
        if self.ema is not None:
            self.ema.update()
        self.global_step += 1
        return loss.detach()

    def gradient_epoch(self, train: sp.csr_matrix, epoch: int, generator: torch.Generator) -> dict[str, float]:
        """The default epoch: every batch of ``model.epoch_batches`` through :meth:`train_step`.

        The sample-weighted loss is summed on the device and read back (one synchronisation) every
        ``loss_readback_every`` steps and at the end; a non-finite sum stops the run naming the
        batches since the previous read-back.
        """
        model = self.model
        total = torch.zeros((), dtype=accumulator_dtype(model.device), device=model.device)
        n_samples, checked_batch, b = 0, 0, 0
        with console.progress() as bar:
            task = bar.add_task(f"epoch {epoch}/{self.tc.epochs}", total=model.num_batches(train), rate="")
            for b, batch in enumerate(model.epoch_batches(train, generator), start=1):
                loss = self.train_step(batch)
                n = model.batch_samples(batch)
                total += loss.to(total.dtype) * n
                n_samples += n
                if b - checked_batch >= self.loss_readback_every:
                    value = self._read_loss(total, epoch, checked_batch + 1, b)
                    checked_batch = b
                    bar.update(task, rate=f"loss {value / max(n_samples, 1):.4f}")
                bar.update(task, advance=1)
        value = self._read_loss(total, epoch, checked_batch + 1, b) if b > checked_batch else float(total)
        return {"loss": value / max(n_samples, 1), "samples": n_samples}

    def _read_loss(self, total: torch.Tensor, epoch: int, first: int, last: int) -> float:
        value = float(total)
        if not math.isfinite(value):
            step = self.global_step - (last - first)
            where = (f"batch {last} (step {step})" if first == last
                     else f"batches {first}–{last} (steps {step}–{self.global_step})")
            raise RunFailed(
                f"training loss became {value} at epoch {epoch}, {where}",
                hint=f"lower training.learning_rate (now {self.tc.learning_rate:g}) or set training.grad_clip",
            )
        return value

    # -- validation and early stopping ------------------------------------------------------------
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
        """The early-stopping metric on the validation split, of the averaged weights when training.ema_decay is set."""
        self.model.eval()
        try:
            averaged = self.ema.applied() if self.ema is not None else contextlib.nullcontext()
            with averaged, torch.no_grad(), autocast_for(self.model.device, self.model.dtype):
                self.model.before_evaluation()
                return self.evaluator(self.model, train, self.ctx.validation)
        finally:
            self.model.train()

    def validates_at(self, epoch: int) -> bool:
        """Every epoch up to ``eval_every_epoch_until``, then every ``eval_every`` epochs, and the last."""
        tc = self.tc
        return self.validating and (epoch <= tc.eval_every_epoch_until or epoch % tc.eval_every == 0
                                    or epoch == tc.epochs)

    def validate_epoch(self, train: sp.csr_matrix, epoch: int, row: dict[str, Any]) -> bool:
        """Validate (when due), update the best epoch, hand the value to the hooks. True when improved."""
        if not self.validates_at(epoch):
            return False
        t1 = time.perf_counter()
        metric = self.validate(train)
        row["val_metric"] = metric
        row["val_seconds"] = round(time.perf_counter() - t1, 4)
        improved = self.best_metric is None or metric > self.best_metric + self.es.min_delta
        if improved:
            self.best_metric, self.best_epoch, self.bad_evaluations = metric, epoch, 0
            row["best"] = True
        else:
            self.bad_evaluations += 1
        reason = first_stop_reason(self.hooks, epoch, self.global_step, metric, {self.metric_name: metric})
        if reason:
            self.stop(reason)
        return improved

    def stop(self, reason: str) -> None:
        """End the fit after this epoch (its checkpoint is marked finished); the reason is recorded."""
        self.stopped_early = True
        self.stop_reason = self.stop_reason or reason

    def stop_decision(self, epoch: int) -> str | None:
        """Early stopping: the reason to stop after ``epoch`` (None: go on)."""
        es = self.es
        if self.stopped_early:
            return self.stop_reason
        if not (self.validating and es.enabled and self.best_epoch is not None and epoch >= es.min_epochs):
            return None
        if es.patience_epochs is not None:
            if epoch - self.best_epoch >= es.patience_epochs and self.validates_at(epoch):
                return (f"early stopping: no {self.metric_name} improvement > {es.min_delta:g} "
                        f"in {epoch - self.best_epoch} epochs (patience_epochs {es.patience_epochs})")
        elif self.bad_evaluations >= es.patience:
            return f"early stopping: no {self.metric_name} improvement > {es.min_delta:g} in {es.patience} evaluations"
        return None

    # -- checkpoints ------------------------------------------------------------------------------
    def _sidecar(self, epoch: int, finished: bool) -> dict[str, Any]:
        return {
            "model_name": self.model.name, "epoch": epoch, "finished": finished,
            "metric": self.metric_name, "best_metric": self.best_metric, "best_epoch": self.best_epoch,
            "bad_evaluations": self.bad_evaluations, "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason, "global_step": self.global_step,
            "n_users": self.model.n_users, "n_items": self.model.n_items, "seed": self.model.seed,
            "model": self.model.config.model_dump(mode="json"), "training": self.tc.model_dump(mode="json"),
            "training_state": self.model.training_state(), "history": self.history,
        }

    def save_checkpoints(self, epoch: int, improved: bool) -> None:
        """``best`` at a new best epoch, ``last`` after every epoch, and the log (run directory only)."""
        model = self.model
        if self.run_dir is None:
            if improved:
                self._best_in_memory = {k: v.detach().clone() for k, v in self._evaluated_state().items()}
            return
        if improved:
            ckpt.save_checkpoint(self.run_dir, "best", {"model": self._evaluated_state()},
                                 self._sidecar(epoch, finished=False))
        tensors: dict[str, Any] = {"model": model.state_dict()}  # the raw weights: resume goes on from them
        if self.ema is not None:
            tensors["ema"] = self.ema.state_dict()
        if self.optimizer is not None:
            tensors["optimizer"] = self.optimizer.state_dict()
            tensors["scaler"] = self.scaler.state_dict() if self.scaler is not None else {}
        finished = self.stopped_early or epoch == self.tc.epochs
        ckpt.save_checkpoint(self.run_dir, "last", tensors, self._sidecar(epoch, finished=finished))
        curves.write_log(self.run_dir, self.history)

    def _evaluated_state(self) -> dict[str, torch.Tensor]:
        """The weights validation measured (the average when there is one), sharing storage as ``state_dict()``."""
        return self.ema.averaged_state(self.model) if self.ema is not None else self.model.state_dict()

    # -- the loop ---------------------------------------------------------------------------------
    def run_epoch(self, train: sp.csr_matrix, epoch: int) -> dict[str, Any]:
        """Train one epoch (``model.train_epoch``) and return its log row (before validation)."""
        model = self.model
        generator = torch.Generator().manual_seed(epoch_seed(model.seed, epoch))
        model.rng = generator
        step_before = self.global_step
        t0 = time.perf_counter()
        try:
            logs = dict(model.train_epoch(self, train, epoch, generator))
        except TrainingStopped as stop:
            self.stop(stop.reason)
            raise
        seconds = time.perf_counter() - t0
        if self.global_step == step_before:
            self.global_step += 1  # an epoch without optimizer steps (closed-form solves) counts as one
        n_samples = logs.pop("samples", None)
        row: dict[str, Any] = {
            "epoch": epoch, "loss": float(logs.pop("loss")), "val_metric": None, "seconds": round(seconds, 4),
            "samples_per_second": round(n_samples / seconds, 1) if n_samples and seconds > 0 else None,
            "best": False,
        }
        row.update({k: (float(v) if isinstance(v, (int, float)) else v) for k, v in logs.items()})
        if epoch == getattr(self, "resumed_after", -1) + 1:
            row["resumed"] = True
        self._samples_total += int(n_samples or 0)
        for hook in self.hooks:
            hook.on_epoch_end(epoch, self.global_step, {k: v for k, v in row.items() if k != "val_metric"})
        return row

    def fit(self, train: sp.csr_matrix) -> TrainableRecommender:
        model = self.model
        start = self.setup(train)
        for hook in self.hooks:
            hook.on_fit_start(model, epochs=self.tc.epochs, start_epoch=start)
        fit_start = time.perf_counter()
        self._samples_total = 0
        model.train()
        try:
            for epoch in range(start, self.tc.epochs + 1):
                try:
                    row = self.run_epoch(train, epoch)
                except TrainingStopped:
                    break  # stopped inside an epoch: that epoch is not kept
                improved = self.validate_epoch(train, epoch, row)
                self.history.append(row)
                self._epoch_line(row)
                reason = self.stop_decision(epoch)
                if reason:
                    self.stop(reason)
                self.save_checkpoints(epoch, improved)
                if reason:
                    console.info(f"stopped after epoch {epoch}: {reason}")
                    break
        except KeyboardInterrupt:
            if self.run_dir is not None and self.history:
                console.warn(f"interrupted during epoch {self.history[-1]['epoch'] + 1}; the checkpoint of epoch "
                             f"{self.history[-1]['epoch']} is kept: continue with "
                             f"`recsys train {self.run_dir / 'config.yaml'} --resume {self.run_dir}`")
            raise
        finally:
            if self.run_dir is not None and self.history:
                with contextlib.suppress(Exception):  # a plotting failure must not mask the real outcome
                    curves.write_curve(
                        self.run_dir, self.history, metric_name=self.metric_name,
                        title=curves.curve_title(self.run_dir, model.name, self.metric_name),
                        resumed_after=[r["epoch"] - 1 for r in self.history if r.get("resumed")],
                        formats=self.ctx.plot_formats,
                    )
        self.finish(time.perf_counter() - fit_start)
        return model

    def finish(self, seconds: float) -> None:
        """Restore the best weights, record the outcome, tell the hooks."""
        model, timing = self.model, self.ctx.timing
        if self.ema is not None:
            self.ema.copy_to_model()  # the last epoch's average; the best epoch's replaces it below
        self._restore_best()
        model.epochs_trained = self.history[-1]["epoch"] if self.history else 0
        model.best_epoch = self.best_epoch
        model.stop_reason = self.stop_reason
        model.finish_training()
        if timing is not None:
            timing.figures["training_samples_per_second"] = (round(self._samples_total / seconds, 1)
                                                             if seconds and self._samples_total else None)
            timing.figures["best_epoch"] = self.best_epoch
            timing.figures["best_validation_metric"] = self.best_metric
            timing.figures["epochs_trained"] = model.epochs_trained
            timing.figures["stop_reason"] = self.stop_reason
        for hook in self.hooks:
            hook.on_fit_end(model.epochs_trained, self.global_step, self.stop_reason)

    def _restore_best(self) -> None:
        if not (self.validating and self.es.enabled and self.best_epoch is not None):
            return
        last = self.history[-1]["epoch"] if self.history else None
        if last == self.best_epoch:
            pass
        elif self.run_dir is not None:
            saved = self.run_dir / "model" / "model.pt"
            if not ckpt.checkpoint_paths(self.run_dir, "best")[0].is_file() and saved.is_file():
                # a finished run keeps its best weights once, in model/ (checkpoint.discard)
                self.model.load_state_dict(torch.load(saved, map_location="cpu", weights_only=True))
            else:
                tensors, _ = ckpt.load_checkpoint(self.run_dir, "best")
                self.model.load_state_dict(tensors["model"])
        elif self._best_in_memory is not None:
            self.model.load_state_dict(self._best_in_memory)
        console.info(f"best epoch {self.best_epoch}: validation {self.metric_name} {self.best_metric:.5f}"
                     + ("" if last == self.best_epoch else " (weights restored)"))

    def _epoch_line(self, row: dict[str, Any]) -> None:
        parts = [f"epoch {row['epoch']:>3}/{self.tc.epochs}", f"loss {row['loss']:.5f}"]
        parts += [f"{k} {v:.5g}" for k, v in row.items() if k not in _ROW_KEYS and isinstance(v, float)]
        if row["val_metric"] is not None:
            parts.append(f"val {self.metric_name} {row['val_metric']:.5f}" + (" *" if row["best"] else ""))
        parts.append(f"{row['seconds']:.2f} s")
        if row["samples_per_second"]:
            parts.append(f"{row['samples_per_second']:,.0f} samples/s")
        console.info("  ".join(parts))


_ROW_KEYS = {"epoch", "loss", "val_metric", "seconds", "samples_per_second", "best", "val_seconds"}
