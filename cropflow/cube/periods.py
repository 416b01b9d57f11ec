"""The time axis: solar days of acquisitions and composite periods.

Observations are grouped by *solar day* (UTC time shifted by longitude / 15 h), so that the
overlapping tiles of one pass become one observation. Composite periods are half-open
``[start, end)`` bins of a pandas offset alias, anchored where the alias is anchored
(``1MS`` on month starts) and at the first day otherwise (``10D``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field


def solar_day(when: datetime, lon: float) -> date:
    """The local solar date of an acquisition at longitude ``lon`` (degrees)."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return (when + timedelta(hours=lon / 15.0)).date()


def period_edges(first: date, last: date, period: str) -> list[date]:
    """Edges ``e[0] <= first < ... <= last < e[-1]`` of the periods covering [first, last]."""
    offset = pd.tseries.frequencies.to_offset(period)
    start = pd.Timestamp(first)
    if not offset.is_on_offset(start):
        start = offset.rollback(start)
    edges = [start]
    stop = pd.Timestamp(last)
    while edges[-1] <= stop:
        edges.append(edges[-1] + offset)
    return [e.date() for e in edges]


class TimeAxis(BaseModel):
    """The cube's time steps: period starts (compositing) or acquisition times (none)."""

    model_config = ConfigDict(frozen=True)

    times: list[datetime] = Field(description="Time coordinate of each step (naive UTC).")
    starts: list[datetime] = Field(description="Start of each step's period (solar days).")
    ends: list[datetime] = Field(description="Exclusive end of each step's period.")
    period: str | None = Field(description="The offset alias, None for acquisition dates.")

    def __len__(self) -> int:
        return len(self.times)


def composite_axis(first: date, last: date, period: str) -> TimeAxis:
    """Periods of ``period`` from ``first`` to ``last`` (inclusive)."""
    edges = period_edges(first, last, period)
    as_dt = [datetime(e.year, e.month, e.day) for e in edges]
    return TimeAxis(times=as_dt[:-1], starts=as_dt[:-1], ends=as_dt[1:], period=period)


def acquisition_axis(day_times: Sequence[tuple[date, datetime]]) -> TimeAxis:
    """One step per solar day, stamped with the earliest acquisition time of that day."""
    first: dict[date, datetime] = {}
    for day, when in day_times:
        naive = when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
        if day not in first or naive < first[day]:
            first[day] = naive
    days = sorted(first)
    starts = [datetime(d.year, d.month, d.day) for d in days]
    ends = [s + timedelta(days=1) for s in starts]
    return TimeAxis(times=[first[d] for d in days], starts=starts, ends=ends, period=None)


def step_of_day(axis: TimeAxis, day: date) -> int | None:
    """Index of the step whose period holds solar day ``day`` (None if outside the axis)."""
    t = datetime(day.year, day.month, day.day)
    i = int(pd.DatetimeIndex(axis.starts).searchsorted(pd.Timestamp(t), side="right")) - 1
    if i < 0 or t >= axis.ends[i]:
        return None
    return i
