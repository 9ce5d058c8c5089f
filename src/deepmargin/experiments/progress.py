"""The progress of a study run: cells done / running / left, elapsed and estimated time left."""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["Progress", "StepProgress"]

logger = logging.getLogger(__name__)


def _clock(seconds: float) -> str:
    """``h:mm:ss``, or ``m:ss`` under an hour.

    Example:
        >>> _clock(3725), _clock(65)
        ('1:02:05', '1:05')
    """
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """One rewritten line on a terminal (``show`` None: when stderr is one), a log line per finished
    cell otherwise.

    Args:
        total: cells of the run; done: already finished; jobs: worker processes (for the estimate).
        show: the live line: True (on a terminal only), False, or None (when stderr is a terminal).
    """

    def __init__(self, total: int, done: int, jobs: int, show: bool | None) -> None:
        self.total, self.done, self.jobs = total, done, jobs
        self.running = 0
        self.start = time.perf_counter()
        self.durations: list[float] = []
        try:
            tty = sys.stderr.isatty()
        except (AttributeError, ValueError):
            tty = False
        self.live = tty if show is None else bool(show) and tty

    def eta(self) -> float | None:
        """Seconds left, from the mean duration of the cells computed so far (None before the first)."""
        if not self.durations:
            return None
        left = self.total - self.done
        return sum(self.durations) / len(self.durations) * left / max(1, min(self.jobs, left or 1))

    def line(self) -> str:
        eta = self.eta()
        return (f"cells {self.done}/{self.total} done, {self.running} running, {self.total - self.done - self.running} left, "
                f"elapsed {_clock(time.perf_counter() - self.start)}, left ~{'?' if eta is None else _clock(eta)}")

    def draw(self) -> None:
        if self.live:
            sys.stderr.write("\r" + self.line().ljust(100))
            sys.stderr.flush()

    def finished(self, cell_id: str, seconds: float, status: str) -> None:
        """Count a cell as finished (``status`` ``done`` and ``diverged`` count towards the estimate)."""
        self.done += 1
        if status in ("done", "diverged"):
            self.durations.append(seconds)
        if self.live:
            self.draw()
        else:
            logger.info("[%d/%d] %s %s (%.1f s); %s", self.done, self.total, cell_id, status, seconds, self.line())

    def close(self) -> None:
        if self.live:
            sys.stderr.write("\n")
            sys.stderr.flush()


class StepProgress:
    """Progress of a measuring command (``deepmargin attack``, ``robustness``): a tqdm bar when
    ``show`` (a terminal, or asked), else an INFO log line at most every ``every`` seconds and at
    the end, so a long run on a cluster says how far it got.

    Example:
        >>> with StepProgress(4, "robustness", show=False, every=0.0) as steps:
        ...     steps.update(4)
        >>> steps.done
        4
    """

    def __init__(self, total: int, label: str, *, show: bool, every: float = 30.0) -> None:
        self.total, self.label, self.show, self.every = max(int(total), 0), label, bool(show), float(every)
        self.done = 0
        self._start = self._last = time.perf_counter()
        self._bar = None
        if self.show:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=label, leave=False, file=sys.stderr)

    def set_postfix_str(self, text: str) -> None:
        """What is being done now (shown on the bar; in the next log line otherwise)."""
        self._what = text
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def update(self, n: int = 1) -> None:
        """``n`` more steps done."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last >= self.every or self.done >= self.total:
            self._last = now
            elapsed = now - self._start
            left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
            logger.info("%s: %d/%d steps%s, elapsed %s, left ~%s", self.label, self.done, self.total,
                        f" ({getattr(self, '_what', '')})" if getattr(self, "_what", "") else "", _clock(elapsed),
                        _clock(left))

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
