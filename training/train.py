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
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from open_clip import ClipLoss
from open_clip_train.scheduler import cosine_lr
from tqdm import tqdm

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
        seed=config.seed,
        rank=dist.rank if train else 0, world_size=dist.world_size if train else 1)


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


def validate(stepper: Stepper, config: TrainConfig, val: ShardBatches) -> float:
    """Mean contrastive loss over the validation split (one pass, main process only)."""
    stepper.model_for_eval.eval()
    with torch.no_grad():
        total, count = 0.0, 0
        for images, tokens, _ in make_loader(val, val.spec.workers):
            total += stepper.eval_loss(images, tokens) * len(images)
            count += len(images)
    stepper.model_for_eval.train()
    return total / max(count, 1)


def log_line(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def train(config: TrainConfig, dist: Distributed, loaded: LoadedModel) -> int:
    """The training loop: epochs of shuffled batches, logging, validation, checkpoints; returns the last step."""
    batch_size = config.per_device_batch(dist.world_size)
    spec = data_spec(config, dist, config.train_data, batch_size, train=True)
    num_samples = config.train_num_samples or count_samples(url for source in spec.sources for url in source)
    micro = micro_batches_per_epoch(num_samples, batch_size, dist.world_size, config.accum_freq)
    steps_per_epoch, total = micro // config.accum_freq, micro // config.accum_freq * config.epochs
    dataset = ShardBatches(spec, loaded.train_transform, loaded.tokenizer, micro)
    val = (ShardBatches(data_spec(config, dist, [config.val_data], batch_size, train=False), loaded.eval_transform,
                        loaded.tokenizer, None) if config.val_data else None)
    optimizer = build_optimizer(loaded.model, config)
    stepper = Stepper(loaded.model, optimizer, config, dist, ClipLoss(
        local_loss=config.local_loss, gather_with_grad=config.gather_with_grad, cache_labels=True,
        rank=dist.rank, world_size=dist.world_size))
    schedule = cosine_lr(optimizer, config.lr, config.warmup, total)
    step = resume(config, dist, stepper)
    end = min(total, config.stop_at_step or total)
    log.info("training %s: %d samples/epoch, %d steps/epoch, steps %d..%d of %d, micro-batch %d x %d device(s)",
             config.name, num_samples, steps_per_epoch, step, end, total, batch_size, dist.world_size)
    logs, progress = config.run_dir / "log.jsonl", tqdm(total=end, initial=step, disable=not dist.is_main,
                                                         desc="training", unit="step")
    while step < end:
        epoch = step // steps_per_epoch
        dataset.set_position(epoch, (step % steps_per_epoch) * config.accum_freq)
        batches, started, seen, skipped = iter(make_loader(dataset, config.workers)), time.perf_counter(), 0, 0
        for _ in range(min(steps_per_epoch - step % steps_per_epoch, end - step)):
            parts = [next(batches) for _ in range(config.accum_freq)]
            text_index = batch_text_type(config.seed, step) if spec.per_batch_mix else None
            schedule(step)
            loss = stepper.step([(images, tokens if text_index is None else tokens[:, text_index])
                                 for images, tokens, _ in parts])
            step, seen, skipped = step + 1, seen + sum(len(p[0]) for p in parts), skipped + sum(p[2] for p in parts)
            progress.update()
            progress.set_postfix(loss=f"{loss:.4f}", epoch=epoch)
            if dist.is_main and (step % config.log_every == 0 or step == end):
                rate = seen * dist.world_size / (time.perf_counter() - started)
                log_line(logs, {"step": step, "epoch": epoch, "loss": loss, "lr": optimizer.param_groups[0]["lr"],
                                "samples_per_s": round(rate, 2), "logit_scale": stepper.logit_scale(),
                                "skipped_samples": skipped})
            if val is not None and (step % config.val_every == 0 or step == end):
                val_loss = validate(stepper, config, val) if dist.is_main else None
                if dist.is_main:
                    log_line(logs, {"step": step, "epoch": epoch, "val_loss": val_loss})
                dist.barrier()
            if step % config.save_every == 0 or step == end:
                save(config, dist, stepper, loaded, step)
    progress.close()
    return step


def resume(config: TrainConfig, dist: Distributed, stepper: Stepper) -> int:
    latest = prepare_run(config, dist)
    if latest is None:
        return 0
    resumed = checkpoints.restore(latest, model=stepper.unwrapped, optimizer=stepper.optimizer, scaler=stepper.scaler)
    if resumed.workers != config.workers:
        log.warning("resuming with %d workers where the checkpoint used %d: the data order after step %d differs "
                    "from an uninterrupted run", config.workers, resumed.workers, resumed.step)
    log.info("resuming %s from %s (step %d)", config.name, latest, resumed.step)
    return resumed.step


def save(config: TrainConfig, dist: Distributed, stepper: Stepper, loaded: LoadedModel, step: int) -> None:
    if dist.is_main:
        checkpoints.save(config.run_dir / "checkpoints", step, model=stepper.unwrapped, optimizer=stepper.optimizer,
                         scaler=stepper.scaler, open_clip_config=loaded.config, config=asdict(config),
                         workers=config.workers)
    dist.barrier()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tol train", description=__doc__.split("\n\n")[0])
    configure(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = resolve(args, torch.cuda.is_available())
        dist = init_distributed(config.device)
        torch.manual_seed(config.seed)
        loaded = create_model(config.model, Path(config.pretrained) if config.pretrained else None, dist.device)
        if config.grad_checkpointing:
            loaded.model.set_grad_checkpointing(True)
        step = train(config, dist, loaded)
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
