"""The one encoder training loop: SSL pre-training and BadEncoder backdoor injection.

An *objective* (:class:`EncoderObjective`: an :class:`~encshield.ssl.methods.SSLMethod`, or
:class:`~encshield.backdoor.objective.BadEncoderObjective`) turns a batch of inputs into losses;
:class:`EncoderTrainer` owns everything else: data order, learning-rate schedule, optimiser,
autocast, logging, the kNN monitor, checkpointing, resuming and the export of the encoder.
Subclasses say how a batch of uint8 images becomes the objective's inputs (:meth:`inputs`) and
what the exported encoder's metadata is (:meth:`export_fields`).

Determinism and resuming: the data order of epoch ``e`` is a permutation drawn from a generator
seeded with ``(seed, e)``, and the global RNG is re-seeded from ``(seed, step)`` before each
step's inputs are made. A run's randomness is therefore a function of the step index alone, and
a run resumed from a checkpoint (saved atomically every ``checkpoint_every_steps`` steps and at
each epoch end) ends with the same weights as an uninterrupted one on CPU.

Outputs in ``output_dir``: ``config.yaml``, ``log.jsonl`` (one JSON object per logged step,
epoch and kNN evaluation), ``checkpoint.pt`` (training state: weights, optimiser, step), and at
the end ``encoder.safetensors`` plus ``result.json``.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from encshield import __version__
from encshield.config import config_hash
from encshield.errors import CheckpointError, ConfigError
from encshield.models import Encoder
from encshield.models.modules import channels_last_safe, set_channels_last
from encshield.optim import OptimizerConfig, build_optimizer, set_lr, warmup_cosine
from encshield.precision import autocast
from encshield.progress import progress
from encshield.provenance import atomic_path, atomic_write, write_json

__all__ = ["STATE_FILE", "LOG_FILE", "EncoderObjective", "EncoderTrainer", "KNNConfig",
           "TrainingConfig"]

STATE_FILE = "checkpoint.pt"
LOG_FILE = "log.jsonl"


class KNNConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    every_epochs: int = Field(5, ge=0, description="0 disables the monitor during training")
    dataset: str | None = Field(None, description="default: the training images' dataset")
    train_split: str = "train"
    test_split: str = "test"
    k: list[int] = Field(default_factory=lambda: [20, 200])
    temperature: float = Field(0.07, gt=0)
    limit_train: int | None = Field(None, gt=0)
    limit_test: int | None = Field(None, gt=0)


class TrainingConfig(BaseModel):
    """The fields of every encoder training run (the loop's settings)."""

    model_config = ConfigDict(extra="forbid")

    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    epochs: int = Field(100, gt=0)
    batch_size: int = Field(256, gt=1)
    seed: int = 0
    device: str = "cpu"
    channels_last: bool = False
    amp: bool = Field(False, description="bfloat16 autocast for the forward pass (losses stay "
                      "float32); 2x faster on a GPU or a CPU with AVX512-BF16")
    compile: bool = Field(False, description="torch.compile the encoder in place (GPU)")
    threads: int | None = Field(None, gt=0, description="torch CPU threads (default: torch's)")
    output_dir: str = "runs/pretrain"
    checkpoint_every_steps: int = Field(100, gt=0)
    log_every_steps: int = Field(20, gt=0)
    knn: KNNConfig = Field(default_factory=KNNConfig)


class EncoderObjective(nn.Module):
    """What the loop trains: a module holding the ``encoder`` being trained (and whatever heads
    or frozen copies its loss needs) that turns a batch of inputs into losses."""

    encoder: Encoder

    def training_loss(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"loss": scalar, ...named parts}`` of one batch (``views``: float ``(N, C, H, W)``
        tensors in [0, 1], as :meth:`EncoderTrainer.inputs` makes them)."""
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimiser updates (default: every parameter that requires a gradient)."""
        return [p for p in self.parameters() if p.requires_grad]

    def after_step(self, progress: float) -> None:
        """Called after each optimiser step with the fraction of training done (EMA updates,
        queues); nothing by default."""


def _epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def _step_seed(seed: int, step: int) -> int:
    return (seed * 2_147_483_647 + step * 7919 + 17) % (2**63 - 1)


class EncoderTrainer:
    """The loop over an :class:`EncoderObjective` and uint8 training images ``(N, C, H, W)``.

    Args:
        config: the run's :class:`TrainingConfig` (subclass), hashed into every checkpoint.
        objective: what is trained; moved to ``config.device``.
        images: the training images, uint8 ``(N, C, H, W)``.
        title: the progress bar's and the log's name of the run.
        knn_dataset: the kNN monitor's dataset when ``config.knn.dataset`` is not set.
        data_root: where the monitor's dataset is found (default: ``$ENCSHIELD_DATA``).
        progress: show a progress bar.
    """

    def __init__(self, config: TrainingConfig, objective: EncoderObjective, images: torch.Tensor,
                 *,
                 title: str, knn_dataset: str, data_root: str | None = None,
                 progress: bool = True) -> None:
        self.config = config
        self.title = title
        self.progress = progress
        self.output_dir = Path(config.output_dir)
        self.device = torch.device(config.device)
        self.knn_dataset = config.knn.dataset or knn_dataset
        self.data_root = data_root
        self.method = objective.to(self.device)
        if config.channels_last:
            set_channels_last(self.method)
        self.channels_last = config.channels_last and channels_last_safe(self.method)
        if config.compile:
            self.method.encoder.compile()
        self.images = images.contiguous().to(self.device)
        if self.images.shape[0] < config.batch_size:
            raise ConfigError(
                f"batch_size: {config.batch_size} is larger than the dataset "
                f"({self.images.shape[0]} images); lower it"
            )
        self.steps_per_epoch = self.images.shape[0] // config.batch_size
        self.total_steps = self.steps_per_epoch * config.epochs
        self.optimizer = build_optimizer(
            self.method.trainable_parameters(), config.optimizer, config.batch_size
        )
        self.peak_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.warmup_steps = int(config.optimizer.warmup_epochs * self.steps_per_epoch)
        self.step = 0
        self._knn_data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    # -- what subclasses say -----------------------------------------------------------------
    def inputs(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """The objective's inputs for a uint8 batch (default: the images as floats in [0, 1])."""
        return [batch.float().div_(255)]

    def export_fields(self) -> dict[str, Any]:
        """Keyword arguments of :func:`encshield.checkpoints.save_encoder` for the export
        (``ssl_method``, ``pretrain_data``, ``extra``)."""
        return {}

    # -- checkpointing ---------------------------------------------------------------------
    def save_state(self) -> None:
        state = {
            "format": "encshield-pretrain-state/1",
            "step": self.step,
            "config_hash": config_hash(self.config),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }
        with atomic_path(self.output_dir / STATE_FILE) as tmp:
            torch.save(state, tmp)

    def load_state(self) -> None:
        path = self.output_dir / STATE_FILE
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as error:  # report any unreadable state clearly
            raise CheckpointError(
                f"cannot read the training state {path} ({error}); delete it to start over"
            ) from None
        if state.get("config_hash") != config_hash(self.config) and not self._same_stored_config():
            raise ConfigError(
                f"{path} was written by a different configuration; resume with the same config "
                "(see config.yaml in that folder) or choose another output_dir"
            )
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])

    def _same_stored_config(self) -> bool:
        """Whether the run's stored config.yaml, read with today's defaults, equals ours.

        Lets a run started by an older version resume after fields with defaults were added
        (which changes the hash of the full configuration but not the run)."""
        path = self.output_dir / "config.yaml"
        try:
            stored = type(self.config).model_validate(yaml.safe_load(path.read_text()))
        except Exception:  # missing or unreadable: not the same
            return False
        return stored == self.config

    def _truncate_log(self) -> None:
        """Drop log records written after the checkpoint we resume from (they will be redone)."""
        path = self.output_dir / LOG_FILE
        if not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by the interruption
                continue
            if int(record.get("step", 0)) <= self.step:
                kept.append(line)
        atomic_write(path, "".join(line + "\n" for line in kept))

    # -- monitoring ------------------------------------------------------------------------
    def knn(self) -> dict[str, float]:
        from encshield import data
        from encshield.evaluation import knn_accuracy

        cfg = self.config.knn
        if self._knn_data is None:
            size = self.images.shape[-1]
            train = data.load(self.knn_dataset, cfg.train_split, root=self.data_root,
                              image_size=size)
            test = data.load(self.knn_dataset, cfg.test_split, root=self.data_root,
                             image_size=size)
            self._knn_data = (
                train.images[: cfg.limit_train],
                train.labels[: cfg.limit_train],
                test.images[: cfg.limit_test],
                test.labels[: cfg.limit_test],
            )
        accuracies = knn_accuracy(
            self.method.encoder, *self._knn_data, ks=cfg.k, temperature=cfg.temperature,
            device=self.device,
        )
        self.method.train()
        return {f"knn_top1_k{k}": acc for k, acc in accuracies.items()}

    # -- one step ----------------------------------------------------------------------------
    def train_step(self) -> dict[str, torch.Tensor]:
        """One optimiser step at ``self.step`` (inputs, loss, backward, update, EMA); returns the
        detached losses. Its randomness depends only on the seed and the step index."""
        cfg = self.config
        epoch, index = divmod(self.step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            self._perm = _epoch_permutation(cfg.seed, epoch, self.images.shape[0])
            self._perm_epoch = epoch
        batch_idx = self._perm[index * cfg.batch_size : (index + 1) * cfg.batch_size].to(
            self.device
        )
        torch.manual_seed(_step_seed(cfg.seed, self.step))
        views = self.inputs(self.images[batch_idx])
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        lr_scale = warmup_cosine(self.step, self.total_steps, self.warmup_steps,
                                 cfg.optimizer.min_lr_ratio)
        set_lr(self.optimizer, self.peak_lrs, lr_scale)
        with autocast(self.device, cfg.amp):
            losses = self.method.training_loss(views)
        loss = losses["loss"].float()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {float(loss)} at step {self.step}; lower optimizer.lr"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        self.method.after_step(self.step / self.total_steps)
        return {name: value.detach() for name, value in losses.items()}

    # -- the loop --------------------------------------------------------------------------
    def run(self, resume: bool = False, stop_at_step: int | None = None) -> dict[str, Any]:
        """Train to the end of the schedule, or pause at ``stop_at_step``: the state is
        checkpointed, the encoder exported as a snapshot and ``resume=True`` continues."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        state_path = self.output_dir / STATE_FILE
        if resume and state_path.exists():
            self.load_state()
            self._truncate_log()
        elif state_path.exists() or (self.output_dir / "result.json").exists():
            raise ConfigError(
                f"output_dir {self.output_dir} already holds a run; add --resume to continue it "
                "or choose another output_dir"
            )
        (self.output_dir / "config.yaml").write_text(
            yaml.safe_dump(self.config.model_dump(mode="json"), sort_keys=False)
        )
        cfg = self.config
        log = open(self.output_dir / LOG_FILE, "a", encoding="utf-8")
        self.method.train()
        started = time.perf_counter()
        window_start, window_images = time.perf_counter(), 0
        with progress(self.title, self.total_steps, enabled=self.progress,
                      completed=self.step) as bar:
            end = self.total_steps if stop_at_step is None else min(stop_at_step, self.total_steps)
            while self.step < end:
                losses = self.train_step()
                window_images += cfg.batch_size
                if self.step % cfg.log_every_steps == 0 or self.step == self.total_steps:
                    seconds = time.perf_counter() - window_start
                    record = {
                        "step": self.step, "epoch": self.step / self.steps_per_epoch,
                        **{k: float(v.detach()) for k, v in losses.items()},
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "images_per_s": window_images / max(seconds, 1e-9),
                    }
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    bar(0, info=f"loss {record['loss']:.4f}  {record['images_per_s']:.0f} img/s")
                    window_start, window_images = time.perf_counter(), 0
                epoch_end = self.step % self.steps_per_epoch == 0
                if epoch_end or self.step % cfg.checkpoint_every_steps == 0 or self.step == end:
                    self.save_state()
                if (epoch_end and cfg.knn.every_epochs
                        and (self.step // self.steps_per_epoch) % cfg.knn.every_epochs == 0):
                    record = {"step": self.step, "epoch": self.step // self.steps_per_epoch,
                              **self.knn()}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                bar(completed=self.step)
        log.close()
        return self.finish(time.perf_counter() - started)

    def finish(self, seconds: float) -> dict[str, Any]:
        """Export the encoder and the result record: ``encoder.safetensors`` + ``result.json``
        at the end of the schedule, ``encoder-step{N}.safetensors`` + ``snapshot-step{N}.json``
        for a run paused before its end (which ``resume=True`` continues)."""
        from encshield.checkpoints import save_encoder

        cfg = self.config
        encoder = self.method.encoder
        finished = self.step >= self.total_steps
        suffix = "" if finished else f"-step{self.step}"
        path = self.output_dir / f"encoder{suffix}.safetensors"
        fields = self.export_fields()
        extra = {"step": self.step, "total_steps": self.total_steps,
                 "epoch": self.step / self.steps_per_epoch, **fields.pop("extra", {})}
        sha256 = save_encoder(set_channels_last(encoder.to("cpu"), False), path,
                              config_hash=config_hash(cfg), extra=extra, **fields)
        encoder.to(self.device)
        result: dict[str, Any] = {
            "encoder": str(path), "sha256": sha256, "steps": self.step,
            "total_steps": self.total_steps, "finished": finished,
            "epochs_done": self.step / self.steps_per_epoch, "epochs": cfg.epochs,
            "config_hash": config_hash(cfg), "seconds_this_session": round(seconds, 1),
            "versions": {"encshield": __version__, "torch": torch.__version__,
                         "python": platform.python_version()},
            "machine": {"platform": platform.platform(), "device": str(self.device),
                        "threads": torch.get_num_threads()},
        }
        if cfg.knn.every_epochs:
            result.update(self.knn())
        name = "result.json" if finished else f"snapshot-step{self.step}.json"
        write_json(self.output_dir / name, result)
        return result
