"""Wall-clock deadlines shared by `spawnjoin-train sft` and `grpo`."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from training.callbacks import wall_clock  # noqa: E402

AT_2300 = 1796598000.0  # 2026-12-06 23:00:00 UTC


def test_hh_mm_is_today_or_with_ahead_its_next_occurrence():
    midnight = AT_2300 - 23 * 3600
    assert wall_clock("23:30", now=AT_2300) == midnight + 23.5 * 3600
    assert wall_clock("23:30", ahead=True, now=AT_2300) == midnight + 23.5 * 3600  # still ahead today
    assert wall_clock("00:30", now=AT_2300) == midnight + 1800  # a schedule start: this morning
    assert wall_clock("00:30", ahead=True, now=AT_2300) == midnight + 86400 + 1800  # a deadline: after midnight
    assert wall_clock("23:00", ahead=True, now=AT_2300) == AT_2300 + 86400  # exactly now is past


def test_epoch_seconds_and_none_pass_through():
    assert wall_clock(str(AT_2300 - 5), ahead=True, now=AT_2300) == AT_2300 - 5  # an explicit past deadline stays
    assert wall_clock(None) is None and wall_clock("") is None
