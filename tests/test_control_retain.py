"""The retain file: whole-or-nothing loading, foreign and corrupted files, blocks whose type changed."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edged.control.retain import RetainError, RetainStore, decode, encode, retain_path


def store(tmp_path: Path, names=("parts", "latch"), types=("CTU", "SR")) -> RetainStore:
    return RetainStore(tmp_path, "fast", list(names), list(types))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    s = store(tmp_path)
    assert s.load() == [None, None]                      # no file yet: cold
    assert s.save([(42.0, 1.0, 0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 0.0)])
    assert s.load() == [([42.0, 1.0, 0.0, 0.0], 0.0), ([1.0, 0.0, 0.0, 0.0], 0.0)]
    assert not list(tmp_path.glob("retain/*.tmp"))


def test_unchanged_state_is_not_written_again(tmp_path: Path) -> None:
    s = store(tmp_path)
    rows = [(1.0, 0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0, 0.0)]
    s.save(rows)
    s.save(list(rows))
    assert s.saves == 1
    s.save([(2.0, 0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0, 0.0)])
    assert s.saves == 2


@pytest.mark.parametrize("mutate,reason", [
    (lambda d: b"\x00garbage", "unreadable JSON"),
    (lambda d: d.replace(b'"format": "edged-retain"', b'"format": "other"'), "not a retain file"),
    (lambda d: d.replace(b"42.0", b"43.0"), "checksum mismatch"),
    (lambda d: d[: len(d) // 2], "unreadable JSON"),                  # a torn write
])
def test_corrupted_files_are_rejected_whole(tmp_path: Path, mutate, reason: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    s = store(tmp_path)
    s.save([(42.0, 1.0, 0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 0.0)])
    path = retain_path(tmp_path, "fast")
    path.write_bytes(mutate(path.read_bytes()))
    with caplog.at_level(logging.ERROR):
        assert store(tmp_path).load() == [None, None]   # never half-loaded
    assert reason in caplog.text and "starts cold" in caplog.text
    assert not path.exists() and path.with_name("fast.json.bad").exists()


def test_a_file_of_another_task_is_foreign(tmp_path: Path) -> None:
    data = encode("slow", ["parts"], ["CTU"], [(5.0, 0.0, 0.0, 0.0, 0.0)])
    with pytest.raises(RetainError, match="written for task 'slow', not 'fast'"):
        decode(data, "fast")


def test_a_malformed_record_rejects_the_whole_file(tmp_path: Path) -> None:
    good = json.loads(encode("fast", ["parts", "latch"], ["CTU", "SR"],
                             [(5.0, 0.0, 0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 0.0)]))
    good["body"]["blocks"]["latch"]["s"] = [1.0, "x", 0.0, 0.0]
    import hashlib
    good["sha256"] = hashlib.sha256(json.dumps(good["body"], sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    with pytest.raises(RetainError, match="block 'latch': expected 4 numbers"):
        decode(json.dumps(good).encode(), "fast")


def test_a_block_whose_type_changed_starts_cold_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store(tmp_path).save([(7.0, 0.0, 0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 0.0)])
    with caplog.at_level(logging.INFO):
        loaded = store(tmp_path, types=("CTD", "SR")).load()
    assert loaded == [None, ([1.0, 0.0, 0.0, 0.0], 0.0)]
    assert "retained state of block parts is of a CTU, the block is now a CTD" in caplog.text
