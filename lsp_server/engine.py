"""The coordinator between the LSP handlers and the product (lsp_server.pipeline): which request runs when,
on which settings and models.

    complete(doc, position, ...)    a completion request becomes a job: it stops the document's older job,
                                    waits out the debounce, then runs pipeline.complete on the model thread
    infill(context, ...)            the same for a selected range, with step progress
    cancel_request(request_id)      $/cancelRequest: stop that request's work before the next iteration
    startup / apply_settings / load / train    settings and the models' lifecycle, in the background

Concurrency: ONE model thread (ModelWorker) runs everything that touches a model (loading, the pipeline), one
job at a time; the event loop never waits on it except through `await`. Bookkeeping (records, counters,
status) happens on the event loop only. The decoder (and torch) is imported on the model thread when the
models load, so the server answers `initialize` at once; requests before the models are ready answer empty.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Protocol

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.workspace import TextDocument

import decoding

from lsp_server import pipeline, text
from lsp_server.pipeline import Completion, SuggestionCache
from lsp_server.records import Ledger, Record, status_note
from lsp_server.settings import ServerSettings, merge
from lsp_server.text import Context
from lsp_server.training_job import TrainingRun, TrainOptions, describe_progress

log = logging.getLogger("lsp_server.engine")


class NotReady(RuntimeError):
    """The models are not loaded (loading, or the last load failed)."""


class Editor(Protocol):
    """What the engine needs from the editor (lsp_server.ui implements it with LSP messages)."""

    def status(self, state: str, message: str, last_latency_ms: float | None) -> None: ...

    def message(self, level: str, text: str) -> None: ...

    def progress(self, title: str, cancellable: bool) -> "Progress": ...


class Progress(Protocol):
    """Work-done progress; `report` may be called from any thread."""

    async def __aenter__(self) -> "Progress": ...

    async def __aexit__(self, *exc: Any) -> None: ...

    def report(self, message: str, percentage: int | None = None) -> None: ...

    def on_cancel(self, callback: Callable[[], None]) -> None: ...


@dataclass(eq=False)
class Job:
    """One request's claim on the model thread, with its stop flag (read by the decoder every iteration)."""

    request_id: Any
    uri: str
    arrived: float = field(default_factory=time.perf_counter)
    stop_flag: threading.Event = field(default_factory=threading.Event)
    reason: str = ""

    def stop(self, reason: str) -> None:
        if not self.stop_flag.is_set():
            self.reason = reason
            self.stop_flag.set()

    @property
    def stopped(self) -> bool:
        return self.stop_flag.is_set()


@dataclass(frozen=True)
class Answer:
    """A completion request's answer: the text ("" = none) and where it goes (context.position: the cursor,
    clamped to its line)."""

    text: str
    context: Context


