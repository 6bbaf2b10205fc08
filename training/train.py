"""`tol train`: CLIP training on the build's shards with open_clip's model, loss and schedule.

    tol train --shards demo-out/shards --name demo                      # tiny-cpu preset: minutes on a CPU
    torchrun --nproc-per-node 8 -m training.train --preset bioclip-vit-b-16 --pretrained ViT-B-16.pt \\
        --train-data 'out/shards/train/shard-{000000..000999}.tar' --val-data 'out/shards/val/shard-{000000..000049}.tar'

Outputs in RUNS_DIR/NAME: config.json (the resolved configuration), log.jsonl (loss, lr, samples/s, logit scale,
skipped samples; validation loss), checkpoints/step-NNNNNNNN.pt and latest.pt, and model/ (the final model as an
open_clip `local-dir:` folder). Rerunning the same command resumes from the latest checkpoint at the same step,
with the same data and, on the same hardware, the same losses. Under torchrun every process trains on its own
slice of the shards; the contrastive loss gathers features across processes (open_clip's ClipLoss).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from open_clip import ClipLoss
from open_clip_train.scheduler import cosine_lr
from tqdm import tqdm

from taxonomy.build import write_atomic
from training import checkpoints
from training.config import TrainConfig, configure, resolve
from training.data import (
    DataSpec,
    ShardBatches,
    batch_text_type,
    count_samples,
    expand_sources,
    make_loader,
    micro_batches_per_epoch,
)
from training.distributed import Distributed, init_distributed
from training.model import LoadedModel, create_model, export_local_dir
from training.step import Stepper

log = logging.getLogger(__name__)


def data_spec(config: TrainConfig, dist: Distributed, patterns: Sequence[str], batch_size: int,
              train: bool) -> DataSpec:
    """The loader spec of the training data (shuffled, mixed text) or of the validation data (one plain pass)."""
    sources = expand_sources(patterns)
    return DataSpec(
        sources=sources, weights=config.train_data_weights if train else (1.0,),
        resampled=config.dataset_resampled and train, text_type=config.text_type if train else config.val_text_type,
        mix=config.mix, sample_shuffle=config.sample_shuffle if train else 0, shard_shuffle=train,
        batch_size=batch_size, workers=config.workers if train else min(config.workers, len(sources[0])),
        seed=config.seed, rank=dist.rank if train else 0, world_size=dist.world_size if train else 1)


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW as open_clip sets it up: no weight decay on gains, biases, norms and the logit scale."""
    def exempt(name: str, param: torch.nn.Parameter) -> bool:
        return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if exempt(n, p)], "weight_decay": 0.0},
              {"params": [p for n, p in named if not exempt(n, p)], "weight_decay": config.weight_decay}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps)


def prepare_run(config: TrainConfig, dist: Distributed) -> Path | None:
    """Create or check RUNS_DIR/NAME; returns the checkpoint to resume from, if there is one."""
    run_dir, saved_path = config.run_dir, config.run_dir / "config.json"
    latest = checkpoints.latest_step(run_dir / "checkpoints")
    if saved_path.is_file():
        changes = config.changes_from(json.loads(saved_path.read_text(encoding="utf-8")))
        if changes and latest is not None:
            listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changes.items()))
            raise ValueError(f"run {run_dir} was started with other settings ({listed}); use another --name")
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        saved_path.write_text(json.dumps(asdict(config), indent=1) + "\n", encoding="utf-8")
    return latest


