"""Progress reporting for long-running CLIs: a live line with rate and ETA on a terminal, a plain
periodic line otherwise (log files, CI)."""

import sys
import time


class Progress:
    """Counts work done towards `total` units and reports it on `stream`.

    On a terminal the line is redrawn at most every `tty_interval` seconds; elsewhere a full line is
    printed every `plain_interval` seconds. `total` may be None when unknown (no ETA then).
    Used by data preparation, training (steps, with seq/s and loss as detail) and evaluation.
    """

    def __init__(self, label, total=None, unit="items", stream=None, tty_interval=0.2,
                 plain_interval=30.0):
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.is_tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = tty_interval if self.is_tty else plain_interval
        self.done = 0
        self.start = time.monotonic()
        self._last_report = self.start
        self._detail = ""
        self._drawn = False

    def update(self, amount=1, detail=None):
        """Adds `amount` units of finished work (and replaces the `detail` text shown after
        the rate, e.g. "loss 2.31, 65.9 seq/s") and reports if the interval has passed."""
        self.done += amount
        if detail is not None:
            self._detail = detail
        now = time.monotonic()
        if now - self._last_report >= self.interval:
            self._last_report = now
            self._report(now, final=False)

    def clear(self):
        """Erases the live terminal line, so that a log line can be written in its place (the
        next update redraws it); nothing off a terminal."""
        if self.is_tty and self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False

    def close(self):
        """Reports the final count and elapsed time."""
        self._report(time.monotonic(), final=True)

    def _report(self, now, final):
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        text = f"{self.label}: {self.done:,}"
        if self.total:
            text += f"/{self.total:,} {self.unit} ({100.0 * self.done / self.total:.0f}%)"
        else:
            text += f" {self.unit}"
        text += f", {_format_rate(rate)} {self.unit}/s"
        if self._detail:
            text += f", {self._detail}"
        text += f", {elapsed:.0f}s"
        if self.total and not final and rate > 0:
            text += f", ETA {(self.total - self.done) / rate:.0f}s"
        if self.is_tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
            self._drawn = not final
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _format_rate(rate):
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.1f}"
