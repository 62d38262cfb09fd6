"""Progress fraction and ETA of a running job, from the stages it reports and measured step times.

Each mode runs a known sequence of stages with rough relative weights; the fraction is the
weighted share done. The ETA is measured, not guessed: the current stage's remaining steps at
its own average step time, plus each later stage at the duration it took in the last job of the
same mode (or, before any history exists, at the rate observed so far in this job).
"""

from __future__ import annotations

import time

STAGE_WEIGHTS = {"loading": 1.0, "aligning": 2.0, "encoding": 1.0, "denoising": 14.0, "decoding": 2.0,
                 "writing": 1.0, "reconstructing": 3.0}


def stages_for(mode: str, view_align: bool = False) -> list[str]:
    if mode == "reconstruct":
        return ["reconstructing", "writing"]
    stages = ["loading", *(["aligning"] if view_align else []), "encoding", "denoising", "decoding", "writing"]
    return [*stages, "reconstructing"] if mode == "orbit" else stages


class ProgressTracker:
    """Fed ``update(stage, step, total)`` by the worker; reads back ``fraction`` and ``eta()``."""

    def __init__(self, stages: list[str], history: dict[str, float] | None = None,
                 clock=time.monotonic) -> None:
        self.stages = stages
        self.history = history or {}  # stage → seconds it took last time
        self.clock = clock
        self.durations: dict[str, float] = {}  # finished stages of this job
        self.stage: str | None = None
        self.step, self.total = 0, 0
        self.stage_started = self.started = clock()
        self.fraction = 0.0

    def update(self, stage: str, step: int = 0, total: int = 0) -> None:
        now = self.clock()
        if stage != self.stage:
            if self.stage is not None:
                self.durations[self.stage] = now - self.stage_started
            if stage not in self.stages:  # a stage we did not plan for: weigh it like writing
                self.stages.insert(self._index(self.stage) + 1, stage)
            self.stage, self.stage_started = stage, now
        self.step, self.total = step, total
        self.fraction = max(self.fraction, self._fraction())

    def finish(self) -> dict[str, float]:
        """Close the last stage; returns the stage durations, to be the next job's history."""
        if self.stage is not None:
            self.durations[self.stage] = self.clock() - self.stage_started
        return dict(self.durations)

    def _index(self, stage: str | None) -> int:
        return self.stages.index(stage) if stage in self.stages else -1

    def _weight(self, stage: str) -> float:
        return STAGE_WEIGHTS.get(stage, 1.0)

    def _stage_share(self) -> float:
        return min(self.step / self.total, 1.0) if self.total > 0 else 0.0

    def _fraction(self) -> float:
        index = self._index(self.stage)
        done = sum(self._weight(s) for s in self.stages[:index]) + self._weight(self.stage) * self._stage_share()
        return min(done / sum(self._weight(s) for s in self.stages), 1.0)

    def eta(self) -> float | None:
        """Seconds left, or None until something has been measured."""
        now = self.clock()
        in_stage = now - self.stage_started
        if self.stage is None:
            return None
        if self.total > 0 and self.step > 0:
            current = in_stage / self.step * (self.total - self.step)
        elif self.stage in self.history:
            current = max(self.history[self.stage] - in_stage, 0.0)
        else:
            current = None
        later = self.stages[self._index(self.stage) + 1:]
        elapsed = now - self.started
        rate = elapsed / self.fraction if self.fraction > 0.02 else None  # seconds per unit of progress
        total_weight = sum(self._weight(s) for s in self.stages)
        rest = 0.0
        for stage in later:
            if stage in self.history:
                rest += self.history[stage]
            elif rate is not None:
                rest += rate * self._weight(stage) / total_weight
            else:
                return None
        if current is None:
            if rate is None:
                return None
            current = max(rate * self._weight(self.stage) / total_weight * (1 - self._stage_share()) - in_stage, 0.0)
        return round(current + rest, 2)
