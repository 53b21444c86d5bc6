"""A later attempt in a run directory (a resume, or a failed one) never overwrites the record of
the run: .hydra/ stays the first run's, later attempts go to .hydra/attempts/<time>/."""

from __future__ import annotations

import pickle

import pytest
import yaml

from resnets.run_record import RecordResolver, record_dir

from .helpers import TINY, run_train_cli


def test_record_dir_is_hydra_first_then_a_fresh_attempt_folder(tmp_path) -> None:
    assert record_dir(str(tmp_path)) == ".hydra"
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- a=1\n")
    first = record_dir(str(tmp_path))
    assert first.startswith(".hydra/attempts/")
    (tmp_path / first).mkdir(parents=True)
    second = record_dir(str(tmp_path))
    assert second.startswith(".hydra/attempts/") and second != first


def test_the_callback_pickles_for_launchers_in_other_processes() -> None:
    assert isinstance(pickle.loads(pickle.dumps(RecordResolver())), RecordResolver)


@pytest.mark.slow
def test_failed_resume_keeps_the_runs_overrides(tmp_path) -> None:
    base = [*TINY, "data=fake", "data.fake_size=64", f"hydra.run.dir={tmp_path}"]
    first = run_train_cli([*base, "trainer.max_steps=1"], timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    failed = run_train_cli([*base, "model.depth=14", "trainer.max_steps=2"], timeout=300)
    assert failed.returncode == 2 and "model.depth: checkpoint 8, this run 14" in failed.stderr
    record = yaml.safe_load((tmp_path / ".hydra" / "overrides.yaml").read_text())
    assert "trainer.max_steps=1" in record and "model.depth=14" not in record
    (attempt,) = (tmp_path / ".hydra" / "attempts").iterdir()
    assert "model.depth=14" in yaml.safe_load((attempt / "overrides.yaml").read_text())


def test_record_files_find_first_and_later_attempts(tmp_path) -> None:
    from resnets.run_record import record_files

    for rel in ("0/.hydra", "1/.hydra", "1/.hydra/attempts/2026-11-25_10-00-00", "x/other"):
        (tmp_path / rel).mkdir(parents=True, exist_ok=True)
        (tmp_path / rel / "overrides.yaml").write_text("[]\n")
    runs = record_files(tmp_path)
    assert sorted(runs) == [tmp_path / "0", tmp_path / "1"]
    assert len(runs[tmp_path / "1"]) == 2
