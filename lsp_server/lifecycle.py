"""The settings and the models they name: validated as they arrive, loaded on the model thread, reloaded when a
model setting changes or a training run makes a new AR.

    startup(initial, pull)    the first settings (initializationOptions, then the pulled section), then load()
    apply_settings(section)   workspace/didChangeConfiguration: merge, tell what was refused, reload when needed
    load()                    (re)load the models with work-done progress; a failure is shown, the server keeps on
    use_trained(ar)           complete with the AR a training run made, until a model folder setting changes
    model_paths()             the DLM and AR folders in use (what a training run starts from)

A bad value is refused by name and the last good one stays (lsp_server.settings.merge). `models` is None while
they load and after a failed load: requests meanwhile answer empty.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from lsp_server.editor import Editor, StatusBar
from lsp_server.pipeline import SuggestionCache
from lsp_server.records import Ledger
from lsp_server.settings import ServerSettings, merge
from lsp_server.worker import ModelWorker

if TYPE_CHECKING:  # the real name imports torch: only type checkers read it
    from decoding import ModelPair

log = logging.getLogger("lsp_server.lifecycle")


class ModelLifecycle:
    """One server's settings and models (see the module docstring)."""

    def __init__(self, editor: Editor, status: StatusBar, worker: ModelWorker, cache: SuggestionCache,
                 ledger: Ledger) -> None:
        self.editor, self.status, self.worker, self.cache, self.ledger = editor, status, worker, cache, ledger
        self.settings: ServerSettings | None = None  # None until startup() has validated the first settings
        self.models: ModelPair | None = None  # None while loading, and after a failed load
        self.trained_ar: str | None = None  # set by use_trained(): instead of settings.ar_path until that changes
        self.threads = 0  # torch CPU threads (python -m lsp_server --threads); 0 = torch's default
        self._ready = asyncio.Event()  # set once the first settings are validated
        self._generation = 0  # of the latest load(): an older one that ends later is dropped

    def not_ready_reason(self) -> str:
        """Why `models` is None, for the user."""
        return ("the models are not loaded yet" if self.status.state == "loading"
                else "the models failed to load (see the earlier message)")

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
        self._generation += 1
        generation = self._generation
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
                if generation == self._generation:
                    self.status.show(f"loading the models failed: {err}", state="error")
                    self.editor.message("error", f"CoDiLA: loading the models failed: {err}")
                return
        if generation != self._generation:
            return  # a newer load was asked for while this one ran; it will report
        self.models = models
        self.ledger.count("loads")
        self.status.show(f"models loaded in {time.perf_counter() - started:.1f} s ({names})", state="ready")

    async def use_trained(self, ar: str) -> None:
        """Complete with the AR folder a training run made (kept until dlmPath or arPath changes)."""
        self.trained_ar = ar
        await self.load()

    async def model_paths(self) -> tuple[str, str]:
        """The DLM and AR folders in use, once the first settings are validated."""
        await self._ready.wait()
        return await self.worker.model_paths(self.settings, self.trained_ar)

    def _report_problems(self, problems: list[str]) -> None:
        for problem in problems:
            log.warning("setting refused: %s", problem)
        if problems:
            self.editor.message("warning", "CoDiLA settings: " + "; ".join(problems))

    def _apply_log_level(self) -> None:
        logging.getLogger().setLevel(self.settings.log_level.upper())
