"""Structured configs: the schema every YAML under conf/ is validated against before any work.

`register_configs()` puts them in Hydra's ConfigStore; conf/train.yaml lists `train_schema` first in its
defaults so a typo in any field or a wrong type stops at composition time with Hydra's message.
Value checks that types cannot express live in resnets.validation (`validate()`), which names the
field and the accepted values. This module imports no factory: the factories import it (for
`ConfigError` and the schema's defaults), so it stays a leaf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from .renamed import RENAMED_MODEL_FIELDS, renamed_fields_set, renamed_message


@dataclass
class ModelConfig:
    name: str = MISSING
    depth: int | None = None
    block: str | None = None
    preact: bool | None = None
    groups: int | None = None
    width_per_group: int | None = None
    widen_factor: float | None = None
    # the stem's output channels and the first stage's planes (later stages double them)
    base_channels: int | None = None
    attention: str | None = None
    stem: str | None = None
    shortcut: str | None = None
    avg_down: bool | None = None
    stride_in_1x1: bool | None = None
    drop_path_rate: float | None = None  # stochastic depth, rising linearly to the last block
    drop_rate: float | None = None  # dropout before the classifier
    inner_dropout: float | None = None  # dropout between a basic block's convs (Wide ResNet)
    zero_init_residual: bool | None = None
    include_top: bool | None = None
    in_chans: int | None = None
    out_indices: list[int] | None = None
    layers: list[int] | None = None
    radix: int | None = None
    # anti-aliased downsampling: a 3x3 binomial blur before every strided conv on >= 16 channels
    # (FFCV's ResNet-50); weights keep their names, so checkpoints load either way
    blurpool: bool | None = None
    # fine-tuning: torchvision[:WEIGHTS] | timm[:model.tag] | a path; parts kept fixed
    pretrained: str | None = None
    pretrained_ema: bool = False  # a resnets checkpoint's EMA weights instead of its model
    freeze: list[str] | None = None  # stem, layer1 .. layer4
    # renamed fields (resnets.renamed): in the schema only so that an old name given on the
    # command line is refused in one line naming the new one, not with Hydra's struct error
    base_width: int | None = None
    dropout: float | None = None
    block_dropout: float | None = None
    drop_path: float | None = None
    stem_width: int | None = None
    block_drop_rate: float | None = None


@dataclass
class AugmentConfig:
    crop_padding: int = 0
    hflip: bool = False
    auto_augment: str | None = None  # autoaugment | trivialaugment | randaugment
    random_erasing: float = 0.0
    cutout: int = 0
    random_resized_crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])


@dataclass
class ProgressiveConfig:
    """Progressive resizing (resnets.data.progressive): the training size grows from min_size
    to data.image_size, FFCV's schedule."""

    min_size: int | None = None  # null: off, every epoch at data.image_size
    start_epoch: int = 0  # min_size up to this epoch (0-based; FFCV's start_ramp)
    end_epoch: int = 0  # data.image_size from this epoch (FFCV's end_ramp)
    multiple: int = 32  # sizes in between rounded to a multiple of this


@dataclass
class DataConfig:
    name: str = MISSING
    root: str | None = "data"  # null in conf/data/imagefolder.yaml: the user must name it
    download: bool = False
    loader: str = "auto"  # auto | tensor | torchvision | dali (resnets.data.factory.LOADERS)
    image_size: int = 32
    val_resize: int | None = None
    val_crop: int | None = None
    num_classes: int | None = None
    val_fraction: float = 0.2
    split: str = "val"  # val | test | train
    mean: list[float] | None = None
    std: list[float] | None = None
    drop_last: bool = True
    pin_memory: bool = True
    persistent_workers: bool = True
    prefetch_factor: int = 4
    gpu_decode: bool = False
    # repeated augmentation: copies of each image an epoch holds, spread over ranks (0/1: off)
    repeated_aug: int = 0
    fake_size: int = 1024
    # fraction of a split's images that may be unreadable (skipped, listed in metrics.json)
    max_bad_images: float = 0.001
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    progressive: ProgressiveConfig = field(default_factory=ProgressiveConfig)


