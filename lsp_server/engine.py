"""The one adapter between the language server and the decoder.

    complete(context):  cache (is the user typing into the last suggestion?) -> debounce -> model worker:
                        window -> decoding.infill -> tidy -> verify.check_insertion -> text
    infill(context):    the same pipeline for a selected range, with step progress
    load() / apply_settings() / train():  models and settings, changed in the background

Concurrency: ONE model worker thread runs everything that touches a model (loading, decoding, verifying),
one job at a time. The event loop never waits on it except through `await`. A newer completion request for
a document stops the older one (queued or running: it answers empty); `$/cancelRequest` sets the job's stop
flag, which the decoder checks before every iteration. `decoding` (and torch) is imported on the worker
thread, so the server answers `initialize` at once and requests before the models are ready answer empty.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.workspace import TextDocument

from verify import check_insertion

from lsp_server import text as text_stages
from lsp_server.settings import MODEL_FIELDS, ServerSettings, merge
from lsp_server.text import Context
from lsp_server.training_job import TrainingRun, TrainOptions

log = logging.getLogger("lsp_server.engine")
request_log = logging.getLogger("lsp_server.requests")

RECENT_REQUESTS = 256  # request records kept for codila/debugStats


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
    """One request's claim on the model worker, with its stop flag (read by the decoder every iteration)."""

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


