"""Training progress in epochs (epoch + fraction of its images), step by step, and the curve a
schedule is drawn on: what makes a learning-rate schedule follow images rather than step counts.

Progress is exact (fractions): an uninterrupted run's step j of epoch e sits at e + j / steps
per epoch, so its curve positions are whole numbers and its rates are bit for bit those of the
step-count schedules they replace. The fraction of an epoch is the images its steps have taken
over the images its steps take at full size (steps x global batch); a run resumed with other
settings starts from the progress its checkpoint recorded, and the rest of that epoch runs on to
the next epoch's start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from .data.plan import EpochPlan


def exact(value: Any) -> Fraction:
    """A fraction from its stored form: [numerator, denominator], an int or a float."""
    if isinstance(value, (list, tuple)):
        return Fraction(int(value[0]), int(value[1]))
    return Fraction(value)


def stored(value: Fraction) -> list[int]:
    """A fraction as a checkpoint keeps it (plain ints: loads with weights_only=True)."""
    return [value.numerator, value.denominator]


@dataclass(frozen=True)
class Timeline:
    """Optimizer step -> progress in epochs, for steps cut by `plan`, from an anchor: step
    `step` at (`epoch`, `samples` images into it) is at progress `progress`."""

    plan: EpochPlan
    step: int = 0
    epoch: int = 0
    samples: int = 0
    progress: Fraction = field(default_factory=Fraction)

    @property
    def per_step(self) -> int:
        return self.plan.batch_size * self.plan.parts

    def at(self, k: int) -> Fraction:
        """Progress at the start of optimizer step `k`; the anchor's for steps before it (a
        scheduler is built at step 0 and then put at the anchor)."""
        steps = self.plan.steps()
        left = self.plan.steps(self.samples)  # steps left in the anchor's epoch
        i = max(k - self.step, 0)
        if steps == 0:  # an epoch too small for one step: no progress to make
            return self.progress
        if i < left:  # the rest of the anchor's epoch runs from its progress to the epoch's end
            rest = steps * self.per_step - self.samples
            share = Fraction(i * self.per_step, rest)
            return self.progress + share * (self.epoch + 1 - self.progress)
        epochs, j = divmod(i - left, steps)
        return self.epoch + 1 + epochs + Fraction(j, steps)

    def position(self, k: int) -> tuple[int, int]:
        """(epoch, images into it) at the start of step `k`: what the loader will hand it."""
        left = self.plan.steps(self.samples)
        i = max(k - self.step, 0)
        if i < left:
            return self.epoch, self.samples + i * self.per_step
        epochs, j = divmod(i - left, self.plan.steps())
        return self.epoch + 1 + epochs, j * self.per_step


@dataclass(frozen=True)
class Stretch:
    """Progress -> position on the schedule's curve, in epochs of the curve. The curve spans
    `curve_epochs`; from progress `start` (curve position `curve_start`) on, what is left of
    it is spread over the training that is left, up to `epochs`. Identity for a run that never
    changed its number of epochs."""

    curve_epochs: int
    epochs: int
    start: Fraction = field(default_factory=Fraction)
    curve_start: Fraction = field(default_factory=Fraction)

    def __call__(self, progress: Fraction) -> Fraction:
        if self.epochs == self.curve_epochs and self.start == self.curve_start:
            return progress
        if self.epochs <= self.start:  # nothing left to train: nothing to spread
            return self.curve_start + progress - self.start
        ratio = Fraction(self.curve_epochs - self.curve_start) / (self.epochs - self.start)
        return self.curve_start + (progress - self.start) * ratio


def plan_of(settings: Mapping[str, Any]) -> EpochPlan:
    """How `settings` (resnets.engine.resume.SETTINGS' keys) cut an epoch into steps."""
    return EpochPlan(
        settings["train_size"],
        batch_size=settings["batch_size"],
        accumulate=settings["accumulate"],
        world_size=settings["world_size"],
        drop_last=settings["drop_last"],
    )


def timeline_of(layout: Mapping[str, Any]) -> Timeline:
    anchor = layout["anchor"]
    return Timeline(
        EpochPlan(**layout["plan"]),
        step=int(anchor["step"]),
        epoch=int(anchor["epoch"]),
        samples=int(anchor["samples"]),
        progress=exact(anchor["progress"]),
    )


def stretch_of(layout: Mapping[str, Any]) -> Stretch:
    curve = layout["curve"]
    return Stretch(
        curve_epochs=int(curve["epochs"]),
        epochs=int(curve["to"]),
        start=exact(curve["from"]),
        curve_start=exact(curve["curve_from"]),
    )
