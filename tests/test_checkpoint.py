"""Checkpoint files: fsynced, renamed into place and readable per the umask; a full disk keeps the previous
one; a damaged one is set aside and the run starts again; a killed save leaves no temporary file behind."""

import os

import pytest

from spfl.simulator import checkpoint as checkpoints

# --- writing: atomic, durable, readable per the umask; damaged files set aside -------------------

TINY = dict(num_devices=4, batch_size=8, rounds=4, eval_every=2, method="ideal", checkpoint_every=1)


@pytest.fixture(scope="module")
def tiny_run():
    """A tiny spec's environment and its checkpoint-able state after two rounds."""
    from spfl.configuration.settings import make_spec
    from spfl.simulator.simulation import Simulation, build_environment

    spec = make_spec(**TINY)
    env = build_environment(spec)
    state = Simulation(env, "ideal").train()
    return spec, env, state


def written_files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_checkpoint_is_fsynced_renamed_and_readable_per_the_umask(tmp_path, tiny_run, monkeypatch):
    import stat


    spec, _, state = tiny_run
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    old_mask = os.umask(0o027)
    try:
        checkpoints.save(tmp_path / "checkpoint.pt", spec.run_hash, state.to_checkpoint())
    finally:
        os.umask(old_mask)
    assert synced == ["file", "folder"], "the file, then the folder holding its new name, are fsynced"
    assert written_files(tmp_path) == ["checkpoint.pt"], "no temporary file is left"
    assert stat.S_IMODE((tmp_path / "checkpoint.pt").stat().st_mode) == 0o640


class FullDisk:
    """torch.save's handle on a disk that fills up after ``room`` bytes (as ENOSPC does)."""

    def __init__(self, handle, room):
        self.handle, self.room = handle, room

    def write(self, data):
        self.room -= len(data)
        if self.room < 0:
            raise OSError(28, "No space left on device")
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)


def test_full_disk_keeps_the_previous_checkpoint_and_leaves_no_torn_file(tmp_path, tiny_run, monkeypatch):
    import torch

    from spfl.records import WriteError

    spec, _, state = tiny_run
    path = tmp_path / "checkpoint.pt"
    checkpoints.save(path, spec.run_hash, state.to_checkpoint())
    before = path.read_bytes()
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, handle: real_save(obj, FullDisk(handle, room=2000)))
    with pytest.raises(WriteError) as error:
        checkpoints.save(path, spec.run_hash, state.to_checkpoint())
    message = str(error.value)
    assert message == f"cannot write '{path}': No space left on device; free some space and run again"
    assert path.read_bytes() == before and written_files(tmp_path) == ["checkpoint.pt"]


def damaged_bytes(good: bytes) -> dict[str, bytes]:
    return {"garbage": b"\x80\x02garbage that is no pickle", "truncated": good[: len(good) // 2], "empty": b""}


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "wrong content"])
def test_damaged_checkpoint_is_named_set_aside_and_the_run_starts_again(tmp_path, tiny_run, damage, caplog):
    import torch

    from spfl.simulator.simulation import Simulation

    spec, env, state = tiny_run
    path = tmp_path / "checkpoint.pt"
    checkpoints.save(path, spec.run_hash, state.to_checkpoint())
    if damage == "wrong content":  # readable, the right identity, but not a state this code can restore
        payload = torch.load(path, weights_only=False)
        payload["state"] = {"round": 2}
        torch.save(payload, path)
    else:
        path.write_bytes(damaged_bytes(path.read_bytes())[damage])
    damaged = path.read_bytes()
    with caplog.at_level("INFO", logger="spfl"):
        resumed = Simulation(env, "ideal").train(path)
    assert resumed.metric_rows == Simulation(env, "ideal").train().metric_rows, "the run starts from round 0"
    aside = tmp_path / "checkpoint.pt.damaged"
    assert aside.read_bytes() == damaged
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warning) == 1 and f"checkpoint {path} is damaged" in warning[0], warning
    assert "set aside as checkpoint.pt.damaged; starting again from round 0" in warning[0]
    # the run went on to checkpoint again, from scratch: a good file is back under the old name
    assert path.exists() and path.read_bytes() != damaged


def test_resume_removes_the_temporary_file_of_a_killed_save(tmp_path, tiny_run):
    from spfl.simulator.simulation import Simulation

    _, env, _ = tiny_run
    torn = tmp_path / ".checkpoint.pt.1234.tmp"
    torn.write_bytes(b"half a checkpoint")
    Simulation(env, "ideal").train(tmp_path / "checkpoint.pt")
    assert not torn.exists()
