"""The trainers' settings: one table per trainer, from which its flags, defaults, validation and reference come.

    TrainSetting     a row of decoding.config's table (name, type, default, help, range or choices) with what a
                     trainer needs more: the --help heading, required values, lists, ranges open at an end
    shared rows      the knobs several trainers have (lr, warmup, steps, batch, LoRA, output, device, threads,
                     seed...), each defined once; a trainer gives it its own default, or narrows it
    TrainerConfig    the base of the trainers' frozen dataclasses, FinetuneConfig, AdaptConfig, PretrainConfig:
                     every field is a row (`shared(ROW, default=...)` or `own(kind, default, help, ...)`), so a
                     trainer's table is its dataclass, read top to bottom. The rows validate each value in
                     `__post_init__`, `check_together` the relations between them; `TrainerConfig.parser` makes
                     the command line, `reference` the table docs/training.md carries (tests hold it)

Adding a trainer: one dataclass of shared rows (with its defaults) and rows of its own, its entry in TRAINERS
(and a flags section in docs/training.md), and a `main` that calls `YourConfig.command_line`. Nothing here imports torch: the language server validates its
trainOnWorkspace options with these rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decoding.arguments import add_setting_argument
from decoding.config import DECODE_SETTINGS, MODEL_SETTINGS, Setting

REQUIRED: Any = dataclasses.MISSING  # the default of a row every run must give (its flag is required)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # Qwen2/3, Llama
# Architectures training.pretrain builds: (hidden, layers, heads, kv_heads, intermediate). "default" is the
# shipped model's size. The DLM is sized for the compute two CPU cores give in about an hour (~20M tokens):
# a 6.5M-parameter (256, 6, 4, 2, 704) model saw a third as many tokens in that time and learned far less.
SIZES = {
    "dlm": {"default": (192, 4, 4, 2, 512), "tiny": (32, 2, 4, 2, 64)},
    "ar": {"default": (192, 4, 4, 2, 512), "tiny": (32, 2, 4, 2, 64)},
}

# --help headings
MODELS, SAMPLES, OBJECTIVE = "models and data", "samples", "the objective"
OPTIMISATION, RUN, LORA, MACHINE = "optimisation", "budget, checkpoints and logs", "LoRA", "machine"


@dataclass(frozen=True)
class TrainSetting(Setting):
    """A row of the settings table (decoding.config.Setting) as a trainer has it.

    group:     the heading its flag is listed under in --help.
    many:      "" = one value; "repeat" = a tuple, the flag given once per value (--data A --data B);
               "comma" = a tuple given as one comma-separated value (--lora-targets q_proj,v_proj).
    open_low, open_high: the range [low, high] excludes that end (lr is in (0, 1)); either end may be None.
    A default of REQUIRED: every run gives it (and a list, at least one value).
    """

    group: str = ""
    many: str = ""
    open_low: bool = False
    open_high: bool = False

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def item(self) -> "TrainSetting":
        """The row of one value of a list."""
        return dataclasses.replace(self, many="", default=None)

    def check(self, value: Any) -> None:
        """Raise ValueError("<name> must ...; got <value>") unless `value` is valid for this setting."""
        if self.many:
            if not isinstance(value, tuple):
                raise ValueError(f"{self.name} must be a tuple of {self.json_type}s; got {value!r}")
            if self.required and not value:
                raise ValueError(f"{self.name} needs at least one value (give {self.option}); got none")
            for item in value:
                self.item.check(item)
            return
        if self.kind not in (int, float) or (value is None and self.nullable):
            return super().check(value)
        Setting.check(dataclasses.replace(self, low=None, high=None), value)  # its type: a (whole) number
        low, high = self.low, self.high
        if (low is not None and (value <= low if self.open_low else value < low)) or \
                (high is not None and (value >= high if self.open_high else value > high)):
            raise ValueError(f"{self.name} must be {self.range_words}; got {value!r}")

    def parse(self, text: str) -> Any:
        """Command-line text -> a valid value: a tuple for a comma list, one value of a repeated flag."""
        if self.many == "comma":
            value = tuple(self.item.parse(part) for part in text.split(",") if part.strip())
            if not value:
                raise ValueError(f"{self.name} needs at least one value; got {text!r}")
            return value
        return (self.item if self.many else super()).parse(text)

    @property
    def range_words(self) -> str:
        """"in (0, 1)", "in [1, 16]", "at least 1", "more than 0", ...; "" for a row without a range."""
        low, high = (None if x is None else _number(x) for x in (self.low, self.high))
        if low is not None and high is not None:
            return f"in {'(' if self.open_low else '['}{low}, {high}{')' if self.open_high else ']'}"
        if low is not None:
            return f"{'more than' if self.open_low else 'at least'} {low}"
        if high is not None:
            return f"{'less than' if self.open_high else 'at most'} {high}"
        return ""


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _from_decoding(row: Setting, group: str, **changes: Any) -> TrainSetting:
    """A decoding row (the same knob at inference) as a trainer's."""
    values = {field.name: getattr(row, field.name) for field in dataclasses.fields(Setting)}
    return TrainSetting(**{**values, **changes}, group=group)