@dataclass
class Record:
    """The one structured log line of a request (JSON on `lsp_server.requests`); also kept for debugStats.

    server_ms is the server's own overhead: total - debounce - decode (the decoder call itself).
    """

    request: Any
    method: str
    doc: str
    outcome: str = "pending"
    language: str | None = None
    prefix_chars: int = 0
    suffix_chars: int = 0
    debounce_ms: float = 0.0
    queue_ms: float = 0.0
    decode_ms: float = 0.0
    dlm_ms: float = 0.0
    ar_ms: float = 0.0
    decoder_other_ms: float = 0.0
    tidy_ms: float = 0.0
    verify_ms: float = 0.0
    verify: str | None = None
    server_ms: float = 0.0
    total_ms: float = 0.0
    forwards: int = 0
    ar_calls: int = 0
    iterations: int = 0
    tokens: int = 0
    tokens_per_step: float = 0.0
    deadline_hit: bool = False
    chars: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {_camel(k): (round(v, 2) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class Completion:
    text: str
    context: Context  # where it goes: context.position is the cursor, clamped to its line


@dataclass(frozen=True)
class Decoded:
    text: str
    status: str  # verify status: ok | trimmed | rejected | unverified


class SuggestionCache:
    """The last suggestions per document. Typing the next characters of one is answered from here.

    An entry remembers the cursor's surroundings by length and a stretch of text on each side, not the whole
    document: a hit needs the same suffix and a prefix that extends the old one by a start of the suggestion.
    """

    KEEP = 4  # entries per document
    EDGE = 2048  # characters compared on each side

    def __init__(self) -> None:
        self._entries: dict[str, deque[tuple[int, str, int, str, str]]] = {}

    def store(self, context: Context, text: str) -> None:
        if text:
            entry = (len(context.prefix), context.prefix[-self.EDGE:], len(context.suffix),
                     context.suffix[: self.EDGE], text)
            self._entries.setdefault(context.uri, deque(maxlen=self.KEEP)).append(entry)

    def lookup(self, context: Context) -> str | None:
        """The rest of a stored suggestion the user is typing through, or None."""
        prefix, suffix = context.prefix, context.suffix
        for prefix_len, prefix_tail, suffix_len, suffix_head, suggestion in reversed(self._entries.get(context.uri, ())):
            typed = prefix[prefix_len:]
            if (len(suffix) == suffix_len and len(prefix) >= prefix_len and len(typed) < len(suggestion)
                    and suggestion.startswith(typed) and suffix.startswith(suffix_head)
                    and prefix[prefix_len - len(prefix_tail): prefix_len] == prefix_tail):
                return suggestion[len(typed):]
        return None

    def forget(self, uri: str | None = None) -> None:
        if uri is None:
            self._entries.clear()
        else:
            self._entries.pop(uri, None)


class ModelWorker:
    """The single thread that runs models. `run` awaits a function run there; calls run in order."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codila-model")

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wrap_future(self._pool.submit(fn, *args))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Engine:
    """Models, settings and the completion pipeline of one server."""

    def __init__(self, editor: Editor) -> None:
        self.editor = editor
        self.worker = ModelWorker()
        self.cache = SuggestionCache()
        self.settings: ServerSettings | None = None  # None until startup() has validated the first settings
        self.models: Any = None  # decoding.ModelPair once loaded
        self.state = "loading"
        self.trained_ar: str | None = None  # set by train(): used instead of settings.ar_path until that changes
        self.training: TrainingRun | None = None
        self.threads = 0  # torch CPU threads (python -m lsp_server --threads); 0 = torch's default
        self.last_latency_ms: float | None = None
        self.counters = dict(requests=0, cache_hits=0, decodes_started=0, decodes_finished=0,
                             decodes_stopped=0, decodes_failed=0, loads=0)
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_REQUESTS)
        self.last_context: Context | None = None
        self._ready = asyncio.Event()  # set once the first settings are validated (decoding imported)
        self._jobs_by_doc: dict[str, Job] = {}
        self._jobs_by_request: dict[Any, Job] = {}
        self._cancel_hooks: dict[Any, Callable[[], None]] = {}  # request id -> stop a training run
        self._load_generation = 0
        self._unverified_languages: set[str] = set()

    # ------------------------------------------------------------------ settings and models
    async def startup(self, initial: Any, pull: Callable[[], Awaitable[Any]]) -> None:
        """Validate the first settings (imports decoding on the worker), then load the models."""
        self._status("loading", "starting: importing the decoder")
        settings = await self.worker.run(self._import_decoder)
        settings, problems = merge(settings, initial)
        settings, pulled_problems = merge(settings, await pull())
        self.settings = settings
        self._apply_log_level()
        self._report_problems(problems + pulled_problems)
        log.info("settings: %s", json.dumps(settings.to_lsp()))
        self._ready.set()
        await self.load()

    def _import_decoder(self) -> ServerSettings:
        """Worker thread: the first validation imports decoding and torch; set torch's thread count."""
        settings = ServerSettings()
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        return settings

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
        settings = self.settings
        paths = self._model_paths(settings)
        self.models = None  # release the old pair before the new one is read (GPU memory)
        self.cache.forget()
        self._status("loading", f"loading {paths[0]} + {paths[1]}")
        started = time.perf_counter()
        async with self.editor.progress("CoDiLA: loading models", cancellable=False) as progress:
            progress.report(f"{Path(paths[0]).name} + {Path(paths[1]).name} on {settings.device}")
            try:
                models = await self.worker.run(_load_models, settings, self.trained_ar)
            except Exception as err:  # a bad folder, no CUDA, out of memory: tell the user, keep serving
                log.exception("loading the models failed")
                if generation == self._load_generation:
                    self._status("error", f"loading the models failed: {err}")
                    self.editor.message("error", f"CoDiLA: loading the models failed: {err}")
                return
        if generation != self._load_generation:
            return  # a newer load was asked for while this one ran; it will report
        self.models = models
        self.counters["loads"] += 1
        self._status("ready", f"models loaded in {time.perf_counter() - started:.1f} s ({paths[1]})")

    def _model_paths(self, settings: ServerSettings) -> tuple[str, str]:
        default = Path(__file__).resolve().parent.parent / "decoding" / "default_model"
        return (settings.dlm_path or str(default / "dlm"),
                self.trained_ar or settings.ar_path or str(default / "ar"))

    # ------------------------------------------------------------------ completion
    async def complete(self, doc: TextDocument, position: types.Position, request_id: Any, method: str,
                       invoked: bool) -> Completion:
        """The completion at `position` (UTF-16) in `doc`; its text is "" when there is none to offer."""
        job = self._open_job(doc.uri, request_id)
        record = Record(request_id, method, Path(doc.uri).name)
        try:
            context = text_stages.context_at(doc, position)
            record.language, record.prefix_chars, record.suffix_chars = (
                context.language, len(context.prefix), len(context.suffix))
            text = await self._complete(job, context, invoked, record)
            record.chars = len(text)
            return Completion(text, context)
        except asyncio.CancelledError:  # $/cancelRequest: pygls cancelled this task; stop the decode too
            job.stop("cancelled")
            record.outcome = "cancelled"
            raise
        except Exception as err:
            record.outcome = "invalid" if isinstance(err, JsonRpcInvalidParams) else "error"
            record.error = f"{type(err).__name__}: {err}"
            raise
        finally:
            self._close_job(job, record)

    async def _complete(self, job: Job, context: Context, invoked: bool, record: Record) -> str:
        self.last_context = context
        if (rest := self.cache.lookup(context)) is not None:
            self.counters["cache_hits"] += 1
            record.outcome = "cache"
            return rest
        if text_stages.looks_binary(context.prefix[-4096:] + context.suffix[:4096]):
            record.outcome = "binary"
            return ""
        if self.models is None:
            record.outcome = "not_ready"
            return ""
        settings, models = self.settings, self.models
        if not invoked and settings.debounce_ms:
            started = time.perf_counter()
            await asyncio.sleep(settings.debounce_ms / 1000)
            record.debounce_ms = (time.perf_counter() - started) * 1000
        if job.stopped:
            record.outcome = job.reason
            return ""
        decoded = await self.worker.run(self._decode, job, context, models, settings, record, None)
        if decoded is None:
            record.outcome = job.reason
            return ""
        self.cache.store(context, decoded.text)
        record.outcome = "ok" if decoded.text else "empty"
        return decoded.text

    async def infill(self, context: Context, request_id: Any, progress: Progress) -> Decoded | None:
        """Regenerate `context.range` (command codila.infillSelection); None when stopped by the user."""
        if self.models is None:
            raise NotReady("the models are not loaded yet" if self.state == "loading"
                           else "the models failed to load (see the earlier message)")
        record = Record(request_id, "infillSelection", Path(context.uri).name, language=context.language,
                        prefix_chars=len(context.prefix), suffix_chars=len(context.suffix))
        job = self._open_job(None, request_id)
        progress.on_cancel(lambda: job.stop("cancelled"))
        budget = self.settings.max_new_tokens

        def on_step(step: Any) -> None:  # worker thread
            done = budget - step.remaining
            progress.report(f"{done}/{budget} tokens", int(100 * done / budget))

        try:
            decoded = await self.worker.run(self._decode, job, context, self.models, self.settings, record, on_step)
            record.outcome = job.reason if decoded is None else "ok"
            return decoded
        except asyncio.CancelledError:
            job.stop("cancelled")
            record.outcome = "cancelled"
            raise
        except Exception as err:
            record.outcome, record.error = "error", f"{type(err).__name__}: {err}"
            raise
        finally:
            self._close_job(job, record)

    def _decode(self, job: Job, context: Context, models: Any, settings: ServerSettings, record: Record,
                on_step: Callable[[Any], None] | None) -> Decoded | None:
        """Worker thread: window -> decoding.infill -> tidy -> verify. None when the job was stopped."""
        from decoding import Cancelled, infill

        record.queue_ms = (time.perf_counter() - job.arrived) * 1000 - record.debounce_ms
        if job.stopped:
            self.counters["decodes_stopped"] += 1
            return None
        self.counters["decodes_started"] += 1
        prefix, suffix, prefix_tokens, suffix_tokens = text_stages.window(context, _context_budget(models, settings))
        started = time.perf_counter()
        try:
            result = infill(models, prefix, suffix, settings.decode_config(), max_prefix_tokens=prefix_tokens,
                            max_suffix_tokens=suffix_tokens, cancel=job.stop_flag.is_set, on_step=on_step)
        except Cancelled:
            self.counters["decodes_stopped"] += 1
            return None
        except Exception:
            self.counters["decodes_failed"] += 1
            log.exception("decoding failed (request %s)", job.request_id)
            raise
        finally:
            record.decode_ms = (time.perf_counter() - started) * 1000
        self.counters["decodes_finished"] += 1
        _add_stats(record, result.stats.as_dict())
        started = time.perf_counter()
        tidied = text_stages.tidy(result.text, context)
        record.tidy_ms = (time.perf_counter() - started) * 1000
        verdict = check_insertion(context.prefix, tidied, context.suffix, context.language, settings.syntax_check)
        record.verify, record.verify_ms = verdict.status, verdict.millis
        return Decoded(verdict.text, verdict.status)

    # ------------------------------------------------------------------ jobs: supersede and cancel
    def _open_job(self, uri: str | None, request_id: Any) -> Job:
        """A job for a request; a newer completion for the same document stops the older one."""
        self.counters["requests"] += 1
        job = Job(request_id, uri or "")
        if uri is not None:
            if (older := self._jobs_by_doc.get(uri)) is not None:
                older.stop("superseded")
            self._jobs_by_doc[uri] = job
        if request_id is not None:
            self._jobs_by_request[request_id] = job
        return job

    def _close_job(self, job: Job, record: Record) -> None:
        if self._jobs_by_doc.get(job.uri) is job:
            del self._jobs_by_doc[job.uri]
        self._jobs_by_request.pop(job.request_id, None)
        record.total_ms = (time.perf_counter() - job.arrived) * 1000
        record.server_ms = max(0.0, record.total_ms - record.debounce_ms - record.decode_ms)
        self.recent.append(record.as_dict())
        request_log.info("%s", json.dumps(record.as_dict()))
        if record.outcome in ("ok", "empty", "cache"):
            self.last_latency_ms = record.total_ms
            self._status(self.state, self._verification_note(record), self.last_latency_ms)

    def cancel_request(self, request_id: Any) -> None:
        """$/cancelRequest arrived for `request_id`: stop its decode before the next iteration."""
        if (job := self._jobs_by_request.get(request_id)) is not None:
            job.stop("cancelled")
        if (hook := self._cancel_hooks.get(request_id)) is not None:
            hook()

    # ------------------------------------------------------------------ training
    async def train(self, options: TrainOptions, progress: Progress, request_id: Any = None) -> str:
        """Fine-tune the AR on the workspace in a subprocess, then switch to it without a restart."""
        if self.training is not None:
            raise RuntimeError("a training run is already going on")
        await self._ready.wait()
        dlm, ar = self._model_paths(self.settings)
        run = TrainingRun(options, dlm=dlm, ar=ar, device=self.settings.device)
        self.training = run
        progress.on_cancel(run.cancel)
        self._cancel_hooks[request_id] = run.cancel

        def on_progress(row: dict[str, Any]) -> None:
            message = _training_message(row)
            progress.report(message, int(100 * row["step"] / max(row["total_steps"], 1)))
            self._status("training", message, self.last_latency_ms)

        self._status("training", f"training on {len(options.folders)} folder(s)", self.last_latency_ms)
        try:
            output = await run.run(on_progress)
        finally:
            self.training = None
            self._cancel_hooks.pop(request_id, None)
            self._status(self.state, "training ended", self.last_latency_ms)
        self.trained_ar = output
        await self.load()
        return output

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict[str, Any]:
        """codila/debugStats: threads, memory, counters, the last request's context, recent request records."""
        context = self.last_context
        return {
            "state": self.state,
            "threads": threading.active_count(),
            "threadNames": sorted(t.name for t in threading.enumerate()),
            "osThreads": _os_threads(),
            "rssBytes": _rss_bytes(),
            **{_camel(k): v for k, v in self.counters.items()},
            "activeJobs": len(self._jobs_by_request),
            "lastLatencyMs": self.last_latency_ms,
            "training": self.training is not None,
            "trainedAr": self.trained_ar,
            "settings": self.settings.to_lsp() if self.settings else None,
            "decodeConfig": dataclasses.asdict(self.settings.decode_config()) if self.settings else None,
            "lastContext": None if context is None else {
                "uri": context.uri, "language": context.language, "prefixTail": context.prefix[-40:],
                "suffixHead": context.suffix[:40], "line": context.position.line,
                "character": context.position.character},
            "recent": list(self.recent),
        }

    def close(self) -> None:
        for job in list(self._jobs_by_request.values()):
            job.stop("shutdown")
        if self.training is not None:
            self.training.cancel()
        self.worker.close()

    def _status(self, state: str, message: str, last_latency_ms: float | None = None) -> None:
        if state != "training":
            self.state = state
        shown = "training" if self.training is not None else state
        self.editor.status(shown, message, last_latency_ms if last_latency_ms is not None else self.last_latency_ms)

    def _verification_note(self, record: Record) -> str:
        if record.outcome == "cache":
            return "completion from the suggestion being typed"
        note = f"{record.tokens} tokens in {record.iterations} steps"
        if record.verify == "unverified" and self.settings.syntax_check != "off":
            language = record.language or "this language"
            if language not in self._unverified_languages:
                self._unverified_languages.add(language)
                log.info("syntax check unavailable for %s: completions pass unverified", record.doc)
            return f"{note}; syntax not checked (no grammar for {record.doc})"
        return f"{note}; syntax {record.verify}" if record.verify else note

    def _report_problems(self, problems: list[str]) -> None:
        for problem in problems:
            log.warning("setting refused: %s", problem)
        if problems:
            self.editor.message("warning", "CoDiLA settings: " + "; ".join(problems))

    def _apply_log_level(self) -> None:
        logging.getLogger().setLevel(self.settings.log_level.upper())


def _load_models(settings: ServerSettings, trained_ar: str | None) -> Any:
    """Worker thread: decoding.load_models with the settings' paths (None = the shipped default model)."""
    from decoding import load_models

    return load_models(settings.dlm_path, trained_ar or settings.ar_path, device=settings.device,
                       dtype=settings.dtype, trust_remote_code=settings.trust_remote_code,
                       ar_backend=settings.ar_backend)


def _context_budget(models: Any, settings: ServerSettings) -> int:
    """contextTokens, shrunk so that prefix + masked middle + suffix fits the DLM's positions."""
    positions = getattr(models.dlm.model.config, "max_position_embeddings", None) or 1 << 30
    budget = min(settings.context_tokens, positions - settings.max_new_tokens)
    if budget < 0:
        raise ValueError(f"maxNewTokens {settings.max_new_tokens} is more than the model's {positions} positions")
    return budget


def _add_stats(record: Record, stats: dict[str, Any]) -> None:
    record.dlm_ms = stats["dlm_seconds"] * 1000
    record.ar_ms = stats["ar_seconds"] * 1000
    record.decoder_other_ms = stats["other_seconds"] * 1000
    record.forwards = stats["dlm_forwards"]
    record.ar_calls = stats["ar_calls"]
    record.iterations = stats["iterations"]
    record.tokens = stats["tokens"]
    record.tokens_per_step = stats["tokens"] / max(stats["iterations"], 1)
    record.deadline_hit = bool(stats.get("deadline_hit", False))


def _training_message(row: dict[str, Any]) -> str:
    eta = row.get("eta_s") or 0
    return (f"step {row['step']}/{row['total_steps']}, loss {row['loss']:.3f}, "
            f"ETA {int(eta // 60)}m{int(eta % 60):02d}s")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _os_threads() -> int | None:
    """Threads of this process as the OS counts them (torch's native pools included); None off Linux."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None