@dataclass
class OptimConfig:
    name: str = "sgd"  # a key of resnets.optim.OPTIMIZERS: sgd | adamw | lamb | lars
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    no_decay_norm_bias: bool = True
    head_lr_mult: float = 1.0  # the classifier's learning rate relative to the rest
    trust_coeff: float = 0.001  # lars: the trust ratio's coefficient (You et al. 2017)
    # lr is for this many images a step (global batch); null: lr as given at any batch
    base_batch_size: int | None = None


@dataclass
class SchedConfig:
    # a key of resnets.optim.SCHEDULERS: cosine | step | multistep | onecycle | constant
    name: str = "cosine"
    warmup_epochs: float = 0.0
    warmup_method: str = "linear"  # linear (rise from start factor) | constant (hold it)
    warmup_start_factor: float = 0.1
    min_lr: float = 0.0
    step_size: float = 30.0  # epochs, for step
    milestones: list[float] = field(default_factory=lambda: [30.0, 60.0, 90.0])  # epochs
    gamma: float = 0.1
    pct_start: float = 0.25  # onecycle: fraction of steps spent rising
    div_factor: float = 25.0
    final_div_factor: float = 1e4


@dataclass
class TrainerConfig:
    device: str = "auto"  # auto | cpu | cuda
    epochs: int = 12  # the default digits run's
    max_steps: int | None = None
    batch_size: int = 128  # per process; derived when global_batch_size is set
    # images a step over all processes and accumulated micro-batches (a recipe's batch);
    # null: batch_size per process as given
    global_batch_size: int | None = None
    eval_batch_size: int | None = 512  # null: trainer.batch_size
    workers: int = 2
    # auto / null follow the device (resnets.runtime.DEVICE_DEFAULTS): fp32 + channels_last on
    # CPU; bf16 (fp16 before Ampere), channels_last and torch.compile on CUDA. The log and the
    # run's config record the choice.
    precision: str = "auto"  # auto | 32 | bf16-mixed | 16-mixed (CUDA, with a gradient scaler)
    channels_last: bool | None = None
    compile: bool | None = None
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs) | max-autotune
    accumulate_grad_batches: int = 1
    grad_clip: float | None = None
    deterministic: bool = False
    eval_every: int = 1
    log_every: int = 10  # TensorBoard, history and the finite check every N steps
    detect_anomaly: bool = False
    label_smoothing: float = 0.1
    loss: str = "ce"  # a key of resnets.engine.losses.LOSSES: ce | bce (one sigmoid per class)
    # bce: targets above this become 1, the rest 0 (timm's --bce-target-thresh); null: as mixed
    bce_target_threshold: float | None = None
    bce_sum_classes: bool = False  # bce: sum over classes (mean over images); false: mean of all
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    ema_decay: float | None = None  # per-step decay of an EMA of the weights (e.g. 0.9999)
    ema_every: int = 1  # update the EMA every k steps (with decay**k)
    # raw | ema: whose val top-1 picks best.pt (null: ema when EMA is on)
    best_by: str | None = None
    progress: bool = True
    # without a progress bar (batch jobs): a log line every N steps, 0 off
    progress_every: int = 100
    save_every: int = 1
    sync_batchnorm: bool = False
    dist_backend: str = "auto"  # auto | nccl | gloo