def log_line(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


class Trainer:
    """One run: its data, model, optimiser and schedule; `run()` trains from the latest checkpoint to the end."""

    def __init__(self, config: TrainConfig, dist: Distributed, loaded: LoadedModel) -> None:
        self.config, self.dist, self.loaded = config, dist, loaded
        batch_size = config.per_device_batch(dist.world_size)
        self.spec = data_spec(config, dist, config.train_data, batch_size, train=True)
        self.num_samples = config.train_num_samples or count_samples(u for source in self.spec.sources for u in source)
        micro = micro_batches_per_epoch(self.num_samples, batch_size, dist.world_size, config.accum_freq)
        self.steps_per_epoch = micro // config.accum_freq
        self.total = self.steps_per_epoch * config.epochs
        self.data = ShardBatches(self.spec, loaded.train_transform, loaded.tokenizer, micro)
        self.val = (ShardBatches(data_spec(config, dist, [config.val_data], batch_size, train=False),
                                 loaded.eval_transform, loaded.tokenizer, None) if config.val_data else None)
        self.stepper = Stepper(loaded.model, build_optimizer(loaded.model, config), config, dist, ClipLoss(
            local_loss=config.local_loss, gather_with_grad=config.gather_with_grad, cache_labels=True,
            rank=dist.rank, world_size=dist.world_size))
        self.schedule = cosine_lr(self.stepper.optimizer, config.lr, config.warmup, self.total)
        self.logs = config.run_dir / "log.jsonl"

    def run(self) -> int:
        """Train from the latest checkpoint (or step 0) to the end or --stop-at-step; returns the last step."""
        config, step = self.config, resume(self.config, self.dist, self.stepper)
        end = min(self.total, config.stop_at_step or self.total)
        log.info("training %s: %d samples/epoch, %d steps/epoch, steps %d..%d of %d, micro-batch %d x %d "
                 "device(s)", config.name, self.num_samples, self.steps_per_epoch, step, end, self.total,
                 self.spec.batch_size, self.dist.world_size)
        with tqdm(total=end, initial=step, disable=not self.dist.is_main, desc="training", unit="step") as progress:
            while step < end:
                step = self.epoch(step, end, progress)
        return step

    def epoch(self, step: int, end: int, progress: tqdm) -> int:
        """Steps from `step` to the end of its epoch (or `end`); returns the step reached."""
        config, epoch = self.config, step // self.steps_per_epoch
        self.data.set_position(epoch, (step % self.steps_per_epoch) * config.accum_freq)
        batches, started, seen, skipped = iter(make_loader(self.data, config.workers)), time.perf_counter(), 0, 0
        for _ in range(min(self.steps_per_epoch - step % self.steps_per_epoch, end - step)):
            parts = [next(batches) for _ in range(config.accum_freq)]
            text_index = batch_text_type(config.seed, step) if self.spec.per_batch_mix else None
            self.schedule(step)
            loss = self.stepper.step([(images, tokens if text_index is None else tokens[:, text_index])
                                      for images, tokens, _ in parts])
            step, seen, skipped = step + 1, seen + sum(len(p[0]) for p in parts), skipped + sum(p[2] for p in parts)
            progress.update()
            progress.set_postfix(loss=f"{loss:.4f}", epoch=epoch)
            if self.dist.is_main and (step % config.log_every == 0 or step == end):
                rate = seen * self.dist.world_size / (time.perf_counter() - started)
                log_line(self.logs, {"step": step, "epoch": epoch, "loss": loss,
                                     "lr": self.stepper.optimizer.param_groups[0]["lr"], "samples_per_s": round(rate, 2),
                                     "logit_scale": self.stepper.logit_scale(), "skipped_samples": skipped})
            self.after_step(step, epoch, end)
        return step

    def after_step(self, step: int, epoch: int, end: int) -> None:
        """Validation loss and checkpoints when their step comes (always at the last step)."""
        if self.val is not None and (step % self.config.val_every == 0 or step == end):
            if self.dist.is_main:
                log_line(self.logs, {"step": step, "epoch": epoch, "val_loss": self.validate()})
            self.dist.barrier()
        if step % self.config.save_every == 0 or step == end:
            if self.dist.is_main:
                checkpoints.save(self.config.run_dir / "checkpoints", step, model=self.stepper.unwrapped,
                                 optimizer=self.stepper.optimizer, scaler=self.stepper.scaler,
                                 open_clip_config=self.loaded.config, config=asdict(self.config),
                                 workers=self.config.workers)
            self.dist.barrier()

    def validate(self) -> float:
        """Mean contrastive loss over the validation split (one pass, on this process alone)."""
        model = self.stepper.unwrapped
        model.eval()
        total, count = 0.0, 0
        for images, tokens, _ in make_loader(self.val, self.val.spec.workers):
            total += self.stepper.eval_loss(images, tokens) * len(images)
            count += len(images)
        model.train()
        return total / max(count, 1)


def resume(config: TrainConfig, dist: Distributed, stepper: Stepper) -> int:
    """The step to start from: 0, or the latest checkpoint's, whose states are loaded into `stepper`."""
    latest = prepare_run(config, dist)
    step = 0
    if latest is not None:
        resumed = checkpoints.restore(latest, model=stepper.unwrapped, optimizer=stepper.optimizer,
                                      scaler=stepper.scaler)
        if resumed.workers != config.workers:
            log.warning("resuming with %d workers where the checkpoint used %d: the data order after step %d "
                        "differs from an uninterrupted run", config.workers, resumed.workers, resumed.step)
        log.info("resuming %s from %s (step %d)", config.name, latest, resumed.step)
        step = resumed.step
    if dist.is_main:
        trim_log(config.run_dir / "log.jsonl", step)
    return step


def trim_log(path: Path, step: int) -> None:
    """Drop log lines past `step`: a run stopped after its last checkpoint redoes those steps and logs them again."""
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = "".join(line for line in lines if json.loads(line)["step"] <= step)
        write_atomic(path, lambda temporary: temporary.write_text(kept, encoding="utf-8"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tol train", description=__doc__.split("\n\n")[0])
    configure(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = resolve(args, torch.cuda.is_available())
        dist = init_distributed(config.device)
        if dist.device.type == "cpu":  # loader workers need cores too; oversubscribed threads slow steps tenfold
            torch.set_num_threads(max(1, (os.cpu_count() or 1) - config.workers))
        torch.manual_seed(config.seed)
        loaded = create_model(config.model, Path(config.pretrained) if config.pretrained else None, dist.device)
        if config.grad_checkpointing:
            loaded.model.set_grad_checkpointing(True)
        step = Trainer(config, dist, loaded).run()
    except ValueError as error:
        log.error("%s", error)
        return 2
    if dist.is_main:
        folder = export_local_dir(loaded.model, loaded.config, config.run_dir / "model")
        log.info("step %d done; model in %s (use --model local-dir:%s or --checkpoint %s)", step, folder, folder,
                 config.run_dir / "checkpoints" / checkpoints.LATEST)
    dist.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
