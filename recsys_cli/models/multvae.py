"""Mult-VAE (Liang et al., "Variational Autoencoders for Collaborative Filtering", WWW 2018).

The DAE's encoder/decoder (:mod:`recsys_cli.models.dae`: sparse input rows, fused multinomial
output layer) with a Gaussian latent: the encoder's last layer gives the mean and log-variance of
q(z|x), training decodes a sample z = μ + σ·ε, scoring decodes μ. The loss is the multinomial
negative log-likelihood plus β · KL(q(z|x) ‖ N(0, I)), with β annealed linearly from 0 to
``beta_max`` over ``anneal_steps`` optimizer steps. The annealing step is saved in checkpoints, so
a resumed run equals an uninterrupted one. Input rows are L2-normalised, then dropped out.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import nn

from recsys_cli.config.schema import ModelConfig
from recsys_cli.models.dae import DAE, DAEConfig
from recsys_cli.models.registry import register
from recsys_cli.training.engine import accumulator_dtype


class MultVAEConfig(DAEConfig):
    name: Literal["multvae"] = "multvae"  # type: ignore[assignment]
    hidden: list[int] = Field(
        [600, 200], min_length=2,
        description="Encoder layer sizes, the last being the latent dimension (the paper's items→600→200); "
                    "the decoder mirrors them.",
    )
    activation: Literal["tanh", "relu"] = Field("tanh", description="Hidden-layer non-linearity (the paper: tanh).")
    normalize: bool = Field(True, description="L2-normalise each input row before the noise (the paper's).")
    beta_max: float = Field(0.5, ge=0, description="Final KL weight β (the paper's anneal cap: 0.2).")
    min_batches_per_epoch: int | None = Field(
        16, ge=1,
        description="Users per batch = min(training.batch_size, ceil(users / this)), so a small data set still "
                    "gets this many optimizer steps per epoch (null: always training.batch_size).",
    )
    anneal_steps: int = Field(
        1000, ge=0,
        description="Optimizer steps over which β rises linearly from 0 to beta_max (0: beta_max from the start).",
    )


def kl_weight(step: int, beta_max: float, anneal_steps: int) -> float:
    """β of the optimizer step ``step`` (counted from 0): linear from 0 to ``beta_max`` over ``anneal_steps``."""
    if anneal_steps <= 0:
        return float(beta_max)
    return float(beta_max) * min(1.0, step / anneal_steps)


@register
class MultVAE(DAE):
    name: ClassVar[str] = "multvae"
    Config: ClassVar[type[ModelConfig]] = MultVAEConfig

    config: MultVAEConfig

    def build(self, train: sp.csr_matrix) -> None:
        super().build(train)  # the DAE's layers: input bag, Linear layers mirrored around the latent
        *_, before, latent = self.config.hidden
        self._n_encoder = len(self.config.hidden) - 1  # self.layers[:_n_encoder] end the encoder
        self.layers[self._n_encoder - 1] = nn.Linear(before, 2 * latent)  # mean and log-variance
        self.anneal_step = 0

    def activation(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h) if self.config.activation == "tanh" else torch.relu(h)

    def input_values(self, offsets: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        if not self.config.normalize:
            return values
        counts = torch.diff(offsets, append=torch.tensor([len(values)]))
        rows = torch.repeat_interleave(torch.arange(len(offsets)), counts, output_size=len(values))
        norms = torch.zeros(len(offsets), dtype=values.dtype).index_add_(0, rows, values * values).sqrt_()
        return values / norms.clamp_min(1e-12)[rows]

    # -- latent -----------------------------------------------------------------------------------
    def posterior(self, indices: torch.Tensor, offsets: torch.Tensor,
                  values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x) for sparse input rows (the DAE's sparse first layer)."""
        h = self._first_layer(indices, offsets, values) + self.input_bias
        for layer in self.layers[: self._n_encoder]:
            h = layer(self.activation(h))
        mean, log_var = h.chunk(2, dim=1)
        return mean, log_var

    def decode_hidden(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's activations before the (fused) output layer."""
        for layer in self.layers[self._n_encoder : -1]:
            z = self.activation(layer(z))
        return z

    def encode(self, indices: torch.Tensor, offsets: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Decoder activations of the latent mean (scoring)."""
        return self.decode_hidden(self.posterior(indices, offsets, values)[0])

    def beta(self, step: int | None = None) -> float:
        return kl_weight(self.anneal_step if step is None else step, self.config.beta_max, self.config.anneal_steps)

    def training_loss(self, batch: np.ndarray) -> torch.Tensor:
        rows, cols, values, *noisy = self.sparse_batch(batch)
        mean, log_var = self.posterior(*noisy)
        eps = torch.randn(mean.shape, generator=self.rng).to(mean.device, mean.dtype)
        z = mean + eps * torch.exp(0.5 * log_var)
        nll = self.reconstruction_loss(self.decode_hidden(z), rows, cols, values)
        kl = 0.5 * (torch.exp(log_var) + mean * mean - 1.0 - log_var).sum(dim=1).mean()
        beta = self.beta()
        self.anneal_step += 1
        self._kl_sum += kl.detach().to(self._kl_sum.dtype) * len(batch)
        self._kl_users += len(batch)
        return nll + beta * kl

    # -- engine -----------------------------------------------------------------------------------
    def train_epoch(self, trainer, train: sp.csr_matrix, epoch: int, generator: torch.Generator) -> dict[str, float]:
        self._kl_sum = torch.zeros((), dtype=accumulator_dtype(self.device), device=self.device)
        self._kl_users = 0
        logs = super().train_epoch(trainer, train, epoch, generator)
        return {**logs, "kl": float(self._kl_sum) / max(self._kl_users, 1),
                "beta": self.beta(max(self.anneal_step - 1, 0))}

    def training_state(self) -> dict[str, Any]:
        return {"anneal_step": self.anneal_step}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.anneal_step = int(state.get("anneal_step", 0))

    def extra_metadata(self) -> dict[str, Any]:
        return {**super().extra_metadata(), "anneal_step": self.anneal_step}