@dataclass
class ExpectedConfig:
    """A published (or measured) result this configuration should reach; the sweep leaderboard
    compares the runs' mean final top-1 of `weights` with it, on `data` only."""

    top1: float | None = None  # percent; null: nothing to compare with
    tolerance: float = 0.5  # percentage points either way
    source: str | None = None  # "He et al. 2015, Table 6"
    weights: str = "raw"  # raw | ema: the weights the published figure is for
    data: str | None = None  # data.name the figure was measured on; other data: n/a, null: any


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0
    run_name: str = "${model.name}-${data.name}"  # outputs/<run_name>/<time>
    # resume from this checkpoint (null: <run dir>/checkpoints/last.pt when resume is true)
    ckpt_path: str | None = None
    resume: bool = True  # continue from <run dir>/checkpoints/last.pt when it exists
    expected: ExpectedConfig = field(default_factory=ExpectedConfig)
    # callbacks by name, each a node with `_target_` (conf/logger/, conf/checkpoint/)
    logger: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] = field(default_factory=dict)


def register_configs() -> None:
    from .run_record import register_record_resolver

    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    register_record_resolver()


class ConfigError(ValueError):
    """A config value that is well-typed but not allowed; the message names field and accepted values."""


def check_renamed(model: Any) -> None:
    """Refuse a model field given by its old name (resnets.renamed), naming the new one."""
    for old in renamed_fields_set(model):
        new = RENAMED_MODEL_FIELDS[old]
        raise ConfigError(f"{renamed_message(old)} (model.{new}={model.get(old)!r})")


@dataclass
class ExportTrainerConfig:
    """The trainer fields export.py reads: the validation loader of its parity check. Given on
    the command line they replace the checkpoint's; every other trainer field is refused."""

    batch_size: int = 256
    eval_batch_size: int | None = None
    workers: int = 0


@dataclass
class EvalTrainerConfig(ExportTrainerConfig):
    """The trainer fields evaluate.py reads: its loader, device, layout and process group."""

    workers: int = 2
    device: str = "auto"  # auto | cpu | cuda
    channels_last: bool | None = None
    dist_backend: str = "auto"  # auto | nccl | gloo


@dataclass
class EvalConfig:
    """conf/evaluate.yaml: what to score and how; model/data/trainer fields given on the command
    line override the ones stored in the checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: EvalTrainerConfig = field(default_factory=EvalTrainerConfig)
    ckpt: str | None = None
    weights: str | None = None
    sweep: str | None = None
    rescore: bool = True
    group_seeds: bool = True
    plots: bool = True
    # auto: the weights whose top-1 chose best.pt (the checkpoint's best_by) | true (EMA) | false
    use_ema: Any = "auto"
    tta: str = "none"  # none | flip
    precision: str = "32"
    output_dir: str | None = None


def register_eval_configs() -> None:
    ConfigStore.instance().store(name="evaluate_schema", node=EvalConfig)


@dataclass
class ExportConfig:
    """conf/export.yaml: which checkpoint, which formats, and how strictly parity is checked."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: ExportTrainerConfig = field(default_factory=ExportTrainerConfig)
    ckpt: str | None = None
    format: str = "onnx"  # onnx | torchscript | exported | all
    use_ema: Any = "auto"  # auto (the checkpoint's best_by) | true | false
    dynamic_batch: bool = True
    opset: int | None = None
    output_dir: str | None = None
    # auto: the checkpoint's validation images when the data is there, random ones otherwise
    parity_data: str = "auto"  # auto | val | random
    parity_samples: int = 512
    tolerance: float = 1e-4
    latency: bool = True
    latency_repeats: int = 10
    seed: int = 0  # the random parity images


@dataclass
class PredictConfig:
    """conf/predict.yaml: a checkpoint or an exported ONNX file, and the images to classify.
    The network and its preprocessing come from the checkpoint; `data.*` given on the command
    line rebuilds them from the data config instead (and needs the data)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    ckpt: str | None = None
    model_file: str | None = None
    images: str | None = None
    use_ema: Any = "auto"  # auto (the checkpoint's best_by) | true | false
    topk: int | None = None  # null: 5, or every class when there are fewer
    batch_size: int = 32
    workers: int = 0
    output_dir: str | None = None
    progress: bool = True


def register_export_configs() -> None:
    ConfigStore.instance().store(name="export_schema", node=ExportConfig)
    ConfigStore.instance().store(name="predict_schema", node=PredictConfig)
