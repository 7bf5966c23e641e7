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
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from lsprotocol import types
from pygls.workspace import TextDocument

from lsp_server import text
from lsp_server.editor import Editor, Progress, StatusBar
from lsp_server.jobs import Scheduler
from lsp_server.pipeline import Completion, SuggestionCache
from lsp_server.records import Ledger
from lsp_server.settings import ServerSettings, merge
from lsp_server.text import Context
from lsp_server.training_job import TrainingRun, TrainOptions, describe_progress
from lsp_server.worker import CompletionJob, ModelWorker

if TYPE_CHECKING:  # the real names import torch: only type checkers read them
    from decoding import ModelPair, StepInfo

log = logging.getLogger("lsp_server.engine")


class NotReady(RuntimeError):
    """The models are not loaded (loading, or the last load failed)."""


@dataclass(frozen=True)
class Answer:
    """A completion request's answer: the text ("" = none) and where it goes (context.position: the cursor,
    clamped to its line)."""

    text: str
    context: Context


class Engine:
    """Settings, models and requests of one server; the completions themselves are lsp_server.pipeline's."""

    def __init__(self, editor: Editor) -> None:
        self.editor = editor
        self.worker = ModelWorker()
        self.cache = SuggestionCache()
        self.ledger = Ledger()
        self.status = StatusBar(editor, self.ledger)
        self.requests = Scheduler(self.ledger, self.status)
        self.settings: ServerSettings | None = None  # None until startup() has validated the first settings
        self.models: ModelPair | None = None  # None while loading, and after a failed load
        self.trained_ar: str | None = None  # set by train(): used instead of settings.ar_path until that changes
        self.training: TrainingRun | None = None
        self.threads = 0  # torch CPU threads (python -m lsp_server --threads); 0 = torch's default
        self._ready = asyncio.Event()  # set once the first settings are validated
        self._load_generation = 0

    # ------------------------------------------------------------------ requests
    async def complete(self, doc: TextDocument, position: types.Position, request_id: Any, method: str,
                       invoked: bool) -> Answer:
        """The completion at `position` (UTF-16) in `doc`; its text is "" when there is none to offer."""
        with self.requests.open(request_id, method, doc.uri, per_document=True) as request:
            context = text.context_at(doc, position)
            settings, models = self.settings, self.models
            request.describe(context, settings)
            if settings is None or models is None:
                request.not_ready()
                return Answer("", context)
            if not invoked and settings.debounce_ms and self.cache.lookup(context) is None:
                await request.debounce(settings.debounce_ms)  # a newer request meanwhile stops this one
            job = CompletionJob(models, context, settings, self.cache, request.stop_flag)
            completion = request.ran(await self.worker.run_pipeline(job, request))
            return Answer(completion.text if completion else "", context)

    async def infill(self, context: Context, request_id: Any, progress: Progress) -> Completion | None:
        """Regenerate `context.range` (command codila.infillSelection); None when stopped by the user."""
        settings, models = self.settings, self.models
        if settings is None or models is None:
            raise NotReady("the models are not loaded yet" if self.status.state == "loading"
                           else "the models failed to load (see the earlier message)")
        budget = settings.max_new_tokens

        def on_step(step: StepInfo) -> None:  # model thread; progress hands it to the event loop
            done = budget - step.remaining
            progress.report(f"{done}/{budget} tokens", int(100 * done / budget))

        with self.requests.open(request_id, "infillSelection", context.uri, per_document=False) as request:
            request.describe(context, settings)
            progress.on_cancel(lambda: request.stop("cancelled"))
            job = CompletionJob(models, context, settings, None, request.stop_flag, on_step)
            return request.ran(await self.worker.run_pipeline(job, request))

    def cancel_request(self, request_id: Any) -> None:
        """$/cancelRequest arrived for `request_id`: stop its decode before the next step, or its training."""
        self.requests.cancel(request_id)

    # ------------------------------------------------------------------ settings and models
    async def startup(self, initial: Any, pull: Callable[[], Awaitable[Any]]) -> None:
        """Validate the first settings (initializationOptions, then the pulled section), then load the models."""
        self.status.show("starting: reading the settings", state="loading")
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
        self.status.show(f"loading {names}", state="loading")
        started = time.perf_counter()
        async with self.editor.progress("CoDiLA: loading models", cancellable=False) as progress:
            progress.report(f"{names} on {settings.device}")
            try:
                models = await self.worker.load_models(settings, trained_ar, self.threads)
            except Exception as err:  # a bad folder, no CUDA, out of memory: tell the user, keep serving
                log.exception("loading the models failed")
                if generation == self._load_generation:
                    self.status.show(f"loading the models failed: {err}", state="error")
                    self.editor.message("error", f"CoDiLA: loading the models failed: {err}")
                return
        if generation != self._load_generation:
            return  # a newer load was asked for while this one ran; it will report
        self.models = models
        self.ledger.count("loads")
        self.status.show(f"models loaded in {time.perf_counter() - started:.1f} s ({names})", state="ready")

    async def train(self, options: TrainOptions, progress: Progress, request_id: Any = None) -> str:
        """Fine-tune the AR on the workspace in a subprocess (lsp_server.training_job), then switch to it."""
        if self.training is not None:
            raise RuntimeError("a training run is already going on")
        await self._ready.wait()
        dlm, ar = await self.worker.model_paths(self.settings, self.trained_ar)
        run = TrainingRun(options, dlm=dlm, ar=ar, device=self.settings.device)
        self.training = run
        progress.on_cancel(run.cancel)

        def on_progress(row: dict[str, Any]) -> None:
            message = describe_progress(row)
            progress.report(message, int(100 * row["step"] / max(row["total_steps"], 1)))
            self.status.show(message)

        self.status.training = True
        self.status.show(f"training on {len(options.folders)} folder(s)")
        try:
            with self.requests.cancel_hook(request_id, run.cancel):
                output = await run.run(on_progress)
        finally:
            self.training = None
            self.status.training = False
            self.status.show("training ended")
        self.trained_ar = output
        await self.load()
        return output

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict[str, Any]:
        """codila/debugStats: the ledger's counters and records, the state, settings and requests in flight."""
        return {
            "state": self.status.state,
            **self.ledger.snapshot(),
            "activeJobs": self.requests.active,
            "training": self.training is not None,
            "trainedAr": self.trained_ar,
            "settings": self.settings.to_lsp() if self.settings else None,
            "decodeConfig": dataclasses.asdict(self.settings.decode_config()) if self.settings else None,
        }

    def close(self) -> None:
        self.requests.stop_all("shutdown")
        if self.training is not None:
            self.training.cancel()
        self.worker.close()

    def _report_problems(self, problems: list[str]) -> None:
        for problem in problems:
            log.warning("setting refused: %s", problem)
        if problems:
            self.editor.message("warning", "CoDiLA settings: " + "; ".join(problems))

    def _apply_log_level(self) -> None:
        logging.getLogger().setLevel(self.settings.log_level.upper())

