"""One optimiser step of CLIP training: mixed precision, DDP, and open_clip's exact gradient accumulation.

With `accum_freq` micro-batches per step, the contrastive loss still sees the whole batch: features of every
micro-batch are first computed without gradients, then each micro-batch is recomputed with gradients and its
features swapped into the cached set before the loss (as open_clip's trainer does), so accumulating k batches of
n equals one batch of k*n.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
from open_clip import ClipLoss
from torch.nn.parallel import DistributedDataParallel

from training.config import TrainConfig
from training.distributed import Distributed

MicroBatch = tuple[torch.Tensor, torch.Tensor]  # images [B,3,H,W], tokens [B,L]
MAX_LOGIT_SCALE = math.log(100)  # CLIP's clamp on the learned temperature
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def contrastive_loss(loss_fn: ClipLoss, features: dict) -> torch.Tensor:
    return loss_fn(features["image_features"], features["text_features"], features["logit_scale"])


class Stepper:
    """Owns the (possibly DDP-wrapped) model, optimiser and grad scaler; runs steps and evaluation losses."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig,
                 dist: Distributed, loss_fn: ClipLoss) -> None:
        if config.precision == "fp16" and dist.device.type != "cuda":
            raise ValueError("--precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
        self.unwrapped, self.optimizer, self.loss_fn, self.device = model, optimizer, loss_fn, dist.device
        self.model = (DistributedDataParallel(model, device_ids=[dist.device] if dist.device.type == "cuda" else None)
                      if dist.world_size > 1 else model)
        self.scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
        dtype = AMP_DTYPES.get(config.precision)
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=dtype)) if dtype else contextlib.nullcontext
        self.eval_loss_fn = ClipLoss()
        model.train()

    def _forward(self, model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> dict:
        with self.autocast():
            return model(images.to(self.device, non_blocking=True), tokens.to(self.device, non_blocking=True))

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, parts: Sequence[MicroBatch]) -> float:
        """One optimiser step over the micro-batches `parts`; returns the loss of the whole batch."""
        self.optimizer.zero_grad(set_to_none=True)
        if len(parts) == 1:
            with self.autocast():
                loss = contrastive_loss(self.loss_fn, self._forward(self.model, *parts[0]))
            self._backward(loss)
        else:
            loss = self._accumulated(parts)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        with torch.no_grad():
            self.unwrapped.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        return float(loss.detach())

    def _accumulated(self, parts: Sequence[MicroBatch]) -> torch.Tensor:
        with torch.no_grad():
            cached = [self._forward(self.model, *part) for part in parts]
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            sync = contextlib.nullcontext() if last or self.model is self.unwrapped else self.model.no_sync()
            with sync:
                fresh = self._forward(self.model, *part)
                merged = {key: torch.cat([fresh[key] if j == index else c[key] for j, c in enumerate(cached)])
                          for key in ("image_features", "text_features")}
                with self.autocast():
                    loss = contrastive_loss(self.loss_fn, {**merged, "logit_scale": fresh["logit_scale"]})
                self._backward(loss)
        return loss

    def eval_loss(self, images: torch.Tensor, tokens: torch.Tensor) -> float:
        """The contrastive loss of one batch on this process alone, without gradients."""
        with torch.no_grad(), self.autocast():
            return float(contrastive_loss(self.eval_loss_fn, self._forward(self.unwrapped, images, tokens)))

    def logit_scale(self) -> float:
        return float(self.unwrapped.logit_scale.detach().exp())
