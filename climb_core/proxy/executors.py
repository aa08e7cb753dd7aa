"""Where proxy jobs run: in this process, a local process pool, Ray or Slurm; chosen by `search.executor`
(`auto`: a pool for n-gram rounds, this process otherwise).

Every executor has one method, `submit_all(fn, jobs, on_start=None, should_stop=None)`, yielding
`(job, result)` as jobs finish, where `result` is the exception when the job failed (a raise, a
killed worker): a bad job becomes a failed run, never a crashed search. At most `workers` jobs are
in flight, so `on_start` marks a run as running when it really starts. Once `should_stop()` is true
nothing new starts, and the jobs in flight are still waited for and yielded, so a cancelled search
keeps the proxies it already paid for. Closing the generator early cancels what has not started.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

Result = Any  # the job's return value, or the BaseException it ended with


class ExecutorError(RuntimeError):
    """An executor cannot be built (unknown name, Ray not installed)."""


class LocalExecutor:
    """One job after another in this process: simplest to debug, no pickling."""

    workers = 1

    def submit_all(self, fn: Callable, jobs: Iterable, on_start: Callable | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[Any, Result]]:
        for job in jobs:
            if should_stop and should_stop():
                return
            if on_start:
                on_start(job)
            try:
                result = fn(job)
            except Exception as err:  # noqa: BLE001 - reported to the caller as this job's outcome
                result = err
            yield job, result

    def close(self) -> None:
        pass


def _schedule(jobs: Iterable, workers: int, *, start: Callable[[Any], Any],
              wait_any: Callable[[list], Iterable], outcome: Callable[[Any], Result], cancel: Callable[[Any], Any],
              on_start: Callable | None = None,
              should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[Any, Result]]:
    """The scheduling loop of the parallel executors, on their own primitives.

    `start(job)` launches a job and returns its handle (hashable); `wait_any(handles)` blocks until
    at least one has finished and returns the finished ones; `outcome(handle)` is the job's return
    value, or the exception it ended with; `cancel(handle)` drops a job still in flight when the
    caller closes the generator early. Keeps at most `workers` jobs in flight, calls `on_start` just
    before each start, and once `should_stop()` is true starts nothing new but still yields what is
    in flight (see the module docstring)."""
    queue = list(jobs)
    inflight: dict = {}  # handle -> job
    try:
        while queue or inflight:
            if should_stop and should_stop():
                queue.clear()
            if not queue and not inflight:
                break
            while queue and len(inflight) < workers:
                job = queue.pop(0)
                if on_start:
                    on_start(job)
                inflight[start(job)] = job
            for handle in wait_any(list(inflight)):
                job = inflight.pop(handle)
                yield job, outcome(handle)
    finally:
        for handle in inflight:
            cancel(handle)


def share_cores(threads: int) -> None:
    """Pool initializer: each worker gets its share of the cores. Without it every worker's torch
    uses all cores and the oversubscribed pool runs many times slower than one process."""
    import os

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


class ProcessExecutor:
    """A pool of `workers` spawned processes (spawn: no forked DuckDB or torch state)."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))
        self._pool = None

    def _get_pool(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is None:
            import os

            threads = max(1, (os.cpu_count() or 1) // self.workers)
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=share_cores, initargs=(threads,))
        return self._pool

    def submit_all(self, fn: Callable, jobs: Iterable, on_start: Callable | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[Any, Result]]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        pool_of: dict = {}  # future -> the pool that runs it

        def start(job):
            try:
                fut = self._get_pool().submit(fn, job)
            except BrokenProcessPool:
                # The pool broke before its failed future was read: start a fresh one.
                self._drop_pool(self._pool)
                fut = self._get_pool().submit(fn, job)
            pool_of[fut] = self._pool
            return fut

        def outcome(fut):
            pool = pool_of.pop(fut)
            try:
                return fut.result()
            except BrokenProcessPool as err:
                # A worker died (OOM, kill): the jobs of that pool fail; a fresh pool serves the rest.
                self._drop_pool(pool)
                return err
            except Exception as err:  # noqa: BLE001
                return err

        yield from _schedule(jobs, self.workers, start=start,
                             wait_any=lambda futs: wait(futs, return_when=FIRST_COMPLETED)[0],
                             outcome=outcome, cancel=lambda fut: fut.cancel(),
                             on_start=on_start, should_stop=should_stop)

    def _drop_pool(self, pool) -> None:
        if pool is not None and pool is self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayExecutor:
    """Ray tasks, one CPU each; a crashed worker surfaces as that job's exception."""

    def __init__(self, workers: int):
        try:
            import ray
        except ImportError as err:
            raise ExecutorError("search.executor = 'ray' needs the ray package: pip install 'ray[default]'") from err
        self.ray = ray
        self.workers = max(1, int(workers))
        if not ray.is_initialized():
            # Workers get the driver's import path, as spawned processes do, so an objective defined
            # in the caller's own module (a script, a test) can be imported there.
            import os
            import sys

            path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
            ray.init(num_cpus=self.workers, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": path}})

    def submit_all(self, fn: Callable, jobs: Iterable, on_start: Callable | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[Any, Result]]:
        ray = self.ray
        remote = ray.remote(max_retries=0)(fn)

        def outcome(ref):
            try:
                return ray.get(ref)
            except Exception as err:  # noqa: BLE001 - RayTaskError, WorkerCrashedError, ...
                return err

        yield from _schedule(jobs, self.workers, start=remote.remote,
                             wait_any=lambda refs: ray.wait(refs, num_returns=1)[0],
                             outcome=outcome, cancel=lambda ref: ray.cancel(ref, force=True),
                             on_start=on_start, should_stop=should_stop)

    def close(self) -> None:
        pass


class SlurmExecutor:
    """One Slurm job per proxy run, through submitit (`search.executor = slurm`, settings in [slurm]).

    `slurm.cluster = local` runs each job as a local subprocess by the same submitit code path, so
    everything but sbatch itself is testable without a cluster. A job that fails, times out or is
    preempted surfaces as that run's exception; closing early scancels the jobs still queued."""

    def __init__(self, slurm_cfg, workspace=None):
        try:
            import submitit
        except ImportError as err:
            raise ExecutorError("search.executor = 'slurm' needs submitit: pip install 'climb-studio[slurm]' "
                                "(or pip install submitit)") from err
        from pathlib import Path

        folder = slurm_cfg.folder or (str(Path(workspace) / "proxy_jobs" / "slurm") if workspace else "proxy_jobs/slurm")
        self.workers = max(1, int(slurm_cfg.max_jobs))
        self.executor = submitit.AutoExecutor(folder=str(Path(folder) / "%j"), cluster=slurm_cfg.cluster or None)
        params: dict[str, Any] = {"timeout_min": int(slurm_cfg.time_min), "cpus_per_task": int(slurm_cfg.cpus_per_run),
                                  "gpus_per_node": int(slurm_cfg.gpus_per_run), "tasks_per_node": 1, "nodes": 1,
                                  "name": "climb-proxy"}
        if slurm_cfg.mem_gb:
            params["mem_gb"] = int(slurm_cfg.mem_gb)
        if self.executor.cluster == "slurm":
            if slurm_cfg.partition:
                params["slurm_partition"] = slurm_cfg.partition
            extra = {}
            for item in slurm_cfg.extra_sbatch:
                key, sep, value = str(item).lstrip("-").partition("=")
                if not key:
                    continue
                extra[key.replace("-", "_")] = value if sep else ""
            if extra:
                params["slurm_additional_parameters"] = extra
            if slurm_cfg.setup:
                params["slurm_setup"] = list(slurm_cfg.setup)
        self.executor.update_parameters(**params)

    def submit_all(self, fn: Callable, jobs: Iterable, on_start: Callable | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[Any, Result]]:
        import time

        def wait_any(handles):
            delay = 0.05
            while True:
                done = [h for h in handles if h.done()]
                if done:
                    return done
                time.sleep(delay)
                delay = min(delay * 2, 2.0)  # the scheduler's state is polled, not pushed

        def outcome(handle):
            try:
                return handle.result()
            except Exception as err:  # noqa: BLE001 - FailedJobError, UncompletedJobError, the run's own error
                return err

        def cancel(handle):
            try:
                handle.cancel(check=False)
            except Exception:  # noqa: BLE001 - a job already gone
                pass

        yield from _schedule(jobs, self.workers, start=lambda job: self.executor.submit(fn, job),
                             wait_any=wait_any, outcome=outcome, cancel=cancel,
                             on_start=on_start, should_stop=should_stop)

    def close(self) -> None:
        pass


class AutoExecutor:
    """`search.executor = auto`: a round of several n-gram proxies (the real objective) runs on a
    process pool of `workers`, everything else in this process.

    An n-gram proxy is numpy on one core for ~1-2 s, so a round of them leaves the other cores idle;
    the pool is started on the first such round and kept until `close`, so its start (spawn, imports,
    the tokenizer and targets each worker loads once) is paid once per search, not per round. GPT
    rounds stay here: torch already uses every core, and they are batched instead (engine). Any
    other objective (tests' synthetic ones) runs here too, so its semantics are the local ones."""

    def __init__(self, workers: int):
        import os

        self.workers = max(1, min(int(workers), os.cpu_count() or 1))
        self._local = LocalExecutor()
        self._pool = ProcessExecutor(self.workers) if self.workers > 1 else None

    def parallel_for(self, fn: Callable, jobs: list) -> bool:
        """Whether this round goes to the pool: the real objective, n-gram proxies only, at least two,
        on a machine with a second core. It depends on nothing else (not on the machine's load), so
        the same search runs the same way anywhere."""
        if self._pool is None or len(jobs) < 2:
            return False
        from climb_core.proxy.job import run_proxy_job

        return fn is run_proxy_job and all(getattr(getattr(j, "proxy", None), "kind", None) == "ngram" for j in jobs)

    def submit_all(self, fn: Callable, jobs: Iterable, on_start: Callable | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[Any, Result]]:
        jobs = list(jobs)
        chosen = self._pool if self.parallel_for(fn, jobs) else self._local
        yield from chosen.submit_all(fn, jobs, on_start=on_start, should_stop=should_stop)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


def make_executor(search_cfg, slurm_cfg=None, workspace=None) -> LocalExecutor | AutoExecutor | ProcessExecutor | RayExecutor | SlurmExecutor:
    """The executor named by `search_cfg.executor` with `search_cfg.workers` parallel jobs
    (slurm: `slurm_cfg`, its files under `workspace` unless slurm.folder says otherwise)."""
    name = (search_cfg.executor or "local").lower()
    if name == "local":
        return LocalExecutor()
    if name == "auto":
        return AutoExecutor(search_cfg.workers)
    if name == "process":
        return ProcessExecutor(search_cfg.workers)
    if name == "ray":
        return RayExecutor(search_cfg.workers)
    if name == "slurm":
        if slurm_cfg is None:
            from climb_core.config import SlurmConfig

            slurm_cfg = SlurmConfig()
        return SlurmExecutor(slurm_cfg, workspace)
    raise ExecutorError(f"unknown search.executor {search_cfg.executor!r}; use auto, local, process, ray or slurm")
