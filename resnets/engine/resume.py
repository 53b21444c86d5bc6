"""Resuming a run, possibly with other settings: what the checkpoint's position means now.

A checkpoint keeps its place as (epoch, samples_in_epoch, step) and the settings that cut its
epochs into steps. A run that resumes with the same settings continues the same schedule; one
with another batch size, accumulation, world size, drop_last or number of epochs continues from
the same sample, and its learning rate from the training progress reached (resnets.progress):
the schedule follows images, not step counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..data.plan import EpochPlan
from ..optim import layout_for
from ..progress import plan_of, stored, stretch_of, timeline_of
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
    return plan_of(settings).steps(start)


def fresh_layout(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A new run's schedule: progress from epoch 0 in this run's steps, its curve over
    `epochs` epochs of them (resnets.optim.layout_for)."""
    return layout_for(plan_of(settings), int(settings["epochs"]))


def resumed_layout(
    state: Mapping[str, Any], settings: Mapping[str, Any], *, epoch: int, samples: int, step: int
) -> tuple[dict[str, Any], list[str]]:
    """The schedule of a run continuing from checkpoint `state` at (epoch, samples, step) with
    `settings`, and what to log about it. With the checkpoint's settings it is the stored
    layout; with others, the rate continues from the progress the run had reached (progress
    is images, not steps), and a changed number of epochs spreads what is left of the curve
    over what is left of the run."""
    old = state.get("schedule") or {}
    old_settings = state.get("settings") or {}
    changes = setting_changes(old_settings, settings) if old_settings else []
    if old.get("version") == 2 and old_settings and not changes:
        return dict(old), []  # the same run: the same schedule
    progress, curve, notes = _reached(state, old, old_settings, epoch, samples, step)
    if curve["to"] != settings["epochs"]:
        reached = stretch_of({"curve": curve})(progress)
        notes.append(
            f"trainer.epochs {curve['to']} -> {settings['epochs']} at epoch {float(progress):.4g}: "
            f"the rest of the schedule (its epochs {float(reached):.4g} to {curve['epochs']}) "
            f"is spread over epochs {float(progress):.4g} to {settings['epochs']}"
        )
        if reached >= curve["epochs"]:
            notes[-1] += "; the schedule had ended there, so the rate stays at its final value"
        curve = {**curve, "to": settings["epochs"], "from": stored(progress)}
        curve["curve_from"] = stored(reached)
    layout = fresh_layout(settings)
    layout["anchor"] = {
        "step": step,
        "epoch": epoch,
        "samples": samples,
        "progress": stored(progress),
    }
    layout["curve"] = curve
    layout["total_steps"] = step + _remaining(settings, epoch, samples)
    why = f"with other settings ({', '.join(changes)})" if changes else "from an older checkpoint"
    notes.insert(
        0,
        f"resuming {why}: continuing epoch {epoch + 1} from sample {samples} of {settings['train_size']} at "
        f"step {step}; the learning rate continues from epoch {float(progress):.4g} of progress "
        f"({layout['steps_per_epoch']} steps per epoch now, {layout['total_steps']} in all)",
    )
    return layout, notes


def _remaining(settings: Mapping[str, Any], epoch: int, samples: int) -> int:
    """The steps the loop takes from (epoch, samples) to the end of the last epoch."""
    if epoch >= settings["epochs"]:
        return 0
    return steps_per_epoch(settings, samples) + (settings["epochs"] - epoch - 1) * steps_per_epoch(
        settings
    )


def _reached(
    state: Mapping[str, Any],
    old: Mapping[str, Any],
    old_settings: Mapping[str, Any],
    epoch: int,
    samples: int,
    step: int,
) -> tuple[Fraction, dict[str, Any], list[str]]:
    """The progress the checkpoint's run had reached at `step`, and its curve. A checkpoint
    written before schedules followed progress (no layout version 2) is read as the curve of a
    fresh run with its settings, at its place in its epoch."""
    if old.get("version") == 2:
        return timeline_of(old).at(step), dict(old["curve"]), []
    cfg = OmegaConf.create(state.get("config") or "{}")
    epochs = int(old_settings.get("epochs") or OmegaConf.select(cfg, "trainer.epochs", default=1))
    if old_settings:
        plan = plan_of(old_settings)
        per_epoch, span = plan.steps(), plan.steps() * plan.batch_size * plan.parts
    else:  # format 1: no settings recorded
        per_epoch = int(old.get("steps_per_epoch") or 1)
        span = 0
    progress = epoch + (Fraction(samples, span) if span else Fraction(0))
    curve = layout_for(EpochPlan(per_epoch, batch_size=1), epochs)["curve"]
    notes = []
    if old.get("origin"):
        notes.append(
            "the checkpoint's schedule had been laid out again in steps by an earlier resume: "
            "the rate now follows the curve of its first settings at the progress reached"
        )
    return min(progress, Fraction(epoch + 1)), curve, notes


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
