"""Structured configs: the schema every YAML under conf/ is validated against before any work.

`register_configs()` puts them in Hydra's ConfigStore; conf/train.yaml lists `train_schema` first in its
defaults so a typo in any field or a wrong type stops at composition time with Hydra's message.
Value checks that types cannot express live in `validate()` and name the field and the accepted values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from .limits import limit_violation
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


# Fields with a fixed set of values that no factory table owns; the rest come from the tables of
# the code acting on them (see `choices`).
CHOICES: dict[str, tuple[str, ...]] = {
    "trainer.dist_backend": ("auto", "nccl", "gloo"),
    "trainer.compile_mode": ("default", "reduce-overhead", "max-autotune"),
}


def choices() -> dict[str, tuple[str, ...]]:
    """Every field with a fixed set of values -> the accepted values, in message order.

    A field that names a factory reads the keys of that factory's table (optimizers and schedules
    in optim.py, precisions and devices in runtime.py, datasets and loaders in the data package),
    so adding one is one edit there. Imported here, not at the top: those modules import this one.
    """
    from .data import LOADERS, dataset_names
    from .data.datasets import SPLITS
    from .engine.losses import LOSSES
    from .optim import OPTIMIZERS, SCHEDULERS, WARMUPS
    from .runtime import DEVICE_DEFAULTS, PRECISIONS

    return {
        "trainer.precision": ("auto", *PRECISIONS),
        "trainer.device": ("auto", *DEVICE_DEFAULTS),
        **CHOICES,
        "optim.name": tuple(OPTIMIZERS),
        "sched.name": tuple(SCHEDULERS),
        "sched.warmup_method": tuple(WARMUPS),
        "trainer.loss": tuple(LOSSES),
        "data.name": dataset_names(),
        "data.loader": ("auto", *LOADERS),
        "data.split": SPLITS,
    }


POSITIVE: tuple[str, ...] = (
    "trainer.epochs",
    "trainer.batch_size",
    "trainer.accumulate_grad_batches",
    "trainer.eval_every",
    "trainer.log_every",
    "trainer.save_every",
    "trainer.ema_every",
    "optim.lr",
    "optim.head_lr_mult",
    "optim.eps",
    "data.image_size",
    "data.fake_size",
    "data.prefetch_factor",
)
PROBABILITIES: tuple[str, ...] = (
    "trainer.label_smoothing",
    "data.augment.random_erasing",
    "optim.momentum",
)
NON_NEGATIVE: tuple[str, ...] = (
    "trainer.workers",
    "data.augment.crop_padding",
    "data.augment.cutout",
    "optim.weight_decay",
    "sched.warmup_epochs",
    "sched.min_lr",
)
POSITIVE_OR_NULL: tuple[str, ...] = (
    "trainer.eval_batch_size",
    "trainer.global_batch_size",
    "data.num_classes",
)


class ConfigError(ValueError):
    """A config value that is well-typed but not allowed; the message names field and accepted values."""


def _get(cfg: DictConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def check_renamed(model: Any) -> None:
    """Refuse a model field given by its old name (resnets.renamed), naming the new one."""
    for old in renamed_fields_set(model):
        new = RENAMED_MODEL_FIELDS[old]
        raise ConfigError(f"{renamed_message(old)} (model.{new}={model.get(old)!r})")


def validate(cfg: DictConfig) -> None:
    """Check values that the schema's types cannot, before any data or model is touched."""
    check_renamed(cfg.model)
    out_of_range = limit_violation(cfg)  # NaN, infinity, bounds, meaningless values (limits.py)
    if out_of_range:
        raise ConfigError(out_of_range)
    for dotted, accepted in choices().items():
        value = str(_get(cfg, dotted))
        if value not in accepted:
            raise ConfigError(f"{dotted}={value!r} is not valid; accepted: {', '.join(accepted)}")
    from .data.progressive import check as check_progressive
    from .optim import check_installed

    check_installed(cfg.optim.name)
    check_progressive(cfg.data)
    for dotted in POSITIVE:
        value = _get(cfg, dotted)
        if value <= 0:
            raise ConfigError(f"{dotted}={value!r} is not valid; accepted: a positive number")
    for dotted in PROBABILITIES:
        value = _get(cfg, dotted)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{dotted}={value!r} is not valid; accepted: a number in [0, 1)")
    for dotted in NON_NEGATIVE:
        value = _get(cfg, dotted)
        if value < 0:
            raise ConfigError(f"{dotted}={value!r} is not valid; accepted: 0 or a positive number")
    for dotted in POSITIVE_OR_NULL:
        value = _get(cfg, dotted)
        if value is not None and value <= 0:
            raise ConfigError(
                f"{dotted}={value!r} is not valid; accepted: null or a positive integer"
            )
    _validate_ranges(cfg)
    expected = cfg.get("expected")
    if expected is not None and expected.top1 is not None:
        if not 0.0 <= expected.top1 <= 100.0:
            raise ConfigError(
                f"expected.top1={expected.top1!r} is not valid; accepted: a percentage in [0, 100]"
            )
        if expected.weights not in ("raw", "ema"):
            raise ConfigError(
                f"expected.weights={expected.weights!r} is not valid; accepted: raw, ema"
            )
        if expected.tolerance < 0:
            raise ConfigError(
                f"expected.tolerance={expected.tolerance!r} is not valid; "
                "accepted: a non-negative number of percentage points"
            )
    t = cfg.trainer
    if t.max_steps is not None and t.max_steps <= 0:
        raise ConfigError(
            f"trainer.max_steps={t.max_steps!r} is not valid; accepted: a positive integer or null"
        )
    if t.best_by not in (None, "raw", "ema"):
        raise ConfigError(
            f"trainer.best_by={t.best_by!r} is not valid; accepted: null (ema when EMA is on), raw, ema"
        )
    if t.best_by == "ema" and not t.ema_decay:
        raise ConfigError(
            "trainer.best_by='ema' needs an EMA of the weights; set trainer.ema_decay "
            "(e.g. 0.999) or use trainer.best_by=raw"
        )
    if t.progress_every < 0:
        raise ConfigError(
            f"trainer.progress_every={t.progress_every!r} is not valid; accepted: 0 (off) or a "
            "positive number of steps"
        )
    if t.ema_decay is not None and not 0.0 < t.ema_decay < 1.0:
        raise ConfigError(
            f"trainer.ema_decay={t.ema_decay!r} is not valid; accepted: null or a number in (0, 1)"
        )
    for name in ("mixup_alpha", "cutmix_alpha"):
        if t[name] < 0:
            raise ConfigError(
                f"trainer.{name}={t[name]!r} is not valid; accepted: 0 (off) or a positive number"
            )
    base = cfg.optim.get("base_batch_size")
    if base is not None and base <= 0:
        raise ConfigError(
            f"optim.base_batch_size={base!r} is not valid; accepted: null or a positive integer"
        )
    threshold = t.get("bce_target_threshold")
    if threshold is not None and not 0.0 <= threshold < 1.0:
        raise ConfigError(
            f"trainer.bce_target_threshold={threshold!r} is not valid; accepted: null or a "
            "number in [0, 1)"
        )
    if t.grad_clip is not None and t.grad_clip <= 0:
        raise ConfigError(
            f"trainer.grad_clip={t.grad_clip!r} is not valid; accepted: null or a positive number"
        )


