"""The hyper-parameters a run reports to TensorBoard: the settings that change its results.

Left out: where things are and how fast they run (paths, workers, progress, logging cadence,
devices, compile), fields of an optimizer or schedule the run does not use (each entry of
resnets.optim's OPTIMIZERS and SCHEDULERS declares the fields it reads), and unset (null)
values, so the hparams table compares runs on what differs between their results.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..optim import OPTIMIZERS, SCHEDULERS, WARMUP_FIELDS

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
        if group == "optim":
            _keep_fields_of(node, OPTIMIZERS)
        if group == "data" and not (node.get("progressive") or {}).get("min_size"):
            node.pop("progressive", None)  # progressive resizing off
        if group == "trainer" and node.get("loss") != "bce":
            for key in ("bce_target_threshold", "bce_sum_classes"):
                node.pop(key, None)
        if group == "sched":
            schedule = SCHEDULERS.get(str(node.get("name")))
            warms_up = schedule is not None and schedule.warms_up
            _keep_fields_of(
                node,
                SCHEDULERS,
                WARMUP_FIELDS,
                WARMUP_FIELDS if warms_up and node.get("warmup_epochs") else (),
            )
        for owner, key, needs in ONLY_WITH:
            if group == owner and node.get(needs) is None:
                node.pop(key, None)
        _flatten(node, f"{group}.", flat)
    return {k: v for k, v in flat.items() if v is not None}


def _keep_fields_of(
    node: dict[str, Any],
    table: dict[str, Any],
    shared: tuple[str, ...] = (),
    shared_used: tuple[str, ...] = (),
) -> None:
    """Drop the fields that some entry of `table` (resnets.optim's OPTIMIZERS or SCHEDULERS)
    declares in its `reads` and the chosen entry does not read; a field read by two entries
    stays when either is chosen. `shared` fields (the warm-up's) stay only if in `shared_used`."""
    entry = table.get(str(node.get("name")))
    used = {*(entry.reads if entry is not None else ()), *shared_used}
    declared = {key for e in table.values() for key in e.reads} | set(shared)
    for key in declared - used:
        node.pop(key, None)


def _flatten(node: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _flatten(value, f"{prefix}{key}.", out)
    elif isinstance(node, (list, tuple)):
        out[prefix[:-1]] = ",".join(str(v) for v in node)
    else:
        out[prefix[:-1]] = node
