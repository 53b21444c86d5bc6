"""What a pickle would import and call, read from its opcodes without running it.

torch's refusal message changes between releases ("Unsupported global: GLOBAL x", "Trying to load
unsupported GLOBAL x whose module y is blocked", a FRAME opcode error for protocol 4/5), so the
reason a weight file was refused is found here from the file itself, not from torch's wording.
A leaf module: the standard library only (torch's allow-list is read inside `_allowed`, on a refusal only).
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path

_STRING_OPS = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "SHORT_BINSTRING",
    "BINSTRING",
    "STRING",
}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
# what torch's weights_only unpickler admits when its own list cannot be read
_FALLBACK_ALLOWED_PREFIXES = ("torch.", "collections.OrderedDict", "_codecs.encode")


def pickle_globals(data: bytes) -> list[str]:
    """Every `module.name` the pickle stream(s) in `data` import, in order, without repeats.

    GLOBAL carries "module name" as its argument; STACK_GLOBAL (protocol 4/5) takes the two strings
    pushed before it, possibly through the memo, so strings and memo entries are tracked.
    """
    found: list[str] = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data):  # a legacy torch file is several pickles back to back
        strings: list[object] = []
        memo: dict[int, object] = {}
        try:
            for op, arg, _ in pickletools.genops(stream):
                if op.name in _STRING_OPS:
                    strings.append(arg.decode("latin1") if isinstance(arg, bytes) else arg)
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = strings[-1] if strings else None
                elif op.name in _PUT_OPS:
                    memo[arg] = strings[-1] if strings else None
                elif op.name in _GET_OPS:
                    strings.append(memo.get(arg))
                elif op.name == "GLOBAL" or op.name == "INST":
                    found.append(".".join(str(arg).split(" ", 1)))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                else:
                    strings.append(None)  # anything else pushed breaks a string pair
        except Exception:  # a damaged stream: report what was read before the damage
            break
    return list(dict.fromkeys(found))


def torch_file_globals(path: str | Path) -> list[str]:
    """The globals of a torch.save file: data.pkl inside the zip, or the legacy bare pickles."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                return pickle_globals(archive.read(names[0])) if names else []
        return pickle_globals(path.read_bytes())
    except (OSError, zipfile.BadZipFile, KeyError):
        return []


def _allowed() -> set[str] | None:
    """torch's default allow-list plus `torch.serialization.add_safe_globals`; None if unreadable."""
    try:
        from torch import _weights_only_unpickler as unpickler

        allowed = set(unpickler._get_allowed_globals())
        allowed |= set(unpickler._get_user_allowed_globals())
        return allowed
    except Exception:  # a release without these private helpers: fall back to prefixes
        return None


def refused_globals(path: str | Path) -> list[str]:
    """The globals of a weight file that `torch.load(weights_only=True)` does not admit."""
    allowed = _allowed()
    refused = []
    for name in torch_file_globals(path):
        if allowed is not None and name in allowed:
            continue
        if allowed is None and name.startswith(_FALLBACK_ALLOWED_PREFIXES):
            continue
        refused.append(name)
    return refused