class ModelWorker:
    """The single thread that runs models, in submission order.

    `run` returns (seconds queued, result). `on_done(future)` runs on the event loop when the work ends,
    also when the request that awaited it was cancelled meanwhile (the work itself is never interrupted
    from here: a job's stop flag does that).
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codila-model")

    async def run(self, fn: Callable[..., Any], *args: Any,
                  on_done: Callable[[asyncio.Future], None] | None = None, **kwargs: Any) -> tuple[float, Any]:
        submitted = time.perf_counter()

        def timed() -> tuple[float, Any]:
            return time.perf_counter() - submitted, fn(*args, **kwargs)

        future = asyncio.wrap_future(self._pool.submit(timed))
        if on_done is not None:
            future.add_done_callback(on_done)
        return await asyncio.shield(future)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Engine:
    """Settings, models and jobs of one server; the completions themselves are lsp_server.pipeline's."""

    def __init__(self, editor: Editor) -> None:
        self.editor = editor
        self.worker = ModelWorker()
        self.cache = SuggestionCache()
        self.ledger = Ledger()
        self.settings: ServerSettings | None = None  # None until startup() has validated the first settings
        self.models: Any = None  # decoding.ModelPair once loaded
        self.state = "loading"
        self.trained_ar: str | None = None  # set by train(): used instead of settings.ar_path until that changes
        self.training: TrainingRun | None = None
        self.threads = 0  # torch CPU threads (python -m lsp_server --threads); 0 = torch's default
        self._ready = asyncio.Event()  # set once the first settings are validated
        self._jobs_by_doc: dict[str, Job] = {}
        self._jobs_by_request: dict[Any, Job] = {}
        self._cancel_hooks: dict[Any, Callable[[], None]] = {}  # request id -> stop a training run
        self._load_generation = 0
        self._unverified_languages: set[str] = set()

    # ------------------------------------------------------------------ requests
    async def complete(self, doc: TextDocument, position: types.Position, request_id: Any, method: str,
                       invoked: bool) -> Answer:
        """The completion at `position` (UTF-16) in `doc`; its text is "" when there is none to offer."""
        with self._job(doc.uri, request_id, method, doc.uri) as (job, record):
            context = text.context_at(doc, position)
            record.describe(context)
            self.ledger.last_context = context
            if self.models is None:
                record.outcome = "not_ready"
                return Answer("", context)
            settings, models = self.settings, self.models
            if not invoked and settings.debounce_ms and self.cache.lookup(context) is None:
                started = time.perf_counter()
                await asyncio.sleep(settings.debounce_ms / 1000)  # a newer request meanwhile stops this job
                record.debounce_ms = (time.perf_counter() - started) * 1000
            completion = await self._run(job, record, models, context, settings, self.cache)
            return Answer(completion.text if completion else "", context)

    async def infill(self, context: Context, request_id: Any, progress: Progress) -> Completion | None:
        """Regenerate `context.range` (command codila.infillSelection); None when stopped by the user."""
        if self.models is None:
            raise NotReady("the models are not loaded yet" if self.state == "loading"
                           else "the models failed to load (see the earlier message)")
        budget = self.settings.max_new_tokens

        def on_step(step: Any) -> None:  # model thread; progress hands it to the event loop
            done = budget - step.remaining
            progress.report(f"{done}/{budget} tokens", int(100 * done / budget))

        with self._job(None, request_id, "infillSelection", context.uri) as (job, record):
            record.describe(context)
            progress.on_cancel(lambda: job.stop("cancelled"))
            return await self._run(job, record, self.models, context, self.settings, None, on_step)

    async def _run(self, job: Job, record: Record, models: Any, context: Context, settings: ServerSettings,
                   cache: SuggestionCache | None, on_step: Callable[[Any], None] | None = None) -> Completion | None:
        """pipeline.complete on the model thread for `job`; None when the job was stopped first."""
        if job.stopped:
            record.outcome = job.reason
            return None
        loop = asyncio.get_running_loop()
        on_decode = lambda: loop.call_soon_threadsafe(self.ledger.count, "decodes_started")  # noqa: E731
        queued, completion = await self.worker.run(
            _unless_stopped, job, pipeline.complete, models, context, settings, cache=cache,
            cancel=job.stop_flag.is_set, on_step=on_step, on_decode=on_decode,
            on_done=lambda future: self._count(job, future))
        record.queue_ms = queued * 1000
        if completion is None or completion.outcome == "stopped":
            record.outcome = job.reason
            return None
        record.add(completion)
        record.outcome = completion.outcome
        return completion

    def _count(self, job: Job, future: asyncio.Future) -> None:
        """The end of a job on the model thread, counted even when its request was cancelled meanwhile."""
        if future.cancelled():  # the worker shut down before it ran
            return
        if (err := future.exception()) is not None:
            self.ledger.count("decodes_failed")
            log.error("completion failed (request %s)", job.request_id, exc_info=err)
            return
        _, completion = future.result()
        if completion is None or completion.outcome == "stopped":
            self.ledger.count("decodes_stopped")
        elif completion.outcome == "cache":
            self.ledger.count("cache_hits")
        elif completion.stats is not None:
            self.ledger.count("decodes_finished")

    def cancel_request(self, request_id: Any) -> None:
        """$/cancelRequest arrived for `request_id`: stop its decode before the next iteration."""
        if (job := self._jobs_by_request.get(request_id)) is not None:
            job.stop("cancelled")
        if (hook := self._cancel_hooks.get(request_id)) is not None:
            hook()

    @contextmanager
    def _job(self, uri: str | None, request_id: Any, method: str, doc_uri: str) -> Iterator[tuple[Job, Record]]:
        """A request's job and record, logged when it ends. A newer completion for the same document (`uri`;
        None for an infill) stops the older one; a cancelled task stops its job too."""
        self.ledger.count("requests")
        job, record = Job(request_id, uri or ""), Record(request_id, method, Path(doc_uri).name)
        if uri is not None:
            if (older := self._jobs_by_doc.get(uri)) is not None:
                older.stop("superseded")
            self._jobs_by_doc[uri] = job
        if request_id is not None:
            self._jobs_by_request[request_id] = job
        try:
            yield job, record
        except asyncio.CancelledError:  # $/cancelRequest: pygls cancelled the handler's task
            job.stop("cancelled")
            record.outcome = "cancelled"
            raise
        except Exception as err:
            record.outcome = "invalid" if isinstance(err, JsonRpcInvalidParams) else "error"
            record.error = f"{type(err).__name__}: {err}"
            raise
        finally:
            if self._jobs_by_doc.get(job.uri) is job:
                del self._jobs_by_doc[job.uri]
            self._jobs_by_request.pop(job.request_id, None)
            record.total_ms = (time.perf_counter() - job.arrived) * 1000
            record.server_ms = max(0.0, record.total_ms - record.debounce_ms - record.decode_ms)
            self.ledger.finish(record)
            if record.outcome in ("ok", "empty", "cache"):
                self._status(self.state, self._note(record))

    # ------------------------------------------------------------------ settings and models
    async def startup(self, initial: Any, pull: Callable[[], Awaitable[Any]]) -> None:
        """Validate the first settings (initializationOptions, then the pulled section), then load the models."""
        self._status("loading", "starting: reading the settings")
        settings, problems = merge(ServerSettings(), initial)
        settings, pulled_problems = merge(settings, await pull())
        self.settings = settings
        self._apply_log_level()
        self._report_problems(problems + pulled_problems)
        log.info("settings: %s", json.dumps(settings.to_lsp()))
        self._ready.set()
        await self.load()

    async def apply_settings(self, section: Any) -> None:
        """A workspace/didChangeConfiguration: merge, tell the user what was refused, reload when needed."""
        await self._ready.wait()
        old = self.settings
        new, problems = merge(old, section)
        self._report_problems(problems)
        if new == old:
            return
        self.settings = new
        log.info("settings changed: %s", json.dumps({k: v for k, v in new.to_lsp().items() if old.to_lsp()[k] != v}))
        self.cache.forget()
        self._apply_log_level()
        if (new.dlm_path, new.ar_path) != (old.dlm_path, old.ar_path):
            self.trained_ar = None
        if new.model_key != old.model_key:
            await self.load()

    async def load(self) -> None:
        """(Re)load the models on the worker with work-done progress; a failure is shown, the server keeps on."""
        self._load_generation += 1
        generation = self._load_generation
        settings, trained_ar = self.settings, self.trained_ar
        names = f"{settings.dlm_path or 'the default DLM'} + {trained_ar or settings.ar_path or 'the default AR'}"
        self.models = None  # release the old pair before the new one is read (GPU memory)
        self.cache.forget()
        self._status("loading", f"loading {names}")
        started = time.perf_counter()
        async with self.editor.progress("CoDiLA: loading models", cancellable=False) as progress:
            progress.report(f"{names} on {settings.device}")
            try:
                _, models = await self.worker.run(_load_models, settings, trained_ar, self.threads)
            except Exception as err:  # a bad folder, no CUDA, out of memory: tell the user, keep serving
                log.exception("loading the models failed")
                if generation == self._load_generation:
                    self._status("error", f"loading the models failed: {err}")
                    self.editor.message("error", f"CoDiLA: loading the models failed: {err}")
                return
        if generation != self._load_generation:
            return  # a newer load was asked for while this one ran; it will report
        self.models = models
        self.ledger.count("loads")
        self._status("ready", f"models loaded in {time.perf_counter() - started:.1f} s ({names})")

    async def train(self, options: TrainOptions, progress: Progress, request_id: Any = None) -> str:
        """Fine-tune the AR on the workspace in a subprocess (lsp_server.training_job), then switch to it."""
        if self.training is not None:
            raise RuntimeError("a training run is already going on")
        await self._ready.wait()
        _, (dlm, ar) = await self.worker.run(_model_paths, self.settings, self.trained_ar)
        run = TrainingRun(options, dlm=dlm, ar=ar, device=self.settings.device)
        self.training = run
        progress.on_cancel(run.cancel)
        self._cancel_hooks[request_id] = run.cancel

        def on_progress(row: dict[str, Any]) -> None:
            message = describe_progress(row)
            progress.report(message, int(100 * row["step"] / max(row["total_steps"], 1)))
            self._status("training", message)

        self._status("training", f"training on {len(options.folders)} folder(s)")
        try:
            output = await run.run(on_progress)
        finally:
            self.training = None
            self._cancel_hooks.pop(request_id, None)
            self._status(self.state, "training ended")
        self.trained_ar = output
        await self.load()
        return output

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict[str, Any]:
        """codila/debugStats: the ledger's counters and records, the state, settings and jobs."""
        return {
            "state": self.state,
            **self.ledger.snapshot(),
            "activeJobs": len(self._jobs_by_request),
            "training": self.training is not None,
            "trainedAr": self.trained_ar,
            "settings": self.settings.to_lsp() if self.settings else None,
            "decodeConfig": dataclasses.asdict(self.settings.decode_config()) if self.settings else None,
        }

    def close(self) -> None:
        for job in list(self._jobs_by_request.values()):
            job.stop("shutdown")
        if self.training is not None:
            self.training.cancel()
        self.worker.close()

    def _status(self, state: str, message: str) -> None:
        if state != "training":
            self.state = state
        shown = "training" if self.training is not None else state
        self.editor.status(shown, message, self.ledger.last_latency_ms)

    def _note(self, record: Record) -> str:
        checked = self.settings.syntax_check != "off"
        if checked and record.verify == "unverified" and record.language not in self._unverified_languages:
            self._unverified_languages.add(record.language)
            log.info("syntax check unavailable for %s: completions pass unverified", record.doc)
        return status_note(record, checked)

    def _report_problems(self, problems: list[str]) -> None:
        for problem in problems:
            log.warning("setting refused: %s", problem)
        if problems:
            self.editor.message("warning", "CoDiLA settings: " + "; ".join(problems))

    def _apply_log_level(self) -> None:
        logging.getLogger().setLevel(self.settings.log_level.upper())


def _unless_stopped(job: Job, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Model thread: fn(...), unless the job was stopped while it waited in the queue (then None)."""
    return None if job.stopped else fn(*args, **kwargs)


def _load_models(settings: ServerSettings, trained_ar: str | None, threads: int) -> Any:
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