def shared(row: TrainSetting, **changes: Any) -> Any:
    """A config field that is a shared row; `changes`: this trainer's default, help or range."""
    row = dataclasses.replace(row, **changes)
    return dataclasses.field(default=row.default, metadata={"row": row})


def own(kind: type, default: Any, help: str, group: str, **attributes: Any) -> Any:
    """A config field of one trainer alone: a row named after the field."""
    return shared(TrainSetting("", kind, default, help, group=group, **attributes))


# ---------------------------------------------------------------------------------------------------------
# Shared rows. A row without a default here gets one from each trainer (a test checks that every trainer's
# defaults pass their rows).

_DECODING = {row.name: row for row in (*DECODE_SETTINGS, *MODEL_SETTINGS)}
BLOCK_SIZE = _from_decoding(_DECODING["block_size"], group=MODELS)  # the decoders' range: what a trained AR serves
DEVICE = _from_decoding(_DECODING["device"], group=MACHINE)
# int8 weights are an inference format (the causal-context DLM on a CPU); training reads float weights
DTYPE = _from_decoding(_DECODING["dtype"], group=MACHINE,
                       choices=tuple(c for c in _DECODING["dtype"].choices if c != "int8"))
TRUST_REMOTE_CODE = _from_decoding(_DECODING["trust_remote_code"], group=MACHINE)
OUTPUT = TrainSetting("output", str, REQUIRED, "the run's folder", group=MODELS, pattern=r"\S",
                      pattern_message="a folder")
SEQ_LEN = TrainSetting("seq_len", int, None, "tokens per sample", group=SAMPLES, low=1)
MAX_MIDDLE = TrainSetting("max_middle", int, 64, "longest infill middle, in tokens", group=SAMPLES, low=1)
BUDGET = TrainSetting("budget", int, 64, "infill budget N: the masked region is the middle + EOS padding up to N "
                      "tokens", group=SAMPLES, low=1)
INFILL_SHARE = TrainSetting("infill_share", float, 0.5, "share of samples in the editor's infill shape (prefix + "
                            "middle + EOS padding + suffix; the rest: windows of the token stream)", group=OBJECTIVE,
                            low=0, high=1)
EPS = TrainSetting("eps", float, None, "lowest masking level: t ~ U(eps, 1)", group=OBJECTIVE, low=0, high=1,
                   open_low=True, open_high=True)
LR = TrainSetting("lr", float, None, "peak learning rate (AdamW)", group=OPTIMISATION, low=0, high=1, open_low=True,
                  open_high=True)
WARMUP_STEPS = TrainSetting("warmup_steps", int, None, "linear warmup steps", group=OPTIMISATION, low=0)
WEIGHT_DECAY = TrainSetting("weight_decay", float, None, "AdamW weight decay (0 = off)", group=OPTIMISATION, low=0)
MAX_GRAD_NORM = TrainSetting("max_grad_norm", float, None, "gradient clipping norm", group=OPTIMISATION, low=0,
                             open_low=True)
BATCH_SIZE = TrainSetting("batch_size", int, None, "samples per step", group=OPTIMISATION, low=1)
MAX_STEPS = TrainSetting("max_steps", int, None, "optimizer steps; the run ends there", group=RUN, low=1)
MAX_MINUTES = TrainSetting("max_minutes", float, None, "wall time of this invocation, in minutes", group=RUN, low=0,
                           open_low=True)
SAVE_EVERY_MINUTES = TrainSetting("save_every_minutes", float, 10.0, "write the model folder (and the resumable "
                                  "state) this often", group=RUN, low=0, open_low=True)
