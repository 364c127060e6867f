"""MLP on Iris: a sanity check that the tool, device and dtype work end to end.

4 → 16 → 32 → 3 with ReLU, cross-entropy, SGD (lr 0.01), batches of 32 shuffled, 100 epochs, on
scikit-learn's bundled Iris split with ``train_test_split(test_size=0.2, random_state=42)``.
Loss and accuracy are reported on the held-out test rows as well as on the training rows (train_*).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from recsys_cli import console
from recsys_cli.config.schema import ModelConfig, TrainingConfig
from recsys_cli.errors import RunFailed
from recsys_cli.models.base import Model
from recsys_cli.models.registry import register


class MLPIrisConfig(ModelConfig):
    name: Literal["mlp-iris"] = "mlp-iris"
    hidden: list[int] = Field([16, 32], min_length=1, description="Hidden layer sizes (ReLU after each).")
    test_size: float = Field(0.2, gt=0, lt=1, description="Share of Iris rows held out for test.")
    split_random_state: int = Field(42, description="random_state of scikit-learn's train_test_split.")
    standardize: bool = Field(False, description="Standardise features with train-set statistics.")


@dataclass
class IrisData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_iris_split(config: MLPIrisConfig) -> IrisData:
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    x, y = load_iris(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=config.test_size, random_state=config.split_random_state)
    if config.standardize:
        mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
        x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    as_x = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64))  # noqa: E731
    as_y = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))  # noqa: E731
    return IrisData(as_x(x_tr), as_y(y_tr), as_x(x_te), as_y(y_te))


def make_optimizer(params, training: TrainingConfig) -> torch.optim.Optimizer:
    if training.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=training.learning_rate, momentum=training.momentum, weight_decay=training.weight_decay
        )
    if training.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=training.learning_rate, weight_decay=training.weight_decay)
    return torch.optim.Adam(params, lr=training.learning_rate, weight_decay=training.weight_decay)


@register
class MLPIris(Model):
    name: ClassVar[str] = "mlp-iris"
    Config: ClassVar[type[ModelConfig]] = MLPIrisConfig
    task: ClassVar[str] = "classification"
    trainable: ClassVar[bool] = True

    def __init__(self, config: MLPIrisConfig, *, device: torch.device, dtype: torch.dtype, seed: int = 0):
        super().__init__(config, device=device, dtype=dtype, seed=seed)
        sizes = [4, *config.hidden, 3]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers).to(device=device, dtype=dtype)

    def _evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        self.net.eval()
        with torch.no_grad():
            logits = self.net(x)
            loss = nn.functional.cross_entropy(logits.float(), y).item()
            acc = int((logits.argmax(dim=1) == y).sum().item()) / len(y)
        return loss, acc

    def fit(self, data: IrisData, training: TrainingConfig) -> list[dict[str, float]]:
        """Train; return one row per epoch (train loss, train/test loss and accuracy)."""
        dev, dt = self.device, self.dtype
        x_tr, y_tr = data.x_train.to(dev, dt), data.y_train.to(dev)
        x_te, y_te = data.x_test.to(dev, dt), data.y_test.to(dev)
        opt = make_optimizer(self.net.parameters(), training)
        gen = torch.Generator().manual_seed(self.seed)
        n, bs = len(x_tr), training.batch_size
        curve: list[dict[str, float]] = []
        with console.progress() as bar:
            task = bar.add_task("mlp-iris", total=training.epochs, rate="")
            for epoch in range(1, training.epochs + 1):
                self.net.train()
                order = torch.randperm(n, generator=gen).to(dev)
                total = 0.0
                for start in range(0, n, bs):
                    idx = order[start : start + bs]
                    opt.zero_grad(set_to_none=True)
                    loss = nn.functional.cross_entropy(self.net(x_tr[idx]).float(), y_tr[idx])
                    if not torch.isfinite(loss):
                        raise RunFailed(
                            f"loss became {loss.item()} at epoch {epoch}, batch {start // bs + 1}",
                            hint="lower training.learning_rate or use a wider dtype",
                        )
                    loss.backward()
                    if training.grad_clip:
                        nn.utils.clip_grad_norm_(self.net.parameters(), training.grad_clip)
                    opt.step()
                    total += loss.item() * len(idx)
                tr_loss, tr_acc = self._evaluate(x_tr, y_tr)
                te_loss, te_acc = self._evaluate(x_te, y_te)
                row = {"epoch": epoch, "batch_loss": total / n, "train_loss": tr_loss, "train_accuracy": tr_acc,
                       "test_loss": te_loss, "test_accuracy": te_acc}
                curve.append(row)
                bar.update(task, advance=1, rate=f"loss {row['batch_loss']:.4f}")
                if epoch == 1 or epoch % 10 == 0 or epoch == training.epochs:
                    console.info(
                        f"epoch {epoch:>3}/{training.epochs}: loss {row['batch_loss']:.4f}  "
                        f"train acc {tr_acc:.3f}  test acc {te_acc:.3f}"
                    )
        return curve

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self.net.state_dict())
