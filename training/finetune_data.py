"""What training.finetune trains on: instruction records and source files, as fine-tuning Examples.

Kinds of `--data` (`data_kind` decides, refusing what it does not know):
- instruction records: `.jsonl` files and `.parquet` shards (Ling-Coder-SFT: `data/train_000NN_of_00026.parquet`),
  given one by one or as a folder that holds them (and no source code beyond documentation). A record is a
  chat `messages` list of {role, content} (roles spelled `user`/`assistant` or `HUMAN`/`ASSISTANT`, any case)
  or two fields. The last assistant turn is the response, everything before it the prompt, rendered with the
  DLM tokenizer's chat template; the loss is on the response only.
- source files: a folder (or one file) of code, cut into editor-shaped spans afresh for every sample.
- `stdlib`: the training split of the Python standard library, less its dev files.

Instruction records are tokenised once into a cache folder (`TokenizedRecords`: one flat uint32 token file and
an index, memory-mapped), keyed by the data files, the tokenizer and the field names: 300k records cost a few
hundred MB on disk and next to nothing in RAM, and every rank, resume and block size reuses the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from training.corpus import SKIPPED_DIRS, SOURCE_SUFFIXES, read_text, source_files, stdlib_files
from training.data import Example, infill_sequence, pad_response, sample_infill

log = logging.getLogger("training.finetune")

INSTRUCTION_SUFFIXES = (".jsonl", ".parquet")
DOC_SUFFIXES = (".md",)  # a dataset folder's README does not make it a folder of source code
CHARS_PER_SOURCE_ITEM = 2000  # a source file yields one sample per this many characters, per epoch
ROLES = {"user": "user", "human": "user", "system": "system", "assistant": "assistant", "gpt": "assistant"}
CACHE_FORMAT = 1  # bump when the cache layout or the rendering changes
ROWS_PER_BATCH = 512  # records rendered and tokenised together while building a cache


@dataclass(frozen=True)
class Fields:
    """Where a record keeps its text: a chat list (`messages`), else an instruction and a response field."""

    messages: str = "messages"
    instruction: str = "instruction"
    response: str = "output"


# ----------------------------------------------------------------------------------------------------------
# What a --data argument is

def data_kind(spec: str) -> tuple[str, list[Path]]:
    """("stdlib" | "instructions" | "source", files) for one --data argument; ValueError for what is not known."""
    if spec == "stdlib":
        return "stdlib", []
    path = Path(spec).expanduser()
    if not path.exists():
        raise ValueError(f"--data {spec}: no such file or folder")
    if path.is_file():
        if path.suffix in INSTRUCTION_SUFFIXES:
            return "instructions", [path]
        if path.suffix in SOURCE_SUFFIXES:
            return "source", [path]
        raise ValueError(f"--data {spec}: unknown file type {path.suffix or '(none)'!r}; give a .jsonl or .parquet "
                         f"file of instruction records, a source file ({', '.join(SOURCE_SUFFIXES)}), a folder, "
                         "or 'stdlib'")
    records = _files_under(path, INSTRUCTION_SUFFIXES)
    code = [f for f in _files_under(path, SOURCE_SUFFIXES) if f.suffix not in DOC_SUFFIXES]
    if records and not code:
        return "instructions", records
    if records:
        log.info("%s: a folder of source code; its %d .jsonl/.parquet files are not read (pass them as --data "
                 "to train on them)", path, len(records))
    return "source", source_files(path)


def _files_under(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return [f for f in sorted(folder.rglob("*")) if f.is_file() and f.suffix in suffixes
            and not SKIPPED_DIRS.intersection(f.relative_to(folder).parts[:-1])
            and not any(part.startswith(".") for part in f.relative_to(folder).parts)]


# ----------------------------------------------------------------------------------------------------------
# Reading and rendering instruction records

def read_rows(path: Path, fields: Fields) -> Iterator[tuple[str, dict]]:
    """(where, row) for every record of a .jsonl file or a .parquet shard, streamed (a shard is read in batches
    of its needed columns only)."""
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield f"{path}:{n}", json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}:{n}: not JSON: {err}") from None
        return
    import pyarrow.parquet as pq  # imported here: only parquet data needs it

    shard = pq.ParquetFile(path)
    names = shard.schema_arrow.names
    columns = [fields.messages] if fields.messages in names else [c for c in (fields.instruction, fields.response) if c in names]
    if fields.messages not in names and len(columns) < 2:
        raise ValueError(f"{path}: needs a {fields.messages!r} column, or {fields.instruction!r} and "
                         f"{fields.response!r}; it has {names}")
    n = 0
    for batch in shard.iter_batches(batch_size=ROWS_PER_BATCH, columns=columns):
        for row in batch.to_pylist():
            n += 1
            yield f"{path}:row {n}", row


def split_turns(row: dict, fields: Fields, where: str) -> tuple[list[dict], str]:
    """(prompt messages with roles user/assistant/system, response text) of one record.

    The response is the last assistant turn; every message before it is the prompt; anything after it (a
    trailing user turn of a dump) is dropped.
    """
    if not isinstance(row, dict):
        raise ValueError(f"{where}: each record must be a JSON object")
    if row.get(fields.messages) is not None:
        messages = row[fields.messages]
        if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                     and isinstance(m.get("role"), str) for m in messages):
            raise ValueError(f"{where}: {fields.messages!r} must list messages with string 'role' and 'content'")
        turns = []
        for m in messages:
            role = ROLES.get(m["role"].strip().lower())
            if role is None:
                raise ValueError(f"{where}: unknown role {m['role']!r} (known: {', '.join(sorted(ROLES))}, any case)")
            turns.append({"role": role, "content": m["content"]})
        last = max((i for i, m in enumerate(turns) if m["role"] == "assistant"), default=-1)
        if last < 1:
            raise ValueError(f"{where}: needs an assistant turn after at least one other message")
        return turns[:last], turns[last]["content"]
    if fields.instruction in row and fields.response in row:
        return [{"role": "user", "content": str(row[fields.instruction])}], str(row[fields.response])
    raise ValueError(f"{where}: needs {fields.messages!r}, or {fields.instruction!r} and {fields.response!r}")


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The prompt text the DLM sees before the response: the chat template with the assistant turn opened, or
    the contents one per line for a tokenizer without a template."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(m["content"] + "\n" for m in messages)


def instruction_example(prompt: list[int], response: list[int], eos_id: int, block_size: int, max_length: int,
                        max_response: int) -> Example:
    """prompt + response as one Example, the response a whole number of blocks.

    A response that fits (with its EOS) in min(max_response, max_length) rounded down to whole blocks ends
    with EOS, padded with EOS to whole blocks. A longer one is cut there and gets NO EOS: the text goes on,
    and an EOS at the cut would teach the executor to end answers early. The prompt keeps its last tokens.
    """
    limit = min(max_response, max_length) // block_size * block_size
    if limit < block_size:
        raise ValueError(f"max_response and max_length must leave room for one block of {block_size}")
    if len(response) + 1 <= limit:
        ids = response + [eos_id]
    else:
        ids = response[:limit]
    room = max(0, max_length - len(ids) - (-len(ids) % block_size))
    prompt = prompt[len(prompt) - min(room, len(prompt)):]
    return pad_response(Example(prompt + ids, len(prompt), len(ids)), block_size, eos_id)


# ----------------------------------------------------------------------------------------------------------
# The token cache

class TokenizedRecords:
    """Instruction records tokenised once: folder/tokens.bin (uint32, every record's prompt then response ids)
    and folder/index.npy ((n, 3) int64: offset, prompt length, response length), both memory-mapped."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.index = np.load(folder / "index.npy", mmap_mode="r")  # (n, 3)
        self.tokens = np.memmap(folder / "tokens.bin", dtype=np.uint32, mode="r") \
            if (folder / "tokens.bin").stat().st_size else np.zeros(0, dtype=np.uint32)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def ids(self, row: int) -> tuple[list[int], list[int]]:
        """(prompt ids, response ids) of record `row`."""
        offset, n_prompt, n_response = (int(x) for x in self.index[row])
        ids = self.tokens[offset:offset + n_prompt + n_response].tolist()
        return ids[:n_prompt], ids[n_prompt:]


def cached_records(files: list[Path], tokenizer, fields: Fields, cache_root: Path, rank: int = 0) -> TokenizedRecords:
    """The records of `files` from the cache under cache_root, built first if missing (by rank 0; other ranks
    wait for it to appear)."""
    folder = Path(cache_root) / _cache_key(files, tokenizer, fields)
    if not (folder / "index.npy").exists():
        if rank == 0:
            build_cache(files, tokenizer, fields, folder)
        else:
            log.info("rank %d: waiting for rank 0 to tokenise the data into %s", rank, folder)
            while not (folder / "index.npy").exists():
                time.sleep(5)
    records = TokenizedRecords(folder)
    log.info("data: %d instruction records from %d file(s), tokenised in %s", len(records), len(files), folder)
    return records


def build_cache(files: list[Path], tokenizer, fields: Fields, folder: Path) -> None:
    """Render and tokenise every record of `files` into `folder` (written to a temporary folder, then renamed)."""
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    index, offset, skipped, start = [], 0, 0, time.monotonic()
    with (tmp / "tokens.bin").open("wb") as out:
        for batch in _batches((item for f in files for item in read_rows(f, fields)), ROWS_PER_BATCH):
            prompts, responses = [], []
            for where, row in batch:
                messages, response = split_turns(row, fields, where)
                if not response.strip():
                    skipped += 1  # nothing to learn from an empty answer
                    continue
                prompts.append(render_prompt(tokenizer, messages))
                responses.append(response)
            if not prompts:
                continue
            prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
            response_ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
            for p, r in zip(prompt_ids, response_ids):
                np.asarray(p + r, dtype=np.uint32).tofile(out)
                index.append((offset, len(p), len(r)))
                offset += len(p) + len(r)
            if len(index) % (50 * ROWS_PER_BATCH) < len(prompts):
                log.info("tokenised %d records (%.0f s)", len(index), time.monotonic() - start)
    np.save(tmp / "index.npy", np.asarray(index, dtype=np.int64).reshape(-1, 3))
    (tmp / "source.json").write_text(json.dumps({"files": [str(f) for f in files], "records": len(index),
                                                 "skipped_empty": skipped, "fields": vars(fields)}, indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    log.info("tokenised %d records (%d empty responses skipped, %d tokens) into %s in %.0f s",
             len(index), skipped, offset, folder, time.monotonic() - start)


def _batches(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _cache_key(files: list[Path], tokenizer, fields: Fields) -> str:
    """Changes with the files (path, size, mtime), the tokenizer (its full definition and chat template) and
    the field names."""
    h = hashlib.sha1(f"codila-finetune-cache-{CACHE_FORMAT}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update((backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))).encode())
    h.update(repr((getattr(tokenizer, "chat_template", None), vars(fields))).encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------
# The dataset

class Item(NamedTuple):
    """One sample slot: row `key` of instruction source `source` (>= 0), or source text `key` (source -1)."""

    source: int
    key: int


class Dataset:
    """Training and validation items of one run. A record (an instruction record, or a source file) lands
    wholly on one side; validation takes at most a tenth of the items.

    config: the run's training.config.FinetuneConfig (data, fields, lengths, block_size, budget, max_middle,
    val_samples, seed, data_cache, output).
    """

    def __init__(self, config, tokenizer, rank: int = 0, eos_id: int | None = None):
        self.config = config
        self.tokenizer = tokenizer
        # the DLM's end of middle as decoding reads it (its config's eos_token_id), which a converted base's
        # tokenizer may name differently (SmolLM2's says <|im_end|>, the DLM ends middles with <|endoftext|>)
        self.eos_id = tokenizer.eos_token_id if eos_id is None else eos_id
        if self.eos_id is None:
            raise ValueError("the DLM tokenizer has no eos token")
        fields = Fields(config.messages_field, config.instruction_field, config.response_field)
        cache_root = Path(config.data_cache or Path(config.output) / "data-cache")
        self.instructions: list[TokenizedRecords] = []
        self.texts: list[str] = []
        records: list[tuple[int, int, int]] = []  # (source, key, slots)
        for spec in config.data:
            kind, files = data_kind(spec)
            if kind == "instructions":
                self.instructions.append(cached_records(files, tokenizer, fields, cache_root, rank))
                source = len(self.instructions) - 1
                records.extend((source, row, 1) for row in range(len(self.instructions[-1])))
            else:
                paths = self._stdlib() if kind == "stdlib" else files
                for path in paths:
                    text = read_text(path)
                    if text.strip():
                        self.texts.append(text)
                        records.append((-1, len(self.texts) - 1, max(1, len(text) // CHARS_PER_SOURCE_ITEM)))
        if len(records) < 2:
            raise ValueError(f"need at least 2 records (one to train, one to validate); found {len(records)}")
        order = list(range(len(records)))
        random.Random(config.seed).shuffle(order)
        total = sum(r[2] for r in records)
        wanted = min(config.val_samples, max(1, total // 10)) if config.val_samples else 0  # at most a tenth
        self.val: list[Item] = []
        self.train: list[Item] = []
        for k, i in enumerate(order):
            side = self.val if len(self.val) < wanted and k < len(order) - 1 else self.train
            source, key, slots = records[i]
            side.extend([Item(source, key)] * slots)
        log.info("data: %d training items, %d validation items", len(self.train), len(self.val))

    @staticmethod
    def _stdlib() -> list[Path]:
        # not the "dev" files: pretraining validates on them and tuning tasks are cut from them
        dev = set(stdlib_files("dev"))
        return [p for p in stdlib_files("train") if p not in dev]

    def example(self, item: Item, rng: random.Random) -> Example:
        """The Example for one item (source text is cut with `rng`), its response a whole number of blocks."""
        cfg = self.config
        if item.source >= 0:
            prompt, response = self.instructions[item.source].ids(item.key)
            return instruction_example(prompt, response, self.eos_id, cfg.block_size, cfg.max_length, cfg.max_response)
        text = self.texts[item.key]
        span = None
        for _ in range(8):  # a few tries: a cut can land on a blank region
            span = sample_infill(text, self.tokenizer, rng, cfg.max_middle, heal=cfg.token_healing)
            if span is not None:
                break
        if span is None:
            raise ValueError("a source item has no non-blank line")
        budget = cfg.budget if rng.random() < 0.5 else rng.randint(len(span.middle), cfg.budget)
        budget += -budget % cfg.block_size  # whole blocks
        return infill_sequence(span, budget, cfg.max_length, self.eos_id, rng)