LOG_EVERY = TrainSetting("log_every", int, 10, "steps between metrics lines", group=RUN, low=1)
THREADS = TrainSetting("threads", int, None, "torch CPU threads (0 = torch's default)", group=MACHINE, low=0)
SEED = TrainSetting("seed", int, 0, "seeds the data order, samples, masks and initialisation", group=MACHINE, low=0)
BASE = TrainSetting("base", str, None, "the pretrained causal LM: base:NAME, a .gguf file or a model folder",
                    group=MODELS, pattern=r"\S", pattern_message="base:NAME, a .gguf file or a folder")
RESUME = TrainSetting("resume", bool, True, "continue from the checkpoint in --output (--no-resume: start over)",
                      group=RUN)
SAVE_EVERY = TrainSetting("save_every", int, None, "steps between resumable checkpoints", group=RUN, low=1)
EVAL_EVERY = TrainSetting("eval_every", int, None, "steps between validations", group=RUN, low=1)
DLM = TrainSetting("dlm", str, None, "the frozen DLM whose marginals the executor reads", group=MODELS, pattern=r"\S",
                  pattern_message="a folder")
BOUNDARY_TOKENS = TrainSetting("boundary_tokens", str, None, "OPEN,CLOSE: the tokens around the soft block",
                               group=MODELS, many="comma")
EXPORT = TrainSetting("export", str, None, "write the run folder's checkpoint as an adapter folder here, then exit "
                      "(none = train)", group=RUN, nullable=True, pattern=r"\S", pattern_message="a folder path")
PREFIX_TOKENS = TrainSetting("prefix_tokens", int, 128, "prefix tokens before the cut, at most", group=SAMPLES, low=1)
SUFFIX_TOKENS = TrainSetting("suffix_tokens", int, 32, "suffix tokens after the middle, at most", group=SAMPLES, low=0)
MIDDLE_TOKENS = TrainSetting("middle_tokens", int, 32, "middle tokens", group=SAMPLES, low=2)
BLOCKS = TrainSetting("blocks", int, 4, "blocks (frontiers) per sample, sharing one pass of the base", group=SAMPLES,
                      low=1)
EVAL_SAMPLES = TrainSetting("eval_samples", int, 48, "fixed samples of the dev split validated on", group=RUN, low=1)
LORA_RANK = TrainSetting("lora_rank", int, None, "LoRA rank r", group=LORA, low=0)
LORA_ALPHA = TrainSetting("lora_alpha", float, None, "LoRA scale numerator (scale = alpha / rank)", group=LORA, low=0,
                          open_low=True)


# ---------------------------------------------------------------------------------------------------------
# The trainers

