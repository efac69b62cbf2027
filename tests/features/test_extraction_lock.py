"""Processes extracting the same feature cache take turns: the one that waits reads what the
other wrote instead of extracting again, and a time-limited extraction stops waiting at its limit."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from emorec.file_lock import cache_writer_lock
from emorec.features.extract import ExtractionDeadline, extract_features

ARGS = dict(pretrained=False, image_size=32, grid=0, num_workers=0, progress=False)


def test_an_extraction_waits_for_the_writer_of_its_cache_and_reads_what_it_wrote(tiny_dataset, tmp_path):
    first = extract_features(tiny_dataset, "test_efficientnet", cache_dir=tmp_path / "a", log=lambda _: None, **ARGS)
    root = tmp_path / "b" / first.root.name  # the same cache, in a folder another process is writing
    lines: list[str] = []
    result: dict = {}
    with cache_writer_lock(root, lambda _: None):
        waiter = threading.Thread(target=lambda: result.setdefault("cache", extract_features(
            tiny_dataset, "test_efficientnet", cache_dir=tmp_path / "b", log=lines.append, **ARGS)))
        waiter.start()
        deadline = time.monotonic() + 30
        while not any("waiting" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("another process is extracting" in line for line in lines)
        shutil.copytree(first.root, root)  # what the other process writes while holding the lock
    waiter.join(30)
    assert result["cache"].root == root
    assert not any("cache miss" in line for line in lines), "it did not extract again"
    assert any("written by the process waited for" in line for line in lines)


def test_a_time_limited_extraction_stops_waiting_at_its_limit(tiny_dataset, tmp_path):
    first = extract_features(tiny_dataset, "test_efficientnet", cache_dir=tmp_path / "a", log=lambda _: None, **ARGS)
    with cache_writer_lock(tmp_path / "b" / first.root.name, lambda _: None):
        with pytest.raises(ExtractionDeadline, match="waited .* for another process"):
            extract_features(tiny_dataset, "test_efficientnet", cache_dir=tmp_path / "b", log=lambda _: None,
                             time_limit_s=0.5, **ARGS)


def test_the_lock_is_free_again_after_its_block(tmp_path):
    told: list[str] = []
    with cache_writer_lock(tmp_path / "cache", told.append):
        pass
    with cache_writer_lock(tmp_path / "cache", told.append):
        pass
    assert told == []
