"""What inference needs to know about a run's data, stored in every checkpoint the trainer writes.

predict.py and export.py rebuild a network and prepare an image from these facts alone, so they
work with the training data moved away. The preprocessing is exactly validation's:

- `resize`, `crop`: the shorter side of the (uint8) image resized to `resize` (bilinear,
  antialiased), then a centre crop of `crop` (the identity on an in-memory dataset's own images,
  which are stored at `crop` px);
- `mean`, `std`: `normalize.Normalize`;
- `upsample`: null, or the side an in-memory dataset stored at another size is brought to after
  normalisation (`normalize.upsample`: bilinear, not antialiased, as its loaders do);
- `input_size`: the side the network sees (`upsample` or `crop`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


class _Bundle(Protocol):  # resnets.data.DataBundle, without importing the factory here
    num_classes: int
    in_chans: int
    image_size: int
    class_names: list[str]

    def eval_preprocessing(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class InferenceFacts:
    class_names: list[str]
    num_classes: int
    in_chans: int
    image_size: int  # data.image_size (the network's stem choice reads it)
    preprocessing: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, numbers and strings: loadable with torch.load(weights_only=True)."""
        return asdict(self)


def inference_facts(bundle: _Bundle) -> InferenceFacts:
    return InferenceFacts(
        class_names=[str(c) for c in bundle.class_names],
        num_classes=int(bundle.num_classes),
        in_chans=int(bundle.in_chans),
        image_size=int(bundle.image_size),
        preprocessing=bundle.eval_preprocessing(),
    )


def stored_facts(state: dict[str, Any] | None) -> InferenceFacts | None:
    """A checkpoint's facts; None for checkpoints written before they were stored."""
    facts = (state or {}).get("inference")
    if not isinstance(facts, dict):
        return None
    return InferenceFacts(
        class_names=list(facts["class_names"]),
        num_classes=int(facts["num_classes"]),
        in_chans=int(facts["in_chans"]),
        image_size=int(facts["image_size"]),
        preprocessing=dict(facts["preprocessing"]),
    )
