"""SSL pre-training: a :class:`PretrainConfig` (method, encoder, data, views) run by the one
encoder training loop (:class:`encshield.encoder_trainer.EncoderTrainer`, which documents the
determinism, resuming and the files written to ``output_dir``).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from encshield.encoder_trainer import (
    LOG_FILE,
    STATE_FILE,
    EncoderTrainer,
    KNNConfig,
    TrainingConfig,
)
from encshield.ssl.augment import AugmentConfig, make_views, preset
from encshield.ssl.methods import METHODS, SSLMethod

__all__ = ["LOG_FILE", "STATE_FILE", "DataConfig", "EncoderConfig", "KNNConfig",
           "PretrainConfig", "Pretrainer", "pretrain"]


class EncoderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arch: str = "resnet18"
    width: int = Field(64, gt=0)
    stem: str = "cifar"
    normalization: str = "cifar10"


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "cifar10"
    split: str = "train"
    root: str | None = None
    image_size: int | None = Field(None, gt=0)
    limit: int | None = Field(None, gt=0, description="use only the first N images (smoke runs)")


class PretrainConfig(TrainingConfig):
    """Everything that defines an SSL pre-training run."""

    method: str = "simclr"
    method_args: dict[str, Any] = Field(default_factory=dict)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    augment: str | AugmentConfig | None = Field(
        None, description="a preset name (simclr, byol) or explicit views; default: the method's"
    )

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return METHODS.canonical(value)


class Pretrainer(EncoderTrainer):
    """Builds the method, data and views of a :class:`PretrainConfig` for the shared loop."""

    def __init__(self, config: PretrainConfig, *, progress: bool = True) -> None:
        from encshield import data, models

        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        encoder = models.build_encoder(
            arch=config.encoder.arch,
            width=config.encoder.width,
            stem=config.encoder.stem,
            normalization=config.encoder.normalization,
            input_size=config.data.image_size or 32,
            ssl_method=config.method,
            pretrain_data=f"{config.data.name}/{config.data.split}",
        )
        method: SSLMethod = METHODS.get(config.method).from_args(encoder, config.method_args)
        dataset = data.load(
            config.data.name, config.data.split, root=config.data.root,
            image_size=config.data.image_size,
        )
        images = dataset.images[: config.data.limit] if config.data.limit else dataset.images
        self.ssl_method = method
        super().__init__(config, method, images, title=f"{config.method} pre-training",
                         knn_dataset=config.data.name, data_root=config.data.root,
                         progress=progress)
        self.config: PretrainConfig = config
        self.augment = self._augment_config()

    def _augment_config(self) -> AugmentConfig:
        size = self.images.shape[-1]
        augment = self.config.augment
        if augment is None:
            return preset(self.ssl_method.augment_preset, size)
        if isinstance(augment, str):
            return preset(augment, size)
        return augment

    def inputs(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """The method's augmented views of the batch."""
        return make_views(batch, self.augment)

    def export_fields(self) -> dict[str, Any]:
        cfg = self.config
        return {"ssl_method": cfg.method, "pretrain_data": f"{cfg.data.name}/{cfg.data.split}"}


def pretrain(config: PretrainConfig, *, resume: bool = False, progress: bool = True,
             stop_at_step: int | None = None) -> dict[str, Any]:
    """Run (or resume) SSL pre-training; returns the result record (also in result.json).

    ``stop_at_step`` pauses the run after that many optimiser steps (the learning-rate schedule
    is still the full run's): the state is checkpointed, the encoder exported as a snapshot
    (``encoder-step{N}.safetensors``, ``snapshot-step{N}.json``) and ``--resume`` continues it.
    Not part of the config, so it changes neither the trajectory nor the config hash.
    """
    return Pretrainer(config, progress=progress).run(resume=resume, stop_at_step=stop_at_step)
