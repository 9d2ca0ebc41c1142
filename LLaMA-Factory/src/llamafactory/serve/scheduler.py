"""Continuous batching at step granularity (README: "Serving", docs/design.md#serving).

One worker thread owns the model. Jobs wait in a bounded queue; at each step boundary waiting jobs join a
running *cohort* (one reverse-loop state, ``ddm.sampling.begin``) whose forward they can share
(``_State.joinable``: same settings, columns and block), else start a new cohort, while at most
``max_batch`` rows are live in all. Every cohort takes one reverse step in turn; after it, each row's fixed
text goes to its job, and rows that are finished (EOS, stop string, every position fixed) or whose client
went away leave. The server never samples by itself: the steps are the core loop's.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field

import torch

from ..ddm.sampling import begin
from .engine import Engine, Job

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """More rows wait than the queue holds (HTTP 429)."""


@dataclass
class _Cohort:
    """A reverse-loop state and the job of each of its rows, in the state's row order."""

    state: object
    jobs: list[Job] = field(default_factory=list)
    width: int = 0  # prompt columns of its rows


class Scheduler:
    """Queue + worker thread stepping the cohorts; ``submit`` is safe from any thread."""

    def __init__(self, engine: Engine, *, max_batch: int, max_queue: int) -> None:
        self.engine, self.max_batch, self.max_queue = engine, max_batch, max_queue
        self.waiting: deque[Job] = deque()
        self.cohorts: list[_Cohort] = []
        self.wake = threading.Condition()
        self.stopped = False
        self.steps = 0
        self.peak_rows = 0  # most rows live at once (tests and benchmarks read it)
        self.thread = threading.Thread(target=self._run, name="ddm-serve-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.wake:
            self.stopped = True
            self.wake.notify()
        self.thread.join(timeout=30)

    def submit(self, jobs: list[Job]) -> None:
        """Queue ``jobs`` (all or none); raises ``QueueFull`` when they do not fit."""
        with self.wake:
            if len(self.waiting) + len(jobs) > self.max_queue:
                raise QueueFull(f"{len(self.waiting)} rows are waiting; the queue holds {self.max_queue}")
            self.waiting.extend(jobs)
            self.wake.notify()

    def live_rows(self) -> int:
        return sum(len(cohort.jobs) for cohort in self.cohorts)

    def _run(self) -> None:
        while True:
            with self.wake:
                while not self.stopped and not self.waiting and not self.cohorts:
                    self.wake.wait()
                if self.stopped:
                    return
                admitted = self._take()
            try:
                self._admit(admitted)
                self.peak_rows = max(self.peak_rows, self.live_rows())
                for cohort in list(self.cohorts):
                    self._step(cohort)
            except Exception as error:  # a defect must not stop the server: fail the rows in flight, keep serving
                logger.exception("generation failed; the rows in flight are answered with an error")
                for job in [*admitted, *(job for cohort in self.cohorts for job in cohort.jobs)]:
                    job.sink(error)
                self.cohorts = []

    def _take(self) -> list[Job]:
        """Waiting jobs that fit in the batch now (first come, first served); cancelled ones are skipped."""
        room, taken = self.max_batch - self.live_rows(), []
        while self.waiting and len(taken) < room:
            job = self.waiting.popleft()
            if not job.cancelled.is_set():
                taken.append(job)
        return taken

    def _admit(self, jobs: list[Job]) -> None:
        engine = self.engine
        for job in jobs:
            ids, attention, given = job.layout(engine.model.mask_id)
            device = engine.model.device
            state = begin(engine.model, torch.tensor([ids], device=device), engine.model.mask_id, job.config,
                          src_mask=torch.tensor([given], device=device),
                          attention_mask=torch.tensor([attention], device=device),
                          generator=[engine.generator(job.seed)])
            host = next((c for c in self.cohorts if c.width == job.width and c.state.joinable(state)), None)
            if host is None:
                self.cohorts.append(_Cohort(state, [job], job.width))
            else:
                host.state.admit(state)
                host.jobs.append(job)

    def _step(self, cohort: _Cohort) -> None:
        state = cohort.state
        working = state.step()
        self.steps += 1
        live = set(state.rows.tolist()) if working else set()
        final = state.final[:, cohort.width :].tolist()
        leaving = []
        for row, job in enumerate(cohort.jobs):
            if job.cancelled.is_set():
                leaving.append(row)
                continue
            job.steps_taken += 1
            update = self.engine.read(job, final[row][: job.new_tokens], row not in live)
            update.nfe, update.step = int(state.nfe[row]), job.steps_taken
            if job.trace:
                update.tokens = final[row][: job.new_tokens]
            job.sink(update)
            if update.finish_reason is not None:
                leaving.append(row)
        if leaving:
            state.release(leaving)
            cohort.jobs = [job for row, job in enumerate(cohort.jobs) if row not in set(leaving)]
        if not cohort.jobs:
            self.cohorts.remove(cohort)
