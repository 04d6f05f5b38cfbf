"""Payloads sealed at rest (ciro.sealing) and the job store that uses it; the encrypt_at_rest setting."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from ciro import Config, ConfigError
from ciro.sealing import MAGIC, Sealer, is_sealed, job_context, open_blob, store_key_path, store_sealer
from ciro.tensors import canonical_bytes
from ciro_ray.jobstore import JobStore, NewJob

MARK_IN = b"PLAINTEXT-INPUT-MARKER-0123456789"
MARK_OUT = b"PLAINTEXT-OUTPUT-MARKER-9876543210"
EVIDENCE = {"receipt": {"sig": "0x1"}, "quorum": {"votes": [{"outputs": "PLAINTEXT-EVIDENCE-MARKER"}]}}


def _blob(marker: bytes) -> bytes:
    return canonical_bytes({"x": np.frombuffer(marker * 40, dtype=np.uint8)})


def test_round_trip_tamper_and_swapped_context(tmp_path: Path) -> None:
    sealer = Sealer.for_home(tmp_path)
    data = _blob(MARK_IN)
    sealed = sealer.seal(data, job_context("job-a", "inputs"))
    assert sealed.startswith(MAGIC) and is_sealed(sealed) and MARK_IN not in sealed
    assert sealer.seal(data, job_context("job-a", "inputs")) != sealed  # a fresh nonce every time
    assert sealer.open(sealed, job_context("job-a", "inputs")) == data
    assert open_blob(sealed, job_context("job-a", "inputs"), sealer) == data
    for i in (len(MAGIC), len(MAGIC) + 12, len(sealed) // 2, len(sealed) - 1):  # nonce, body, tag
        bad = bytearray(sealed)
        bad[i] ^= 0x01
        with pytest.raises(ConfigError, match="does not open"):
            sealer.open(bytes(bad), job_context("job-a", "inputs"))
    for context in (job_context("job-b", "inputs"), job_context("job-a", "outputs")):
        with pytest.raises(ConfigError, match="does not open"):
            sealer.open(sealed, context)
    with pytest.raises(ConfigError, match="truncated"):
        sealer.open(sealed[:len(MAGIC) + 20], job_context("job-a", "inputs"))
    with pytest.raises(ConfigError, match="does not open"):
        Sealer(os.urandom(32)).open(sealed, job_context("job-a", "inputs"))  # another key
    with pytest.raises(ConfigError, match="encrypt_at_rest is off"):
        open_blob(sealed, job_context("job-a", "inputs"), None)
    assert open_blob(data, job_context("job-a", "inputs"), sealer) == data  # plaintext from before
    assert open_blob(data, job_context("job-a", "inputs"), None) == data


def test_key_file_is_made_once_owner_only_and_checked(tmp_path: Path) -> None:
    path = store_key_path(tmp_path)
    assert not path.exists()
    first = Sealer.for_home(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_bytes()) == 32
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    again = Sealer.for_home(tmp_path)
    sealed = first.seal(b"abc", b"ctx")
    assert again.open(sealed, b"ctx") == b"abc"  # the same key, read back
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Sealer.for_home(tmp_path)
    path.chmod(0o600)
    path.write_bytes(os.urandom(16))
    with pytest.raises(ConfigError, match="16 bytes, not 32"):
        Sealer.for_home(tmp_path)
    with pytest.raises(ConfigError, match="not 31"):
        Sealer(b"k" * 31)


def test_encrypt_at_rest_setting(tmp_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Config.load().encrypt_at_rest is False
    assert store_sealer(Config.load()) is None and not store_key_path(tmp_home).exists()
    for text, value in [("true", True), ("YES", True), ("1", True), ("on", True), ("false", False), ("no", False),
                        ("0", False), ("Off", False)]:
        monkeypatch.setenv("CIRO_ENCRYPT_AT_REST", text)
        assert Config.load().encrypt_at_rest is value, text
    monkeypatch.setenv("CIRO_ENCRYPT_AT_REST", "maybe")
    with pytest.raises(ConfigError, match=r"encrypt_at_rest.*true/false"):
        Config.load()
    with pytest.raises(ConfigError, match="encrypt_at_rest"):
        Config.load(encrypt_at_rest=2)
    monkeypatch.delenv("CIRO_ENCRYPT_AT_REST")
    tmp_home.mkdir(parents=True)
    (tmp_home / "config.toml").write_text("encrypt_at_rest = true\n")
    cfg = Config.load()
    assert cfg.encrypt_at_rest is True
    assert Config.load(**{k[5:].lower(): v for k, v in cfg.as_env().items()}).encrypt_at_rest is True
    assert isinstance(store_sealer(cfg), Sealer) and store_key_path(tmp_home).exists()


def _job(job_id: str, inputs: bytes) -> NewJob:
    return NewJob(job_id, "0xmodel", "receipt", {}, "0xcommit-" + job_id, inputs)


def _finish(store: JobStore, job_id: str, outputs: bytes) -> None:
    attempt = store.mark_running([job_id], "w0")[job_id]
    assert store.complete([(job_id, attempt, "0xout-" + job_id, outputs, "w0", json.dumps(EVIDENCE))]) == {job_id}


def _db_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


@pytest.mark.parametrize("sealed", [True, False])
def test_job_store_file_holds_no_plaintext_when_sealed(tmp_path: Path, sealed: bool) -> None:
    path = tmp_path / "jobs.db"
    store = JobStore(path, sealer=Sealer.for_home(tmp_path) if sealed else None)
    inputs, outputs = _blob(MARK_IN), _blob(MARK_OUT)
    store.insert([_job("j1", inputs)])
    _finish(store, "j1", outputs)
    store.insert([_job("j2", inputs)])
    attempt = store.mark_running(["j2"], "w0")["j2"]
    assert store.mark_proving("j2", attempt, "0xout-j2", outputs, "w0", json.dumps(EVIDENCE))
    for job_id in ("j1", "j2"):
        row = store.get(job_id, with_inputs=True)
        assert row is not None and (row.inputs, row.outputs, row.evidence) == (inputs, outputs, EVIDENCE)
        assert row.input_commitment == "0xcommit-" + job_id and row.output_commitment == "0xout-" + job_id
    assert [r.outputs for r in store.recent()] == [outputs, outputs]
    raw = _db_bytes(path)
    store.close()
    raw += _db_bytes(path)
    # the control run (not sealed) shows the search would find the plaintext
    assert (MARK_IN in raw, MARK_OUT in raw, b"EVIDENCE-MARKER" in raw) == (not sealed,) * 3


def test_job_store_reads_old_plaintext_rows_and_refuses_moved_or_unkeyed_blobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    plain = JobStore(path)
    plain.insert([_job("old", _blob(b"old"))])
    _finish(plain, "old", _blob(b"old-out"))
    plain.close()
    store = JobStore(path, sealer=Sealer.for_home(tmp_path))  # turned on later: old jobs still read
    old = store.get("old", with_inputs=True)
    assert old is not None and (old.inputs, old.outputs, old.evidence) == (_blob(b"old"), _blob(b"old-out"), EVIDENCE)
    store.insert([_job("a", _blob(b"aaaa")), _job("b", _blob(b"bbbb"))])
    _finish(store, "a", _blob(b"a-out"))
    store.close()

    off = JobStore(path)  # sealed rows with encrypt_at_rest off: a clear error, not garbage
    with pytest.raises(ConfigError, match="encrypt_at_rest is off"):
        off.get("a", with_inputs=True)
    assert off.get("old", with_inputs=True) is not None
    off._db.execute("UPDATE job_inputs SET inputs=(SELECT inputs FROM job_inputs WHERE id='a') WHERE id='b'")
    off._db.execute("UPDATE jobs SET outputs=(SELECT inputs FROM job_inputs WHERE id='a') WHERE id='old'")
    off.close()

    store = JobStore(path, sealer=Sealer.for_home(tmp_path))
    a = store.get("a", with_inputs=True)
    assert a is not None and (a.inputs, a.outputs, a.evidence) == (_blob(b"aaaa"), _blob(b"a-out"), EVIDENCE)
    with pytest.raises(ConfigError, match="ciro-job:b:inputs"):  # a's sealed input moved into b's row
        store.get("b", with_inputs=True)
    with pytest.raises(ConfigError, match="ciro-job:old:outputs"):  # an input blob moved into an output column
        store.get("old")
    store.close()

    with pytest.raises(ConfigError, match="does not open"):  # another key
        JobStore(path, sealer=Sealer(os.urandom(32))).get("a", with_inputs=True)


def test_job_store_for_config(tmp_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIRO_ENCRYPT_AT_REST", "true")
    store = JobStore.for_config(Config.load())
    assert store.path == tmp_home / "jobs.db" and store.sealer is not None
    store.close()
    store_key_path(tmp_home).write_bytes(b"short")
    with pytest.raises(ConfigError, match="not a Ciro store key"):
        JobStore.for_config(Config.load())
