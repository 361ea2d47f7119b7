"""Progress for logs: when output is not a terminal (nohup, sbatch, CI, `> log`), rich's live bars draw nothing
until the end, so long work reports plain lines instead — a few per task, each complete on its own. Work that
is over within QUIET_SECONDS prints none: a log (or an error message) is not drowned in progress of instant steps."""

import sys
import time
from typing import TextIO

QUIET_SECONDS = 2.0


def duration_text(seconds: float) -> str:
    """12 s, 3 min 05 s, 2 h 04 min."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class PlainLines:
    """Counts work done out of `total` and writes "description: done/total (p%), ETA …" each time another
    `every` share of the total is done (and at the end), to `stream` (stderr by default)."""

    def __init__(self, description: str, total: int | None, every: float = 0.1, stream: TextIO | None = None):
        self.description, self.total, self.every = description, total, every
        self.stream = stream if stream is not None else sys.stderr
        self.done, self.reported, self.started = 0, 0, time.perf_counter()  # reported: shares of `every` shown

    def advance(self, amount: int = 1) -> None:
        self.update(self.done + amount)

    def update(self, done: int, total: int | None = None) -> None:
        self.done, self.total = done, total if total is not None else self.total
        if not self.total:
            return
        share = self.done / self.total
        reached = int(share / self.every + 1e-9)  # whole shares of `every` done (1e-9: 0.3 / 0.1 is 2.999…)
        if reached <= self.reported and self.done < self.total:
            return
        self.reported = reached
        elapsed = time.perf_counter() - self.started
        if elapsed < QUIET_SECONDS:
            return
        eta = "" if self.done >= self.total else f", ETA {duration_text(elapsed * (1 / share - 1))}"
        print(f"{self.description}: {self.done:,}/{self.total:,} ({share:.0%}){eta}", file=self.stream, flush=True)
