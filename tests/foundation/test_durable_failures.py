"""The durable-write module and the one failure classification (eusdx.durable, eusdx.failures)."""

from __future__ import annotations

import errno
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eusdx import durable
from eusdx.errors import ConfigError, DataError
from eusdx.failures import (
    DeliveryError, FailureClass, ModelError, TransientIOError, classify, register,
)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=4096))
def test_atomic_write_bytes_round_trips_and_hashes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    d = tmp_path_factory.mktemp("w")
    digest = durable.atomic_write_bytes(d / "f.bin", data)
    assert (d / "f.bin").read_bytes() == data
    assert digest == durable.sha256_file(d / "f.bin") == durable.sha256_bytes(data)
    assert [p.name for p in d.iterdir()] == ["f.bin"]


def test_failed_write_keeps_old_content_and_leaves_no_temporary(tmp_path) -> None:
    target = tmp_path / "x.json"
    durable.atomic_write_json(target, {"a": 1})

    def chunks():
        yield b"partial"
        raise RuntimeError("writer died")

    with pytest.raises(RuntimeError):
        durable.atomic_write_chunks(target, chunks())
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_mode_and_sweep(tmp_path) -> None:
    durable.atomic_write_text(tmp_path / "key", "secret", mode=0o600)
    assert os.stat(tmp_path / "key").st_mode & 0o777 == 0o600
    (tmp_path / f"{durable.TMP_PREFIX}left.123").write_bytes(b"x")
    assert durable.sweep_temporaries(tmp_path) == 1
    assert durable.remove_durably(tmp_path / "key") is True
    assert durable.remove_durably(tmp_path / "key") is False


def test_read_json_object_refuses_non_objects(tmp_path) -> None:
    (tmp_path / "l.json").write_text("[1]")
    with pytest.raises(ValueError):
        durable.read_json_object(tmp_path / "l.json")


@pytest.mark.parametrize(
    ("exc", "cls", "retry"),
    [
        (DataError("no B-mode sector in any frame"), FailureClass.INPUT, False),
        (ModelError("probability is NaN"), FailureClass.MODEL, False),
        (ConfigError("bundle path missing"), FailureClass.CONFIGURATION, False),
        (DeliveryError("PACS refused the SOP class", permanent=True), FailureClass.DELIVERY, False),
        (DeliveryError("connection refused"), FailureClass.DELIVERY, True),
        (TransientIOError("audit database down"), FailureClass.TRANSIENT_IO, True),
        (OSError(errno.ESTALE, "stale"), FailureClass.TRANSIENT_IO, True),
        (OSError(errno.EACCES, "denied"), FailureClass.CONFIGURATION, False),
        (FileNotFoundError(errno.ENOENT, "gone"), FailureClass.INPUT, False),
        (ConnectionResetError(errno.ECONNRESET, "reset"), FailureClass.TRANSIENT_IO, True),
        (KeyError("x"), FailureClass.PROGRAMMING, False),
        (ValueError("1 is an invalid frame number for {dataset.NumberOfFrames}"), FailureClass.PROGRAMMING, False),
    ],
)
def test_classify(exc: BaseException, cls: FailureClass, retry: bool) -> None:
    f = classify(exc)
    assert f.failure_class is cls
    assert f.retryable is retry
    assert f.as_text().startswith(cls.value + ": ")
    assert "{" not in f.reason  # never a library's unformatted template


def test_registered_type_wins() -> None:
    class Down(Exception):
        pass

    register(Down, FailureClass.TRANSIENT_IO, retryable=True)
    assert classify(Down("db down")).failure_class is FailureClass.TRANSIENT_IO