def _validate_ranges(cfg: DictConfig) -> None:
    """Checks of one field against a range or another field (train.py only)."""
    d, o, s, m = cfg.data, cfg.optim, cfg.sched, cfg.model
    if not 0.0 < d.val_fraction < 1.0:
        raise ConfigError(
            f"data.val_fraction={d.val_fraction!r} is not valid; accepted: a number in (0, 1)"
        )
    if not 0.0 <= d.max_bad_images <= 1.0:
        raise ConfigError(
            f"data.max_bad_images={d.max_bad_images!r} is not valid; accepted: a fraction in [0, 1]"
        )
    betas = list(o.betas)
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError(
            f"optim.betas={betas!r} is not valid; accepted: two numbers in [0, 1), e.g. [0.9, 0.999]"
        )
    if o.name == "sgd" and o.nesterov and o.momentum == 0:
        raise ConfigError(
            "optim.nesterov=true is not valid with optim.momentum=0; accepted: a momentum in "
            "(0, 1), or optim.nesterov=false"
        )
    for name in ("mean", "std"):
        values = d[name]
        if values is not None and len(values) == 0:
            raise ConfigError(
                f"data.{name}=[] is not valid; accepted: null or one number a channel"
            )
    if s.name != "onecycle" and s.warmup_epochs > 0 and s.warmup_epochs >= cfg.trainer.epochs:
        raise ConfigError(
            f"sched.warmup_epochs={s.warmup_epochs!r} is not valid with trainer.epochs="
            f"{cfg.trainer.epochs}; accepted: fewer warm-up epochs than training epochs"
        )
    if s.name == "onecycle":
        for name, why in (
            ("warmup_epochs", "one-cycle rises over its first sched.pct_start of the steps"),
            ("min_lr", "one-cycle ends at lr / (div_factor * final_div_factor)"),
        ):
            if s[name] != 0:
                raise ConfigError(
                    f"sched.{name}={s[name]!r} is not read by sched=onecycle ({why}); accepted "
                    f"with onecycle: 0, or another schedule"
                )
    # train.py trains a classifier: a backbone's feature maps have no loss to train on
    if m.include_top is False:
        raise ConfigError(
            "model.include_top=false is not valid for train.py (a backbone returns feature maps, "
            "not class scores); accepted: true or null"
        )
    if m.out_indices is not None:
        raise ConfigError(
            f"model.out_indices={list(m.out_indices)!r} is not valid for train.py (it returns "
            "feature maps, not class scores); accepted: null"
        )


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
