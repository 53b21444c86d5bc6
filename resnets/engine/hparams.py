"""The hyper-parameters a run reports to TensorBoard: the settings that change its results.

Left out: where things are and how fast they run (paths, workers, progress, logging cadence,
devices, compile), fields of an optimizer or schedule the run does not use, and unset (null)
values, so the hparams table compares runs on what differs between their results.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

# settings that change speed, logging or where files go, never the trained weights' quality
NOT_RESULTS = {
    "trainer": {
        "device", "workers", "progress", "progress_every", "log_every", "save_every",
        "eval_every", "eval_batch_size", "detect_anomaly", "dist_backend", "compile",
        "compile_mode", "channels_last",
    },
    "data": {
        "root", "download", "loader", "split", "pin_memory", "persistent_workers",
        "prefetch_factor", "gpu_decode", "max_bad_images",
    },
}  # fmt: skip
OPTIM_ONLY = {
    "sgd": {"momentum", "nesterov"},
    "adamw": {"betas", "eps"},
    "lamb": {"betas", "eps"},
    "lars": {"momentum", "nesterov", "trust_coeff", "eps"},
}
SCHED_ONLY = {
    "step": {"step_size", "gamma"},
    "multistep": {"milestones", "gamma"},
    "cosine": {"min_lr"},
    "onecycle": {"pct_start", "div_factor", "final_div_factor"},
}
WARMUP = {"warmup_epochs", "warmup_method", "warmup_start_factor"}
# fields that mean something only when another one is set: (group, field, needs)
ONLY_WITH = (("trainer", "ema_every", "ema_decay"), ("model", "pretrained_ema", "pretrained"))


def result_hparams(cfg: DictConfig, world_size: int = 1) -> dict[str, Any]:
    """Flat `group.field -> value` (int, float, str or bool) of what changes the results."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {"seed": tree.get("seed"), "world_size": world_size}
    for group in ("model", "data", "optim", "sched", "trainer"):
        node = dict(tree.get(group) or {})
        for key in NOT_RESULTS.get(group, ()):
            node.pop(key, None)
        if group == "data" and node.get("name") != "fake":
            node.pop("fake_size", None)
        if group == "optim":  # a field shared by two optimizers stays when either is used
            used = OPTIM_ONLY.get(str(node.get("name")), set())
            for key in set().union(*OPTIM_ONLY.values()) - used:
                node.pop(key, None)
        if group == "data" and not (node.get("progressive") or {}).get("min_size"):
            node.pop("progressive", None)  # progressive resizing off
        if group == "trainer" and node.get("loss") != "bce":
            for key in ("bce_target_threshold", "bce_sum_classes"):
                node.pop(key, None)
        if group == "sched":
            used = SCHED_ONLY.get(str(node.get("name")), set())
            for key in set().union(*SCHED_ONLY.values()) - used:
                node.pop(key, None)
            if node.get("name") == "onecycle" or not node.get("warmup_epochs"):
                for key in WARMUP:
                    node.pop(key, None)
        for owner, key, needs in ONLY_WITH:
            if group == owner and node.get(needs) is None:
                node.pop(key, None)
        _flatten(node, f"{group}.", flat)
    return {k: v for k, v in flat.items() if v is not None}


def _flatten(node: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _flatten(value, f"{prefix}{key}.", out)
    elif isinstance(node, (list, tuple)):
        out[prefix[:-1]] = ",".join(str(v) for v in node)
    else:
        out[prefix[:-1]] = node
