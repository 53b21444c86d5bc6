"""Resuming a run, possibly with other settings: what the checkpoint's position means now.

A checkpoint keeps its place as (epoch, samples_in_epoch, step) and the settings that cut its
epochs into steps. A run that resumes with the same settings continues the same schedule; one
with another batch size, accumulation, world size, drop_last or number of epochs continues from
the same sample and lays the schedule out again, for its new total, from the current step.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..data.plan import EpochPlan
from .checkpoint import CheckpointError

# what cuts an epoch into optimizer steps, and how each is called on the command line
SETTINGS = {
    "train_size": "training images",
    "batch_size": "trainer.batch_size",
    "accumulate": "trainer.accumulate_grad_batches",
    "world_size": "processes (world size)",
    "drop_last": "data.drop_last",
    "epochs": "trainer.epochs",
    "seed": "seed",
    "repeated_aug": "data.repeated_aug",
}


def steps_per_epoch(settings: Mapping[str, Any], start: int = 0) -> int:
    plan = EpochPlan(
        settings["train_size"],
        batch_size=settings["batch_size"],
        accumulate=settings["accumulate"],
        world_size=settings["world_size"],
        drop_last=settings["drop_last"],
    )
    return plan.steps(start)


def fresh_layout(settings: Mapping[str, Any]) -> dict[str, float]:
    """A new run's schedule: `epochs` epochs of the steps the loop will take."""
    spe = steps_per_epoch(settings)
    return {"steps_per_epoch": spe, "total_steps": spe * settings["epochs"], "origin": 0.0}


def relaid_layout(
    settings: Mapping[str, Any], *, epoch: int, samples_in_epoch: int, step: int
) -> dict[str, float]:
    """The schedule of a run continuing at (epoch, samples_in_epoch, step) with `settings`: its
    total is the steps already taken plus the steps the loop will now take; epoch-valued
    settings (warm-up, milestones) map to steps through the new steps per epoch, anchored so
    that the current position falls on the current step."""
    spe = steps_per_epoch(settings)
    remaining = 0
    if epoch < settings["epochs"]:
        remaining = steps_per_epoch(settings, samples_in_epoch)
        remaining += (settings["epochs"] - epoch - 1) * spe
    progress = epoch + samples_in_epoch / settings["train_size"]
    return {
        "steps_per_epoch": spe,
        "total_steps": step + remaining,
        "origin": step - progress * spe,
    }


def check_resumable(
    path: Path, old: Mapping[str, Any], new: Mapping[str, Any], samples_in_epoch: int
) -> None:
    """Refuse, before anything is touched, what a resume cannot honour."""
    if old.get("train_size") not in (None, new["train_size"]):
        raise CheckpointError(
            path,
            f"was trained on {old['train_size']} training images and the data now has "
            f"{new['train_size']}: a resume continues a run on the same data. Start a new run "
            "directory to train on other data",
        )
    if samples_in_epoch and old.get("seed") not in (None, new["seed"]):
        raise CheckpointError(
            path,
            f"stopped inside an epoch drawn with seed={old['seed']}; with seed={new['seed']} "
            f"the rest of it would repeat or skip samples. Resume with seed={old['seed']} "
            "(a new seed is accepted from an epoch boundary)",
        )
    if samples_in_epoch and "repeated_aug" in old:
        # the repeated-augmentation order depends on the copies and deals them across ranks
        copies = old["repeated_aug"]
        if copies != new["repeated_aug"] or (
            copies >= 2 and old["world_size"] != new["world_size"]
        ):
            raise CheckpointError(
                path,
                f"stopped inside an epoch drawn with data.repeated_aug={copies} on "
                f"{old['world_size']} process(es); with data.repeated_aug={new['repeated_aug']} "
                f"on {new['world_size']} the rest of it would repeat or skip samples. Resume "
                f"with data.repeated_aug={copies} on {old['world_size']} process(es) "
                "(a change is accepted from an epoch boundary)",
            )


def setting_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return [
        f"{label} {old[key]} -> {new[key]}"
        for key, label in SETTINGS.items()
        if key in old and old[key] != new[key]
    ]


def config_changes(old_yaml: str, new: Any, sections: tuple[str, ...]) -> list[str]:
    """`section.field old -> new` for every field of `sections` that differs."""
    old = OmegaConf.to_container(OmegaConf.create(old_yaml), resolve=True)
    new = OmegaConf.to_container(new, resolve=True)
    out = []
    for section in sections:
        before, after = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                out.append(f"{section}.{key} {before.get(key)} -> {after.get(key)}")
    return out


def upgrade_format_1(state: dict[str, Any], world_size: int) -> dict[str, Any]:
    """Format 1 kept the place in an epoch as batches of the old batch size; format 2 keeps
    samples. Format 1 did not record the world size: the current one is assumed."""
    old_cfg = OmegaConf.create(state["config"])
    batch = int(OmegaConf.select(old_cfg, "trainer.batch_size", default=0) or 0)
    state = dict(state)
    state["samples_in_epoch"] = int(state.get("batch_in_epoch", 0)) * batch * world_size
    state["rank_rng"] = None  # format 1 saved rank 0's generators only
    state["settings"] = None
    return state