class TrainerConfig:
    """What every trainer's config does with its rows. Subclasses are frozen, keyword-only dataclasses whose
    every field is `shared(...)` or `own(...)`."""

    def __post_init__(self) -> None:
        for row in self.settings():
            row.check(getattr(self, row.name))
        self.check_together()

    def check_together(self) -> None:
        """Raise ValueError for values that are valid alone and not together."""

    @classmethod
    def settings(cls) -> tuple[TrainSetting, ...]:
        """This trainer's table: a row per field, in order."""
        return _rows(cls)

    @classmethod
    def parser(cls, prog: str, doc: str) -> argparse.ArgumentParser:
        """The trainer's command line: a flag per row under its heading, read and checked by the row."""
        parser = argparse.ArgumentParser(prog=prog, description=doc,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        groups: dict[str, argparse._ArgumentGroup] = {}
        for row in cls.settings():
            group = groups.get(row.group) or groups.setdefault(row.group, parser.add_argument_group(row.group))
            if row.many or row.required:
                group.add_argument(row.option, dest=row.name, type=_argparse_type(row), required=row.required,
                                   action="append" if row.many == "repeat" else "store", default=argparse.SUPPRESS,
                                   metavar=row.option[2:].upper().replace("-", "_"), help=_help(row))
            else:
                add_setting_argument(group, row.but(help=_help(row)))
        return parser

    @classmethod
    def from_command_line(cls, parser: argparse.ArgumentParser, argv: list[str] | None = None):
        """The config the flags give (the dataclass's defaults for the rest). Raises ValueError for values
        that do not go together; a flag's own bad value is argparse's error."""
        given = vars(parser.parse_args(argv))
        return cls(**{name: tuple(value) if isinstance(value, list) else value for name, value in given.items()})

    @classmethod
    def command_line(cls, prog: str, doc: str, argv: list[str] | None = None):
        """A trainer's entry point: the config its flags give, logging to stderr set up and the resolved config
        logged once. A bad value, or values that do not go together, is argparse's usage error (exit 2)."""
        parser = cls.parser(prog, doc)
        try:
            config = cls.from_command_line(parser, argv)
        except ValueError as err:
            parser.error(str(err))
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
        logging.getLogger(prog.split()[-1]).info("config: %s", json.dumps(dataclasses.asdict(config)))
        return config

    @classmethod
    def reference(cls) -> str:
        """The markdown table of the trainer's flags (docs/training.md)."""
        lines = ["| flag | default | values | what it sets |", "|---|---|---|---|"]
        for row in cls.settings():
            cells = (f"`{row.option}`", _default_words(row), _values_words(row), row.help)
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        return "\n".join(lines)


@functools.cache
def _rows(cls: type) -> tuple[TrainSetting, ...]:
    rows = []
    for field in dataclasses.fields(cls):
        row = field.metadata["row"]
        assert row.name in ("", field.name), f"{cls.__name__}.{field.name} carries the row {row.name!r}"
        rows.append(row if row.name else dataclasses.replace(row, name=field.name))
    return tuple(rows)


def _argparse_type(row: TrainSetting):
    def parse(text: str) -> Any:
        try:
            return row.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = row.name
    return parse


def _help(row: TrainSetting) -> str:
    """The row's help with its range, and (for a list) its default: add_setting_argument adds a value's."""
    words = row.range_words
    text = f"{row.help} ({words})" if words else row.help
    if row.many == "repeat":
        return f"{text}; repeatable"
    if row.many == "comma":
        return f"{text}; comma-separated" + (f" (default {','.join(map(str, row.default))})" if row.default else "")
    return text


def _default_words(row: TrainSetting) -> str:
    if row.required:
        return "required"
    if row.default is None or row.default == ():
        return "none"
    if row.default == "":
        return "empty"
    if row.many:
        return "`" + ",".join(map(str, row.default)) + "`"
    return f"`{str(row.default).lower() if row.kind is bool else row.default}`"


def _values_words(row: TrainSetting) -> str:
    if row.kind is bool:
        words = f"{row.option} / --no-{row.option[2:]}"
    elif row.choices:
        words = ", ".join(row.choices)
    else:
        words = row.range_words or row.pattern_message or row.json_type
    return words + ("; repeatable" if row.many == "repeat" else "; comma-separated" if row.many == "comma" else "")


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(TrainerConfig):
    """One fine-tuning run of the AR executor on a frozen DLM's marginals (training.finetune)."""

    dlm: str = shared(DLM, default=REQUIRED, help="local folder of the frozen DLM (Dream layout or any Qwen2/Qwen3)")
    ar: str = own(str, REQUIRED, "local folder of the AR executor to start from (Qwen3 layout; an adapter folder "
                  "is merged and the new adapter names it as its base)", MODELS, pattern=r"\S",
                  pattern_message="a folder")
    data: tuple[str, ...] = own(str, REQUIRED, "instruction records (a .jsonl or .parquet file, or a folder of "
                                "them such as Ling-Coder-SFT's data/), a folder or file of source code, or 'stdlib' "
                                "(the training split of the Python standard library, less its dev files)", MODELS,
                                many="repeat", pattern=r"\S", pattern_message="a path or 'stdlib'")
    output: str = shared(OUTPUT, help="folder for the best AR (HF folder, or an adapter folder with --lora-rank), "
                         "checkpoints/ and metrics.jsonl")
    block_size: int = shared(BLOCK_SIZE, help="B, tokens per AR block (paper: 2, 4 or 8)")
    # the masking schedule
    t_min: float = own(float, 0.2, "t ~ U(t_min, t_max) per sample", OBJECTIVE, low=0, high=1)
    t_max: float = own(float, 0.8, "upper end of t", OBJECTIVE, low=0, high=1)
    eps: float = shared(EPS, default=1e-3, open_low=False, help="block mask probability p = (1 - eps) t + eps")
    commit_prob: float = own(float, 0.0, "share of positions inside a masked block left visible as committed "
                             "tokens (0 = whole blocks masked, the paper)", OBJECTIVE, low=0, high=1, open_high=True)
    frontier_share: float = own(float, 0.0, "share of samples masked as left-to-right decoding (scope 1) meets them: "
                                "the blocks before a random frontier visible, it and all after it masked, only it "
                                "trained (0 = the paper)", OBJECTIVE, low=0, high=1)
    token_healing: bool = own(bool, True, "lay source spans out as token healing does at inference (off: cut at "
                              "the cursor as they are)", OBJECTIVE)
    # samples
    instruction_field: str = own(str, "instruction", "JSONL field of the instruction", SAMPLES)
    response_field: str = own(str, "output", "JSONL field of the response", SAMPLES)
    messages_field: str = own(str, "messages", "field of a chat message list (used when present; roles "
                              "user/assistant or HUMAN/ASSISTANT)", SAMPLES)
    max_length: int = own(int, 1024, "tokens of DLM context per sample", SAMPLES, low=1)
    max_response: int = own(int, 512, "response tokens kept (EOS included; a longer response is cut without EOS)",
                            SAMPLES, low=1)
    budget: int = shared(BUDGET, help="source spans: masked region = middle + EOS padding up to this many tokens")
    max_middle: int = shared(MAX_MIDDLE, help="source spans: longest middle in tokens")
    val_samples: int = own(int, 500, "validation items held out, at most a tenth of the data (0 = no validation: "
                           "the last step is kept)", SAMPLES, low=0)
    val_batch_size: int = own(int, 8, "validation items per forward pass (no gradients: larger than --batch-size "
                              "fits)", SAMPLES, low=1)
    data_cache: str = own(str, "", "folder of tokenised instruction data, reused by every run on the same files "
                          "and tokenizer (empty = OUTPUT/data-cache; share one between the B = 2/4/8 runs)", SAMPLES)
    # optimisation
    lr: float = shared(LR, default=1e-5)
    warmup_ratio: float = own(float, 0.03, "share of max_steps spent warming up linearly", OPTIMISATION, low=0,
                              high=1, open_high=True)
    max_grad_norm: float = shared(MAX_GRAD_NORM, default=7.0)
    weight_decay: float = shared(WEIGHT_DECAY, default=0.0)
    batch_size: int = shared(BATCH_SIZE, default=1, help="sequences per micro-batch per process")
    grad_accum: int = own(int, 8, "micro-batches per optimizer step", OPTIMISATION, low=1)
    # budget, checkpoints and logs
    max_steps: int = shared(MAX_STEPS, default=32_000, help="optimizer steps; the cosine ends here")
    max_minutes: float = shared(MAX_MINUTES, default=0.0, open_low=False,
                                help="stop cleanly after this wall time (0 = no limit)")
    val_every: int = own(int, 100, "steps between validations (best kept)", RUN, low=1)
    save_every: int = shared(SAVE_EVERY, default=100)
    resume: bool = shared(RESUME, help="continue from the checkpoints in --output (--no-resume: start over)")
    json_progress: bool = own(bool, False, "print one JSON object per step on stdout (for the language server)",
                              RUN)
    # machine
    device: str = shared(DEVICE)
    dtype: str = shared(DTYPE, help="the frozen DLM's dtype: auto (bf16 on CUDA, the checkpoint's own on CPU), "
                        "float32, bfloat16, float16 (the AR always trains in float32, with bf16 autocast on CUDA)")
    gradient_checkpointing: str = own(str, "auto", "auto = on CUDA only", MACHINE, choices=("auto", "on", "off"))
    trust_remote_code: bool = shared(TRUST_REMOTE_CODE)
    threads: int = shared(THREADS, default=0)
    seed: int = shared(SEED)
    # LoRA: rank 0 = full fine-tune; else the output is a peft adapter folder over --ar
    lora_rank: int = shared(LORA_RANK, default=0, help="LoRA rank R (0 = full fine-tune; else --output is a peft "
                            "adapter folder over --ar)")
    lora_alpha: float | None = shared(LORA_ALPHA, default=None, nullable=True,
                                      help="LoRA alpha (none = 2 x rank)")
    lora_dropout: float = own(float, 0.05, "dropout on the LoRA input (0 = none)", LORA, low=0, high=1,
                              open_high=True)
    lora_targets: tuple[str, ...] = own(str, LORA_TARGETS, "module names the adapter wraps (default: every linear "
                                        "projection of attention and MLP; 'all-linear' = peft's every linear layer)",
                                        LORA, many="comma")
    lora_train_tokens: tuple[str, ...] = own(str, ("boundary",), "tokens whose embedding rows train with the "
                                             "adapter ('boundary' = the AR's two boundary tokens; 'none' = no row)",
                                             LORA, many="comma")
    # the executor's shape: its boundary tokens (empty = the AR's own, see load_ar) and depth (0 = every layer)
    boundary_tokens: tuple[str, ...] = shared(BOUNDARY_TOKENS, default=(), help="OPEN,CLOSE: the tokens around the "
                                              "soft block (none = the AR's codila_boundary_tokens, else "
                                              "<think>,</think>); written into the output's config.json")
    executor_layers: int = own(int, 0, "train and ship only the AR's first K layers (0 = all): a shallower, faster "
                               "executor", MODELS, low=0)

    def check_together(self) -> None:
        if self.t_min > self.t_max:
            raise ValueError(f"need t_min <= t_max; got {self.t_min}, {self.t_max}")
        if self.max_middle > self.budget or self.budget + self.block_size >= self.max_length:
            raise ValueError("need max_middle <= budget and budget + block_size < max_length")
        if self.boundary_tokens and len(self.boundary_tokens) != 2:
            raise ValueError(f"boundary_tokens must name two tokens; got {self.boundary_tokens!r}")
        if self.lora_rank and not self.lora_targets:
            raise ValueError("a LoRA fine-tune needs at least one target module (--lora-targets)")

    @property
    def alpha(self) -> float:
        """The LoRA scale numerator: lora_alpha, or 2 x rank when unset."""
        return self.lora_alpha if self.lora_alpha is not None else 2.0 * self.lora_rank

    @property
    def warmup_steps(self) -> int:
        return math.ceil(self.warmup_ratio * self.max_steps)


@dataclass(frozen=True, kw_only=True)
class AdaptConfig(TrainerConfig):
    """One run making a diffusion LM of a pretrained causal LM (training.adapt)."""

    base: str = shared(BASE, default="base:qwen2.5-coder-0.5b")
    output: str = shared(OUTPUT, help="run folder: checkpoint.pt, export/, metrics.jsonl (keep it outside the "
                         "repository)")
    method: str = own(str, "lora", "lora: adapters (peft) on every projection; full: every weight", MODELS,
                      choices=("lora", "full"))
    mask_token: str = own(str, "<|fim_pad|>", "the special token that becomes [MASK]", MODELS)
    eos_token: str = own(str, "<|endoftext|>", "end of middle / padding token", MODELS)
    extra_sources: tuple[str, ...] = own(str, (), "a folder of Python source to train on as well", MODELS,
                                         many="repeat", flag="--extra-source")
    stdlib: bool = own(bool, True, "train on the standard library's training split (--no-stdlib: only the "
                       "--extra-source folders)", MODELS)
    # the objective
    eps: float = shared(EPS, default=0.05)
    infill_share: float = shared(INFILL_SHARE)
    whole_share: float = own(float, 0.0, "share of editor samples with the whole middle region masked (the rest: "
                             "half uniform, half cut)", OBJECTIVE, low=0, high=1)
    seq_len: int = shared(SEQ_LEN, default=256)
    max_middle: int = shared(MAX_MIDDLE)
    budget: int = shared(BUDGET)
    # optimisation
    lr: float = shared(LR, default=5e-4, help="learning rate (AdamW), constant after warmup")
    warmup_steps: int = shared(WARMUP_STEPS, default=20)
    weight_decay: float = shared(WEIGHT_DECAY, default=0.0)
    max_grad_norm: float = shared(MAX_GRAD_NORM, default=1.0)
    batch_size: int = shared(BATCH_SIZE, default=8)
    # budget, checkpoints and logs
    max_minutes: float = shared(MAX_MINUTES, default=60.0, help="train this many more minutes in this invocation")
    max_steps: int = shared(MAX_STEPS, default=1_000_000, help="stop at this total step")
    save_every_minutes: float = shared(SAVE_EVERY_MINUTES, help="checkpoint + export this often")
    eval_every_minutes: float = own(float, 15.0, "fixed-mask validation this often", RUN, low=0, open_low=True)
    log_every: int = shared(LOG_EVERY)
    # machine
    threads: int = shared(THREADS, default=2)
    seed: int = shared(SEED)
    device: str = shared(DEVICE, default="cpu", help="where the model trains (bf16 autocast on both): auto = cuda "
                         "when available, else cpu; or cpu, cuda, cuda:N")
    data_workers: int = own(int, 0, "processes making batches ahead of a fast device (0 = in the training loop: "
                            "exactly resumable; >0: each resumed invocation draws fresh data streams)", MACHINE, low=0)
    # LoRA
    lora_rank: int = shared(LORA_RANK, default=32, low=1)
    lora_alpha: float = shared(LORA_ALPHA, default=64.0)

    def check_together(self) -> None:
        if self.max_middle > self.budget or self.budget >= self.seq_len:
            raise ValueError("need max_middle <= budget < seq_len")


@dataclass(frozen=True, kw_only=True)
class PretrainConfig(TrainerConfig):
    """One pretraining run from scratch (training.pretrain)."""

    model: str = own(str, REQUIRED, "dlm: Dream-layout diffusion LM; ar: Qwen3-layout causal LM", MODELS,
                     choices=tuple(SIZES))
    output: str = shared(OUTPUT, help="folder for the HF model (config, safetensors, tokenizer) and metrics.jsonl")
    corpus: str = own(str, "stdlib", "stdlib = the training split of the Python standard library; or a folder of "
                      "source files", MODELS, pattern=r"\S", pattern_message="stdlib or a folder")
    size: str = own(str, "default", "architecture preset: default (the shipped model) or tiny (tests)", MODELS,
                    choices=("default", "tiny"))
    tokenizer: str | None = own(str, None, "folder with a tokenizer to reuse; none = train a byte-level BPE here",
                                MODELS, nullable=True)
    init: str | None = own(str, None, "model folder to continue from (same architecture); none = random init",
                           MODELS, nullable=True)
    vocab_size: int = own(int, 4096, "BPE vocabulary when training a tokenizer (bytes and 4 special tokens "
                          "included)", MODELS, low=260)
    # optimisation
    seq_len: int = shared(SEQ_LEN, default=512)
    batch_size: int = shared(BATCH_SIZE, default=8)
    lr: float = shared(LR, default=2e-3)
    min_lr_ratio: float = own(float, 0.1, "final lr as a share of the peak (0 = decay to zero)", OPTIMISATION,
                              low=0, high=1)
    warmup_steps: int = shared(WARMUP_STEPS, default=200)
    weight_decay: float = shared(WEIGHT_DECAY, default=0.1, help="AdamW weight decay on matrices (0 = off)")
    max_grad_norm: float = shared(MAX_GRAD_NORM, default=1.0)
    # budget, checkpoints and logs
    max_steps: int = shared(MAX_STEPS, default=100_000)
    max_minutes: float = shared(MAX_MINUTES, default=60.0, help="stop after this much wall time; the lr schedule "
                                "ends with it")
    save_every_minutes: float = shared(SAVE_EVERY_MINUTES, help="write the model folder this often")
    log_every: int = shared(LOG_EVERY)
    eval_every: int = shared(EVAL_EVERY, default=200, help="steps between validation evaluations")
    # the diffusion objective (DLM only)
    eps: float = shared(EPS, default=1e-3)
    infill_share: float = shared(INFILL_SHARE)
    max_middle: int = shared(MAX_MIDDLE)
    budget: int = shared(BUDGET)
    # machine
    threads: int = shared(THREADS, default=2)
    seed: int = shared(SEED)

    def check_together(self) -> None:
        if self.size not in SIZES[self.model]:
            raise ValueError(f"size must be one of {', '.join(SIZES[self.model])}; got {self.size!r}")
        if self.max_middle > self.budget or self.budget >= self.seq_len:
            raise ValueError("need max_middle <= budget < seq_len")


@dataclass(frozen=True, kw_only=True)
class LoraRunConfig(TrainerConfig):
    """The rows of a LoRA run over a frozen causal-context DLM (training.lora_run's loop): training.draft's and
    training.executor's, with the same defaults."""

    # optimisation
    lr: float = shared(LR, default=3e-4, help="learning rate (AdamW), constant after warmup")
    warmup_steps: int = shared(WARMUP_STEPS, default=20)
    max_grad_norm: float = shared(MAX_GRAD_NORM, default=1.0)
    batch_size: int = shared(BATCH_SIZE, default=8, help="samples per optimiser step (accumulated one at a time)")
    # budget, checkpoints and logs
    max_minutes: float = shared(MAX_MINUTES, default=60.0, help="train this many more minutes in this invocation")
    max_steps: int = shared(MAX_STEPS, default=100_000, help="stop at this total step")
    save_every: int = shared(SAVE_EVERY, default=10)
    eval_every: int = shared(EVAL_EVERY, default=50)
    eval_samples: int = shared(EVAL_SAMPLES)
    # machine
    threads: int = shared(THREADS, default=2)
    seed: int = shared(SEED)
    # LoRA
    lora_rank: int = shared(LORA_RANK, default=16, low=1)
    lora_alpha: float = shared(LORA_ALPHA, default=32.0)


@dataclass(frozen=True, kw_only=True)
class DraftConfig(LoraRunConfig):
    """One run training the drafting adapter of a causal-context DLM (training.draft): the default model's."""

    base: str = shared(BASE, default="base:qwen2.5-coder-0.5b", help="the causal fill-in-the-middle base: "
                       "base:NAME, a .gguf file or a model folder")
    output: str = shared(OUTPUT, help="run folder: checkpoint.pt, log.jsonl (keep it outside the repository)")
    export: str = shared(EXPORT)
    resume: bool = shared(RESUME)
    # samples: a cut in a source file, tokenised as the editor sends it
    prefix_tokens: int = shared(PREFIX_TOKENS)
    suffix_tokens: int = shared(SUFFIX_TOKENS)
    middle_tokens: int = shared(MIDDLE_TOKENS, low=3, help="middle tokens: frontiers and drafted positions lie in them")
    blocks: int = shared(BLOCKS, help="blocks of masks (frontiers) per sample, sharing one context pass")
    block_sizes: tuple[int, ...] = shared(BLOCK_SIZE, name="block_sizes", default=(4, 8), many="comma",
                                          help="K, the masks of a block, drawn from these per sample")

    def check_together(self) -> None:
        if max(self.block_sizes) + 2 > self.middle_tokens:
            raise ValueError("the middle must hold a block and the two tokens around it: "
                             "middle_tokens >= max(block_sizes) + 2")


@dataclass(frozen=True, kw_only=True)
class ExecutorConfig(LoraRunConfig):
    """One run training the executor of a causal-context DLM (training.executor): the default model's."""

    dlm: str | None = shared(DLM, nullable=True, help="the causal-context DLM whose marginals the executor reads, "
                             "an adapter folder (none = the shipped decoding/default_model/dlm); the executor is a "
                             "slice of its base")
    output: str = shared(OUTPUT, help="run folder: checkpoint.pt, log.jsonl (keep it outside the repository)")
    export: str = shared(EXPORT, help="write the run folder's checkpoint as an executor folder here, then exit "
                         "(none = train)")
    resume: bool = shared(RESUME)
    layers: int = own(int, 4, "k, the base's first decoder layers the executor runs (its LoRA on every projection "
                      "of them; the embedding, final norm and LM head are the base's too)", MODELS, low=1)
    block_size: int = shared(BLOCK_SIZE, default=4, low=2, help="B, tokens per block: the base's token at the "
                             "frontier and B - 1 the executor decodes from the drafts")
    boundary_tokens: tuple[str, ...] = shared(BOUNDARY_TOKENS, default=("<|quad_start|>", "<|quad_end|>"),
                                              help="OPEN,CLOSE: the tokens around the soft block, two that code "
                                              "never contains")
    # samples: a cut in a source file, tokenised as the editor sends it (training.draft's)
    prefix_tokens: int = shared(PREFIX_TOKENS)
    suffix_tokens: int = shared(SUFFIX_TOKENS)
    middle_tokens: int = shared(MIDDLE_TOKENS, help="middle tokens: the blocks lie in them")
    blocks: int = shared(BLOCKS)

    def check_together(self) -> None:
        if self.block_size > self.middle_tokens:
            raise ValueError("the middle must hold a block: middle_tokens >= block_size")
        if len(self.boundary_tokens) != 2:
            raise ValueError(f"boundary_tokens must name two tokens; got {self.boundary_tokens!r}")


TRAINERS = {"training.finetune": FinetuneConfig, "training.adapt": AdaptConfig, "training.pretrain": PretrainConfig,
            "training.draft": DraftConfig, "training.executor": ExecutorConfig}


def update_reference(text: str) -> str:
    """`text` (docs/training.md) with every trainer's flag table, between its markers, made from the rows."""
    for command, config in TRAINERS.items():
        start, end = f"<!-- flags: {command} -->\n", f"<!-- end flags: {command} -->"
        if start not in text or end not in text:
            raise ValueError(f"no {start.strip()} ... {end} section")
        head, rest = text.split(start, 1)
        text = head + start + config.reference() + "\n" + end + rest.split(end, 1)[1]
    return text


if __name__ == "__main__":  # python -m training.config docs/training.md: write the flag tables in
    path = Path(sys.argv[1])
    path.write_text(update_reference(path.read_text()))
