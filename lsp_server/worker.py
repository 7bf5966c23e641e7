"""The one model thread: everything that touches a model runs there, one call at a time, in the order sent.

    run_pipeline(job, watcher)              pipeline.complete for one request's CompletionJob
    load_models(settings, trained_ar, ...)  decoding.load_models with the settings' folders
    model_paths(settings, trained_ar)       the DLM and AR folders in use

The event loop never waits on the thread except through `await`. The thread reads one thing of a request's,
its stop flag; what it tells the request (the decode started, the job ended) is handed to the event loop.
The decoder, and torch with it, is imported here, on the thread, when the models load.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Callable, Protocol, TypeVar

import decoding

from lsp_server import pipeline
from lsp_server.pipeline import Completion, SuggestionCache
from lsp_server.settings import ServerSettings
from lsp_server.text import Context

if TYPE_CHECKING:  # the real names import torch: only type checkers read them
    from decoding import ModelPair, StepInfo

T = TypeVar("T")


@dataclass(frozen=True)
class CompletionJob:
    """One pipeline.complete call for a request, as the model thread runs it."""

    models: ModelPair
    context: Context
    settings: ServerSettings
    cache: SuggestionCache | None  # None for an infill: a selection is neither answered from it nor kept in it
    stop: threading.Event  # the request's stop flag: checked before the job runs and before every decoder step
    on_step: Callable[[StepInfo], None] | None = None  # model thread, after every decoder step (infill progress)


@dataclass(frozen=True)
class Decoded:
    """How a CompletionJob went: its time in the queue, and its completion (None: stopped before it ran)."""

    queued_ms: float
    completion: Completion | None


class JobWatcher(Protocol):
    """Who hears how a CompletionJob goes (lsp_server.jobs.Request). Called on the event loop, also after the
    request was cancelled: the work runs on until the stop flag ends it, and its end still counts."""

    def decode_started(self) -> None: ...

    def job_ended(self, completion: Completion | None) -> None: ...

    def job_failed(self, error: BaseException) -> None: ...


class ModelWorker:
    """The single thread that runs models (see the module docstring)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codila-model")

    async def run_pipeline(self, job: CompletionJob, watcher: JobWatcher) -> Decoded:
        """pipeline.complete for `job` on the model thread, unless its request is stopped before it runs."""
        if job.stop.is_set():  # stopped before it was sent (during the debounce): nothing runs, nothing counts
            return Decoded(0.0, None)
        loop = asyncio.get_running_loop()
        sent = time.perf_counter()

        def on_thread() -> Decoded:
            queued_ms = (time.perf_counter() - sent) * 1000
            if job.stop.is_set():  # stopped while it waited behind another job
                return Decoded(queued_ms, None)
            on_decode = partial(loop.call_soon_threadsafe, watcher.decode_started)
            completion = pipeline.complete(job.models, job.context, job.settings, cache=job.cache,
                                           cancel=job.stop.is_set, on_step=job.on_step, on_decode=on_decode)
            return Decoded(queued_ms, completion)

        return await self._submit(on_thread, on_end=partial(_tell, watcher))

    async def load_models(self, settings: ServerSettings, trained_ar: str | None, threads: int) -> ModelPair:
        """decoding.load_models for `settings` (trained_ar, when set, instead of settings.ar_path)."""
        return await self._submit(partial(_load_models, settings, trained_ar, threads))

    async def model_paths(self, settings: ServerSettings, trained_ar: str | None) -> tuple[str, str]:
        """The DLM and AR folders in use (the defaults come from decoding, which imports torch)."""
        return await self._submit(partial(_model_paths, settings, trained_ar))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _submit(self, work: Callable[[], T],
                      on_end: Callable[[asyncio.Future[T]], None] | None = None) -> T:
        """work() on the model thread. on_end(future) runs on the event loop when the work ends, also when the
        task that awaited it was cancelled meanwhile (the work itself is not interrupted from here)."""
        future = asyncio.wrap_future(self._pool.submit(work))
        if on_end is not None:
            future.add_done_callback(on_end)
        return await asyncio.shield(future)


def _tell(watcher: JobWatcher, future: asyncio.Future[Decoded]) -> None:
    """Event loop: the job's end to its watcher."""
    if future.cancelled():  # the worker shut down before the job ran
        return
    if (error := future.exception()) is not None:
        watcher.job_failed(error)
    else:
        watcher.job_ended(future.result().completion)


def _load_models(settings: ServerSettings, trained_ar: str | None, threads: int) -> ModelPair:
    """Model thread: decoding.load_models with the settings' paths (None = the shipped default model)."""
    if threads:
        import torch  # the thread count must be set before the first forward pass

        torch.set_num_threads(threads)
    return decoding.load_models(settings.dlm_path, trained_ar or settings.ar_path, device=settings.device,
                                dtype=settings.dtype, trust_remote_code=settings.trust_remote_code,
                                ar_backend=settings.ar_backend)


def _model_paths(settings: ServerSettings, trained_ar: str | None) -> tuple[str, str]:
    """Model thread: the DLM and AR folders in use (the defaults from decoding, which imports torch)."""
    default = decoding.default_model_dir()
    return settings.dlm_path or str(default / "dlm"), trained_ar or settings.ar_path or str(default / "ar")
