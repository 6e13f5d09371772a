"""A 0-byte ``jobs.sqlite3`` (a full disk, a failed copy) is refused, not silently taken as a new store
(issue 22 item 7): its history and queued jobs would be gone without a word."""

from __future__ import annotations

import pytest

from daemon.jobs.store import JobStore, StoreError


def test_an_empty_store_file_is_refused_and_kept(tmp_path):
    db = tmp_path / "jobs.sqlite3"
    db.touch()
    with pytest.raises(StoreError, match=r"is empty \(0 bytes\).*move it aside"):
        JobStore(db)
    assert db.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["jobs.sqlite3"]


def test_a_missing_store_is_created(tmp_path):
    with JobStore(tmp_path / "jobs.sqlite3") as store:
        assert store.jobs() == []
    with JobStore(tmp_path / "jobs.sqlite3") as store:  # and opened again
        assert store.jobs() == []
