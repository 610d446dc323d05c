"""`fix_mmap_threshold`: the mallopt call it makes, when it refuses, and that freed buffers then leave the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from training import memory
from training.memory import M_MMAP_THRESHOLD, fix_mmap_threshold


class _FakeLibc:
    """Stands in for `ctypes.CDLL("libc.so.6")`: records `mallopt` calls and returns `result`."""

    def __init__(self, result: int) -> None:
        self.calls: list[tuple[int, int]] = []

        def mallopt(param: int, value: int) -> int:
            self.calls.append((param, value))
            return result

        self.mallopt = mallopt


@pytest.mark.parametrize(("result", "expected"), [(1, True), (0, False)])
def test_calls_mallopt_with_the_threshold(monkeypatch, result, expected):
    libc = _FakeLibc(result)
    monkeypatch.setattr(memory.sys, "platform", "linux")
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda name: libc)
    assert fix_mmap_threshold(4 << 20) is expected
    assert libc.calls == [(M_MMAP_THRESHOLD, 4 << 20)]


def test_zero_other_platforms_and_missing_libc_leave_malloc_alone(monkeypatch):
    libc = _FakeLibc(1)
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda name: libc)
    monkeypatch.setattr(memory.sys, "platform", "linux")
    assert fix_mmap_threshold(0) is False
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert fix_mmap_threshold() is False
    assert libc.calls == []

    def no_libc(name):
        raise OSError("no such library")

    monkeypatch.setattr(memory.sys, "platform", "linux")
    monkeypatch.setattr(memory.ctypes, "CDLL", no_libc)
    assert fix_mmap_threshold() is False
    with pytest.raises(ValueError, match=">= 0"):
        fix_mmap_threshold(-1)


_PROBE = textwrap.dedent(
    """
    import os, sys
    from training.memory import fix_mmap_threshold
    if sys.argv[1] == "fixed":
        assert fix_mmap_threshold(1 << 20)
    def rss_mb():
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    big = b"x" * (16 << 20)
    del big  # glibc's dynamic threshold now rises past 16 MB
    held = []
    for _ in range(100):
        held.append(b"y" * (2 << 20))
        held.append([b"z" * 100 for _ in range(50)])  # small blocks above each buffer pin the heap
    before = rss_mb()
    held = [h for h in held if isinstance(h, list)]
    print(before, rss_mb())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc and /proc are Linux's")
def test_freed_buffers_leave_the_process_only_with_a_fixed_threshold():
    """200 MB of 2 MB buffers, freed: glibc's dynamic threshold keeps them resident, a fixed 1 MB one does not."""

    def rss(mode: str) -> tuple[float, float]:
        out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).parents[2])
        before, after = (float(x) for x in out.stdout.split())
        return before, after

    before, after = rss("dynamic")
    if after < before - 100:
        pytest.skip("this C library returns freed heap memory by itself (not glibc)")
    assert before > 200 and after > before - 20
    before, after = rss("fixed")
    assert before > 200 and after < before - 150


def test_resident_set_grows_with_a_touched_buffer_and_the_peak_keeps_it():
    before = memory.resident_gb()
    buffer = bytearray(256 * 2**20)  # zero-filled, so every page is touched
    during = memory.resident_gb()
    assert during - before > 0.2
    assert memory.peak_resident_gb() >= during - 0.01
    del buffer
    assert memory.peak_resident_gb() >= during - 0.01
