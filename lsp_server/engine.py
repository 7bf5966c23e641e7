"""The coordinator between the LSP handlers and the product (lsp_server.pipeline): which request runs when, on
which settings and models. The handlers call Engine; Engine hands the work to its parts:

    requests   lsp_server.jobs.Scheduler      each request's bookkeeping (Request), per-document supersede, cancel
    worker     lsp_server.worker.ModelWorker  the one model thread: run_pipeline(CompletionJob), load_models
    lifecycle  lsp_server.lifecycle           the settings and the models they name: startup, changes, loading
    status     lsp_server.editor.StatusBar    the codila/status line

One completion, as Engine.complete reads: open the request (stopping the document's older one) -> the context
at the cursor -> not ready? answer empty -> the debounce -> pipeline.complete on the model thread -> the answer;
the request's record is logged as it closes.

Concurrency: ONE model thread runs everything that touches a model (loading, the pipeline), one job at a time;
the event loop never waits on it except through `await`. Bookkeeping (records, counters, status) happens on the
event loop only. The decoder (and torch) is imported on the model thread when the models load, so the server
answers `initialize` at once; requests before the models are ready answer empty.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from lsprotocol import types
from pygls.workspace import TextDocument

from lsp_server import text
from lsp_server.editor import Editor, Progress, StatusBar
from lsp_server.jobs import Scheduler
from lsp_server.lifecycle import ModelLifecycle
from lsp_server.pipeline import Completion, SuggestionCache
from lsp_server.records import Ledger
from lsp_server.text import Context
from lsp_server.training_job import TrainingRun, TrainOptions, describe_progress
from lsp_server.worker import CompletionJob, ModelWorker

if TYPE_CHECKING:  # the real name imports torch: only type checkers read it
    from decoding import StepInfo


class NotReady(RuntimeError):
    """The models are not loaded (loading, or the last load failed)."""


@dataclass(frozen=True)
class Answer:
    """A completion request's answer: the text ("" = none) and where it goes (context.position: the cursor,
    clamped to its line)."""

    text: str
    context: Context


class Engine:
    """One server's coordinator (see the module docstring); the completions themselves are lsp_server.pipeline's."""

    def __init__(self, editor: Editor) -> None:
        self.ledger = Ledger()
        self.cache = SuggestionCache()
        self.worker = ModelWorker()
        self.status = StatusBar(editor, self.ledger)
        self.requests = Scheduler(self.ledger, self.status)
        self.lifecycle = ModelLifecycle(editor, self.status, self.worker, self.cache, self.ledger)
        self.training: TrainingRun | None = None

    # ------------------------------------------------------------------ requests
    async def complete(self, doc: TextDocument, position: types.Position, request_id: Any, method: str,
                       invoked: bool) -> Answer:
        """The completion at `position` (UTF-16) in `doc`; its text is "" when there is none to offer."""
        with self.requests.open(request_id, method, doc.uri, per_document=True) as request:
            context = text.context_at(doc, position)
            settings, models = self.lifecycle.settings, self.lifecycle.models
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
        settings, models = self.lifecycle.settings, self.lifecycle.models
        if settings is None or models is None:
            raise NotReady(self.lifecycle.not_ready_reason())
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

    # ------------------------------------------------------------------ settings, models, training
    async def startup(self, initial: Any, pull: Callable[[], Awaitable[Any]]) -> None:
        """The first settings (initializationOptions, then the pulled section), then the models."""
        await self.lifecycle.startup(initial, pull)

    async def apply_settings(self, section: Any) -> None:
        """A workspace/didChangeConfiguration: a bad value keeps the last good one; a model change reloads."""
        await self.lifecycle.apply_settings(section)

    async def train(self, options: TrainOptions, progress: Progress, request_id: Any = None) -> str:
        """Fine-tune the AR on the workspace in a subprocess (lsp_server.training_job), then switch to it."""
        if self.training is not None:
            raise RuntimeError("a training run is already going on")
        dlm, ar = await self.lifecycle.model_paths()
        run = TrainingRun(options, dlm=dlm, ar=ar, device=self.lifecycle.settings.device)
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
        await self.lifecycle.use_trained(output)
        return output

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict[str, Any]:
        """codila/debugStats: the ledger's counters and records, the state, settings and requests in flight."""
        settings = self.lifecycle.settings
        return {
            "state": self.status.state,
            **self.ledger.snapshot(),
            "activeJobs": self.requests.active,
            "training": self.training is not None,
            "trainedAr": self.lifecycle.trained_ar,
            "settings": settings.to_lsp() if settings else None,
            "decodeConfig": dataclasses.asdict(settings.decode_config()) if settings else None,
        }

    def close(self) -> None:
        self.requests.stop_all("shutdown")
        if self.training is not None:
            self.training.cancel()
        self.worker.close()
