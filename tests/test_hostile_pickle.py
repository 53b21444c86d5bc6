"""A weight file that would import and call something is refused as such, through every entry
point, whatever this torch release says about it (read from the pickle's own opcodes)."""

from __future__ import annotations

import os
import pickle
import pickletools

import pytest
import torch

from resnets.checkpoint_io import CheckpointError, load_weights_file
from resnets.pickle_globals import pickle_globals, refused_globals

from .helpers import run_script_inprocess

# torch warns that protocols above 2 may not load; these files are written to be refused
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")


class _System:
    """Unpickling this runs `touch VICTIM`: os.system is pickled as posix.system."""

    def __init__(self, victim) -> None:
        self.victim = victim

    def __reduce__(self):
        return (os.system, (f"touch {self.victim}",))


def _evil(tmp_path, protocol: int = 2, legacy: bool = False):
    victim = tmp_path / "pwned"
    path = tmp_path / f"evil_p{protocol}{'_legacy' if legacy else ''}.pt"
    torch.save(
        {"model": _System(victim)},
        path,
        pickle_protocol=protocol,
        _use_new_zipfile_serialization=not legacy,
    )
    return path, victim


def test_opcodes_name_globals_for_every_protocol() -> None:
    # the reader is checked against pickletools' own disassembly of the same streams
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        data = pickle.dumps([os.path.join, {"k": os.getcwd}], protocol=protocol)
        names = pickle_globals(data)
        assert names == [f"{os.path.join.__module__}.join", "posix.getcwd"], protocol
        ops = {op.name for op, _, _ in pickletools.genops(data)}
        assert ("STACK_GLOBAL" in ops) == (protocol >= 4)


@pytest.mark.parametrize(
    ("protocol", "legacy"), [(2, False), (3, False), (4, False), (5, False), (2, True)]
)
def test_refused_file_names_what_it_would_call(tmp_path, protocol, legacy) -> None:
    path, victim = _evil(tmp_path, protocol, legacy)
    assert refused_globals(path) == ["posix.system"]
    with pytest.raises(CheckpointError) as caught:
        load_weights_file(path)
    message = str(caught.value)
    assert "would import and call posix.system" in message and "truncated" not in message
    assert "\n" not in message and not victim.exists()


def test_plain_weights_name_no_refused_global(tmp_path) -> None:
    for protocol in (2, 5):
        path = tmp_path / f"ok{protocol}.pt"
        torch.save({"w": torch.arange(3.0)}, path, pickle_protocol=protocol)
        assert refused_globals(path) == []
    assert torch.equal(load_weights_file(tmp_path / "ok2.pt")["w"], torch.arange(3.0))


def test_truncated_file_is_still_called_truncated(tmp_path) -> None:
    path = tmp_path / "cut.pt"
    torch.save({"w": torch.zeros(100)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_weights_file(path)


ENTRIES = {
    "evaluate ckpt": ("evaluate", lambda p: [f"ckpt={p}"]),
    "evaluate weights": ("evaluate", lambda p: [f"weights={p}", "model=resnet20", "data=digits"]),
    "train ckpt_path": (
        "train",
        lambda p: [f"ckpt_path={p}", "model=resnet20", "data=digits", "trainer.workers=0"],
    ),
    "train pretrained": (
        "train",
        lambda p: [f"model.pretrained={p}", "model=resnet20", "data=digits", "trainer.workers=0"],
    ),
    "predict ckpt": ("predict", lambda p: [f"ckpt={p}", f"images={p.parent}"]),
    "export ckpt": ("export", lambda p: [f"ckpt={p}"]),
}


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_every_entry_point_refuses_and_names_the_call(tmp_path, capsys, entry) -> None:
    script, args = ENTRIES[entry]
    path, victim = _evil(tmp_path, protocol=5)
    status = run_script_inprocess(script, [*args(path), f"hydra.run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2, err
    assert len(err) == 1 and str(path) in err[0], err
    assert "would import and call posix.system" in err[0]
    assert not victim.exists()
