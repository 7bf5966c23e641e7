"""Loading the two models of the CoDiLA stack from local Hugging Face folders (safetensors only).

- The DLM, in one of two attention layouts (`codila_dlm_layout` in its config.json):
  "bidirectional" (the default): a Dream-family checkpoint (model_type "Dream") mapped onto transformers' Qwen2
  classes, or any plain Qwen2/Qwen3/Llama checkpoint, run with bidirectional attention over the whole canvas;
  "fim": a causal fill-in-the-middle base whose LoRA adapter drafts behind the frontier (decoding.fim; the
  default model): the adapter stays unmerged, switched on per position.
- The AR executor: any transformers causal LM (Qwen3-0.6B in the paper), run causally. Optional for a
  "fim" DLM, which decodes (methods ar and verified) without one; its executor (methods codila, codila-top1)
  is a LoRA adapter over the first `codila_executor_layers` layers of the same base, built as a slice that
  shares the DLM's weight tensors (`base_slice`: one copy of the base in memory).

Wherever a model folder is accepted, a peft LoRA adapter folder (adapter_config.json +
adapter_model.safetensors) is accepted too: its base (`base_model_name_or_path`, see `resolve_base`) is
loaded, the adapter merged into the weights (no peft at inference), and the adapter folder's own config.json
keys that CoDiLA reads and its tokenizer files, when present, win over the base's.

Every load ends with checks that make a broken checkpoint an error here, never a silent wrong decode: weight
names match the architecture, the tokenizer round-trips code and its special tokens sit at their declared ids.
Nothing here downloads: paths are local folders, `base:NAME` (a pretrained base the install brought, see
decoding.base) or .gguf files (converted once to a cached folder). `trust_remote_code` only when asked for.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers import PreTrainedModel, Qwen2Config, Qwen2ForCausalLM

from decoding.base import is_model_reference, resolve_model_path
from decoding.config import DECODE_SETTINGS
from decoding.quantize import is_int8, output_rows, quantize_int8
from decoding.fim import FimLM, wrap_fim
from decoding.soft import VocabAlignment

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"

# config.json keys that describe Dream's remote code, not the network: dropped when mapping onto Qwen2.
_DREAM_ONLY_KEYS = ("auto_map", "architectures", "model_type", "transformers_version")
# config.json keys CoDiLA reads besides the architecture: an adapter folder's own config.json overrides these
# (any `codila_*` key as well: codila_tau, codila_block_size, codila_boundary_tokens, codila_finetune_lr)
CODILA_CONFIG_KEYS = ("dlm_logit_shift", "mask_token_id", "eos_token_id", "bos_token_id", "pad_token_id")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model")
MAX_ADAPTER_CHAIN = 8  # an adapter's base may itself be an adapter; deeper chains are a cycle or a mistake
DEFAULT_BOUNDARY_TOKENS = ("<think>", "</think>")
DLM_LAYOUTS = ("bidirectional", "fim")
# A turn-end token that ends a middle as EOS does (Dream-Coder's instruct turns close with <|im_end|>)
TURN_END_TOKENS = ("<|im_end|>",)
_SANITY_TEXT = "def add(a, b):\n    return a + b  # sum\n\nprint(add(1, 2))\n"


def default_model_dir() -> Path:
    """The folder of the shipped default model (`dlm/` and `ar/` inside), inside the `decoding` package."""
    return DEFAULT_MODEL_DIR


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is passed to torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: {err}") from None


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INT8 = "int8"  # the Linear weights in int8 (decoding.quantize): a causal-context DLM on a CPU


def resolve_dtype(dtype: str, device: torch.device, checkpoint_dtype: str | None = None) -> torch.dtype:
    """'auto' -> bfloat16 on CUDA; elsewhere the checkpoint's own dtype (config.json `torch_dtype`/`dtype`, so a
    bf16 7B model stays 15 GB on CPU rather than 30), float32 when it names none. Or one of float32, bfloat16,
    float16."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16
        return _DTYPES.get(str(checkpoint_dtype).removeprefix("torch."), torch.float32)
    if dtype == INT8:
        raise ValueError("dtype int8 is for the causal-context DLM (the default model) on a CPU; this model "
                         "loads in auto, float32, bfloat16 or float16")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be auto, {', '.join(_DTYPES)} or {INT8}; got {dtype!r}")
    return _DTYPES[dtype]


@dataclass
class DiffusionLM:
    """A masked-diffusion LM: bidirectional attention, one forward pass gives marginals for every position.

    logit_shift: True for AR-initialised DLMs (Dream): the prediction for position i is read from the
    output at i - 1. A property of the checkpoint (config `model_type` "Dream", or `dlm_logit_shift` in
    config.json), never guessed.
    stop_ids: ids other than eos_id that end the middle as EOS does (Dream-Coder's `<|im_end|>`); the
    marginals fold their probability into EOS (`fold_stop_tokens`).
    fim: the causal-context view (layout "fim", decoding.fim), None for a bidirectional DLM.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    mask_id: int
    eos_id: int
    logit_shift: bool
    stop_ids: tuple[int, ...] = ()
    fim: FimLM | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def vocab_size(self) -> int:
        return output_rows(self.model)


@dataclass
class ExecutorLM:
    """The small causal AR that decodes one block of B tokens from soft DLM marginals.

    open_id / close_id: the boundary tokens around the soft embeddings (`<think>` / `</think>` for Qwen3;
    `codila_boundary_tokens` in config.json names others).
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    open_id: int
    close_id: int

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def embeddings(self) -> torch.Tensor:
        """E_ar: (V_ar, H) input embedding matrix (while a LoRA run trains embedding rows: with those rows)."""
        layer = self.model.get_input_embeddings()
        rows = getattr(layer, "token_adapter", None)  # peft's trainable tokens, only while training
        if rows is not None:
            return rows.get_merged_weights(rows.active_adapters)
        return layer.weight

    @property
    def tau(self) -> float | None:
        """The dynamic threshold this AR's trainer chose (`codila_tau` in config.json; checked at load),
        or None."""
        return getattr(self.model.config, "codila_tau", None)

    @property
    def block_size(self) -> int | None:
        """B this executor was fine-tuned for (`codila_block_size` in config.json; checked at load), or None."""
        return getattr(self.model.config, "codila_block_size", None)


@dataclass
class ModelPair:
    """Everything one decode needs: the DLM, the AR executor and how their vocabularies line up.

    ar / alignment are None for a causal-context DLM loaded without an executor (methods ar and verified
    need none; codila asks for one)."""

    dlm: DiffusionLM
    ar: ExecutorLM | None
    alignment: VocabAlignment | None

    def forget_prompts(self) -> None:
        """Drop the prompt cache a causal-context DLM keeps across requests (the next decode starts cold)."""
        if self.dlm.fim is not None:
            self.dlm.fim.forget_prompt()


def dlm_logits(dlm: DiffusionLM, input_ids: torch.Tensor) -> torch.Tensor:
    """Full bidirectional forward. input_ids: (N, L) -> logits (N, L, V), row i predicting token i."""
    logits = dlm.model(input_ids=input_ids, use_cache=False).logits  # (N, L, V)
    return shift_logits(logits) if dlm.logit_shift else logits


def dlm_logits_at(dlm: DiffusionLM, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits predicting the tokens at `positions` only: the LM head runs on those rows, not on all L.

    input_ids: (N, L); positions: (K,) indices into L. Returns (N, K, V), column k predicting position
    positions[k] (the Dream logit shift applied: read from the output at positions[k] - 1, position 0 its own).
    """
    rows = (positions - 1).clamp_min(0) if dlm.logit_shift else positions  # (K,) output rows
    if "logits_to_keep" in inspect.signature(dlm.model.forward).parameters:
        return dlm.model(input_ids=input_ids, use_cache=False, logits_to_keep=rows).logits  # (N, K, V)
    return dlm.model(input_ids=input_ids, use_cache=False).logits[:, rows]  # remote code: project all, then slice


def shift_logits(logits: torch.Tensor) -> torch.Tensor:
    """Dream logit shift, applied exactly once: position i is predicted by the output at i - 1.

    Position 0 has no left neighbour and keeps its own output (as Dream does). logits: (N, L, V).
    """
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def fold_stop_tokens(logits: torch.Tensor, eos_id: int, stop_ids: tuple[int, ...]) -> torch.Tensor:
    """Give EOS the probability of every token that ends the turn, in place. logits: (..., V) float.

    logit[eos] = log sum_{s in eos + stops} exp(logit[s]), then the stop ids are banned (-inf): the softmax
    mass on "the turn ends here" is unchanged, and it all lands on the one id the decoder ends a middle with.
    """
    if not stop_ids:
        return logits
    ids = torch.tensor((eos_id, *stop_ids), device=logits.device)
    logits[..., eos_id] = torch.logsumexp(logits[..., ids], dim=-1)
    logits[..., ids[1:]] = -torch.inf
    return logits


# ----------------------------------------------------------------------------------------------------------
# Where a model comes from: a folder, or a LoRA adapter folder over a base

@dataclass(frozen=True)
class ModelSource:
    """A model folder as named by the user, resolved to the files that make it.

    base:     the folder with config.json and the full weights (safetensors).
    adapters: peft LoRA adapter folders merged into the base at load, in order (an adapter's base may itself
              be an adapter folder: a fine-tune of a fine-tune). Empty for a plain model folder.
    """

    base: Path
    adapters: tuple[Path, ...] = ()

    @property
    def folder(self) -> Path:
        """The folder the user named."""
        return self.adapters[-1] if self.adapters else self.base

    def overrides(self) -> dict[str, Any]:
        """The CoDiLA keys of the adapters' own config.json files, later adapters winning."""
        keys: dict[str, Any] = {}
        for adapter in self.adapters:
            if (adapter / "config.json").exists():
                raw = _read_json(adapter / "config.json")
                keys.update({k: v for k, v in raw.items() if k in CODILA_CONFIG_KEYS or k.startswith("codila_")})
        return keys

    def config(self) -> dict[str, Any]:
        """The base's config.json with the adapters' CoDiLA keys on top."""
        return {**_read_json(self.base / "config.json"), **self.overrides()}

    @property
    def tokenizer_folder(self) -> Path:
        """The last folder of the chain (the named one first) that has tokenizer files: an adapter's win."""
        for folder in (*reversed(self.adapters), self.base):
            if any((folder / name).exists() for name in TOKENIZER_FILES):
                return folder
        return self.base


def locate_model(path: str | Path) -> ModelSource:
    """Resolve a model folder or a LoRA adapter folder (following adapter -> base links) to a ModelSource.

    `base:NAME` and .gguf paths (decoding.base) become their converted folder in the per-user cache."""
    folder = resolve_model_path(path).expanduser()
    if not folder.is_dir():
        raise ValueError(f"model folder {str(folder)!r} does not exist (models are loaded from local folders only)")
    adapters: list[Path] = []
    while (folder / ADAPTER_CONFIG).exists():
        spec = _check_adapter(folder)
        adapters.append(folder)
        if len(adapters) > MAX_ADAPTER_CHAIN:
            raise ValueError(f"{path}: more than {MAX_ADAPTER_CHAIN} adapters chained through base_model_name_or_path "
                             f"(a cycle?): {[str(a) for a in adapters]}")
        folder = resolve_base(spec.get("base_model_name_or_path") or "", folder)
    if not (folder / "config.json").exists():
        raise ValueError(f"{folder} has no config.json: is it a Hugging Face model folder?")
    _require_safetensors(folder)
    return ModelSource(folder, tuple(reversed(adapters)))


def resolve_base(name: str, adapter_dir: Path) -> Path:
    """The folder of the base model an adapter names in `base_model_name_or_path`.

    A local folder path; a relative path is relative to the adapter folder. Nothing is downloaded: a hub id
    that is not a local folder is refused with a message saying so.
    """
    if not name:
        raise ValueError(f"{adapter_dir}/{ADAPTER_CONFIG} names no base_model_name_or_path")
    if is_model_reference(name):  # base:NAME (the default model's adapters) or a .gguf file
        return resolve_model_path(name if not name.lower().endswith(".gguf") else _beside(adapter_dir, name))
    base = Path(name).expanduser()
    if not base.is_absolute():
        base = adapter_dir / base
    if not base.is_dir():
        raise ValueError(f"{adapter_dir}: the adapter's base model {name!r} is not a local folder (looked at {base}); "
                         "download the base and set base_model_name_or_path in adapter_config.json to its folder")
    return base.resolve()


def _beside(adapter_dir: Path, name: str) -> str:
    path = Path(name).expanduser()
    return str(path if path.is_absolute() else adapter_dir / path)


def _check_adapter(folder: Path) -> dict:
    """adapter_config.json of a LoRA adapter with safetensors weights, or ValueError."""
    spec = _read_json(folder / ADAPTER_CONFIG)
    if spec.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{folder}: a {spec.get('peft_type')} adapter; only LoRA adapters are supported")
    if not (folder / ADAPTER_WEIGHTS).exists():
        found = ", ".join(sorted(p.name for p in folder.glob("adapter_model*"))) or "none"
        raise ValueError(f"{folder}: no {ADAPTER_WEIGHTS} (found: {found}); adapters load from safetensors only "
                         "(a .bin file can run code when loaded)")
    return spec


def truncate_layers(model: PreTrainedModel, layers: object, where: str = "executor_layers") -> None:
    """Keep the first `layers` decoder layers of a causal LM (the final norm and LM head stay): a shallower
    AR executor, whose cost per block is proportional to its depth."""
    blocks = model.get_decoder().layers
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= len(blocks):
        raise ValueError(f"{where} must be an integer in 1..{len(blocks)}; got {layers!r}")
    model.get_decoder().layers = blocks[:layers]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]


def merge_adapters(model: PreTrainedModel, source: ModelSource) -> PreTrainedModel:
    """Merge each LoRA adapter of `source` into the model's weights (merge_and_unload: plain modules again),
    then set the adapters' CoDiLA config keys on model.config."""
    for adapter in source.adapters:
        model = _merge_lora(model, adapter)
    for key, value in source.overrides().items():
        setattr(model.config, key, value)
    return model


def _merge_lora(model: PreTrainedModel, adapter: Path) -> PreTrainedModel:
    merged = _attach_lora(model, adapter).merge_and_unload()
    log.info("merged LoRA adapter %s", adapter)
    return merged


# ----------------------------------------------------------------------------------------------------------
# The two loaders

def load_dlm(
    path: str | Path,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    attn_implementation: str = "sdpa",
    int8_ok: bool = True,
) -> DiffusionLM:
    """Load a DLM from a local folder (or LoRA adapter folder) and switch every attention layer to bidirectional.
    int8_ok False: dtype auto never picks int8 weights (an executor slice will share the base's float weights)."""
    source = locate_model(path)
    dev = resolve_device(device)
    raw = source.config()
    layout = raw.get("codila_dlm_layout", "bidirectional")
    if layout not in DLM_LAYOUTS:
        raise ValueError(f"{source.folder}/config.json: codila_dlm_layout must be one of {', '.join(DLM_LAYOUTS)}; "
                         f"got {layout!r}")
    if layout == "fim":
        return load_fim_dlm(source, dev, dtype, trust_remote_code, attn_implementation, int8_ok=int8_ok)
    is_dream = str(raw.get("model_type", "")).lower() == "dream"
    kwargs = dict(dtype=resolve_dtype(dtype, dev, _checkpoint_dtype(raw)), use_safetensors=True,
                  attn_implementation=attn_implementation, device_map=dev)

    if is_dream and not trust_remote_code:
        config = Qwen2Config(**{k: v for k, v in raw.items() if k not in _DREAM_ONLY_KEYS})
        model, info = Qwen2ForCausalLM.from_pretrained(source.base, config=config, output_loading_info=True, **kwargs)
    else:
        # Dream's auto_map names only AutoModel (DreamModel, which carries the lm_head)
        auto = AutoModel if is_dream else AutoModelForCausalLM
        model, info = _remote_code_guard(source.base, is_dream, lambda: auto.from_pretrained(
            source.base, trust_remote_code=trust_remote_code, output_loading_info=True, **kwargs))
    _check_loading(source.base, info)
    model = merge_adapters(model, source)
    make_bidirectional(model)
    _freeze(model)

    tokenizer = load_tokenizer(source.tokenizer_folder, trust_remote_code)
    rows = model.get_output_embeddings().weight.shape[0]
    check_tokenizer(tokenizer, rows, source.tokenizer_folder)
    mask_id = _special_id(raw, tokenizer, "mask_token_id", ("<|mask|>", "[MASK]", "<mask>"))
    eos_id = _special_id(raw, tokenizer, "eos_token_id", ())
    for name, tid in (("mask", mask_id), ("eos", eos_id)):
        if not 0 <= tid < rows:
            raise ValueError(f"{source.folder}: {name} id {tid} is outside the model's {rows} vocabulary rows")
    stop_ids = _turn_end_ids(tokenizer, eos_id, rows)
    logit_shift = bool(raw.get("dlm_logit_shift", is_dream))
    log.info("DLM %s: %s, %s on %s, mask=%d eos=%d stops=%s shift=%s", source.folder, type(model).__name__,
             model.dtype, dev, mask_id, eos_id, list(stop_ids), logit_shift)
    return DiffusionLM(model, tokenizer, mask_id, eos_id, logit_shift, stop_ids)


def load_fim_dlm(source: ModelSource, dev: torch.device, dtype: str = "auto", trust_remote_code: bool = False,
                 attn_implementation: str = "sdpa", require_fim: bool = True, int8_ok: bool = True) -> DiffusionLM:
    """A causal-context DLM (layout "fim"): the base, causal, with its last LoRA adapter left unmerged as the
    drafter (decoding.fim); earlier adapters of a chain are merged. With no adapter: the base alone, which
    decodes with method ar only. require_fim False: a tokenizer without FIM tokens is a prefix completer.

    dtype int8, or auto on a CPU for a model whose config.json says `codila_cpu_dtype: "int8"` (the default
    model: its card measures int8 against bfloat16) unless int8_ok is False: int8 Linear weights
    (decoding.quantize), but for the Linear layers its `codila_int8_keep_float` names."""
    raw = source.config()
    int8 = dtype == INT8 or (dtype == "auto" and dev.type == "cpu" and int8_ok and raw.get("codila_cpu_dtype") == INT8)
    if int8 and dev.type != "cpu":
        raise ValueError(f"dtype int8 runs on a CPU only (torch's dynamic quantization); the device is {dev}")
    model, info = AutoModelForCausalLM.from_pretrained(
        source.base, dtype=resolve_dtype("auto" if int8 else dtype, dev, _checkpoint_dtype(raw)), use_safetensors=True,
        trust_remote_code=trust_remote_code, attn_implementation=attn_implementation, output_loading_info=True,
        device_map=dev)
    _check_loading(source.base, info)
    *merged, drafter = source.adapters or (None,)
    model = merge_adapters(model, ModelSource(source.base, tuple(merged)))
    if drafter is not None:
        model = _attach_lora(model, drafter)
    for key, value in source.overrides().items():
        setattr(model.config, key, value)
    _freeze(model)
    if int8:
        quantize_int8(model, raw.get("codila_int8_keep_float", ()))
    tokenizer = load_tokenizer(source.tokenizer_folder, trust_remote_code)
    check_tokenizer(tokenizer, output_rows(model), source.tokenizer_folder)
    fim = wrap_fim(model, tokenizer, drafting=drafter is not None)
    if fim.fim_ids is None and require_fim:
        raise ValueError(f"{source.folder}: codila_dlm_layout 'fim' needs a tokenizer with FIM tokens")
    eos_id = _special_id(raw, tokenizer, "eos_token_id", ())
    log.info("DLM %s: causal FIM context, %s drafting adapter, %s on %s", source.folder,
             "with a" if fim.drafts else "no", "int8 weights" if int8 else model.dtype, dev)
    return DiffusionLM(model, tokenizer, fim.draft_id if fim.draft_id is not None else eos_id, eos_id, True,
                       tuple(sorted(fim.stop_ids - {eos_id})), fim)


def load_fim_base(path: str | Path, device: str = "auto", dtype: str = "auto") -> ModelPair:
    """A plain causal LM (a folder, base:NAME or .gguf) as a model pair that decodes with method ar: what a
    plain fill-in-the-middle completer gives (its FIM tokens read the suffix; a model without them completes
    the prefix)."""
    source = locate_model(path)
    if source.adapters:
        raise ValueError(f"{path} is an adapter folder; give the plain model it was trained from")
    return ModelPair(load_fim_dlm(source, resolve_device(device), dtype, require_fim=False), None, None)


def _attach_lora(model: PreTrainedModel, adapter: Path) -> PreTrainedModel:
    """`model` wrapped with the LoRA adapter in `adapter`, unmerged, in the base's dtype."""
    from peft import LoraConfig, PeftModel, set_peft_model_state_dict  # imported here: only adapters need it
    from safetensors.torch import load_file

    spec = LoraConfig.from_pretrained(str(adapter))
    spec.inference_mode = True
    wrapped = PeftModel(model, spec)
    weights = load_file(adapter / ADAPTER_WEIGHTS, device=str(model.device))
    result = set_peft_model_state_dict(wrapped, weights)
    # a LoRA matrix the adapter does not provide would stay at its random init: refuse, as for a base weight
    missing = [k for k in result.missing_keys if "lora_" in k and ".default" in k]
    if missing or result.unexpected_keys:
        raise ValueError(f"{adapter}: adapter weights do not match the base model "
                         f"{getattr(model, 'name_or_path', '')}: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    for name, param in wrapped.named_parameters():
        if "lora_" in name:
            param.data = param.data.to(model.dtype)
    log.info("LoRA adapter %s: rank %s, %d tensors", adapter, spec.r, len(weights))
    return wrapped


def check_codila_tau(tau: object, where: str) -> None:
    """Raise ValueError (naming `where`) unless tau is a usable dynamic threshold: a number of nats in (0, 100]."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 < tau <= 100:
        raise ValueError(f"{where} must be a number of nats in (0, 100]; got {tau!r}")


def check_codila_block_size(block_size: object, where: str) -> None:
    """Raise ValueError (naming `where`) unless block_size is one the `block_size` setting accepts."""
    try:
        _BLOCK_SIZE.check(block_size)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


_BLOCK_SIZE = next(setting for setting in DECODE_SETTINGS if setting.name == "block_size")


def load_ar(
    path: str | Path,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    boundary_tokens: tuple[str, str] | None = None,
    attn_implementation: str = "sdpa",
) -> ExecutorLM:
    """Load the AR executor (any causal LM, or a LoRA adapter folder over one) and look up its boundary tokens.

    boundary_tokens: the two tokens around the soft embeddings; None = the folder's `codila_boundary_tokens`,
    else `<think>` / `</think>`.
    """
    source = locate_model(path)
    dev = resolve_device(device)
    raw = source.config()
    model, info = AutoModelForCausalLM.from_pretrained(
        source.base,
        dtype=resolve_dtype(dtype, dev, _checkpoint_dtype(raw)),
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
        attn_implementation=attn_implementation,
        output_loading_info=True,
        device_map=dev,
    )
    _check_loading(source.base, info)
    layers = raw.get("codila_executor_layers")
    if layers is not None:  # a shallower executor: its adapter was trained on the base's first layers only
        truncate_layers(model, layers, f"{source.folder}/config.json: codila_executor_layers")
    model = merge_adapters(model, source)
    _check_executor_keys(model.config, source.folder)
    _freeze(model)
    tokenizer = load_tokenizer(source.tokenizer_folder, trust_remote_code)
    check_tokenizer(tokenizer, model.get_input_embeddings().weight.shape[0], source.tokenizer_folder)
    return as_executor(model, tokenizer, source.folder, boundary_tokens)


def as_executor(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path,
                boundary_tokens: tuple[str, str] | None) -> ExecutorLM:
    """The ExecutorLM of a loaded AR: its boundary tokens looked up (None = the folder's
    `codila_boundary_tokens`, else `<think>` / `</think>`), its block size and threshold logged."""
    if boundary_tokens is None:
        boundary_tokens = tuple(getattr(model.config, "codila_boundary_tokens", None) or DEFAULT_BOUNDARY_TOKENS)
        if len(boundary_tokens) != 2 or not all(isinstance(t, str) for t in boundary_tokens):
            raise ValueError(f"{folder}/config.json: codila_boundary_tokens must name two tokens; got {boundary_tokens!r}")
    open_id, close_id = (_token_id(tokenizer, t, folder) for t in boundary_tokens)
    executor = ExecutorLM(model, tokenizer, open_id, close_id)
    log.info("AR %s: %s, %s on %s, boundary ids %d/%d, block size %s, dynamic threshold %s", folder,
             type(model).__name__, model.dtype, executor.device, open_id, close_id, executor.block_size or "not set",
             f"{executor.tau} nats" if executor.tau is not None else "not set")
    return executor


# ----------------------------------------------------------------------------------------------------------
# The default model's executor: a shallow slice of the DLM's own base, sharing its weights

def base_slice(model: torch.nn.Module, layers: object, where: str = "codila_executor_layers") -> PreTrainedModel:
    """The first `layers` decoder layers of `model`'s base with its embedding, final norm and LM head, as a causal
    LM of its own whose parameters and buffers ARE the base's tensors (the same objects: no second copy).

    model: a causal LM, or a peft model over one (the causal-context DLM): its LoRA layers stay out of the
    slice (a wrapped projection contributes its base layer's weight), so the DLM's adapter and its per-position
    gate are untouched, and an adapter attached to the slice (peft) is the slice's alone.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if is_int8(base):
        raise ValueError("an executor slice shares the base's float weights, and this base's are int8: load the "
                         "DLM with dtype bfloat16 (or auto, which keeps them float beside an executor)")
    depth = base.config.num_hidden_layers
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= depth:
        raise ValueError(f"{where} must be an integer in 1..{depth}; got {layers!r}")
    config = copy.deepcopy(base.config)
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:layers]
    with torch.device("meta"):  # a skeleton: every tensor is replaced by the base's below
        sliced = type(base)(config)

    def plain(name: str) -> str:  # peft's wrapped projection: q_proj.base_layer.weight is q_proj.weight
        return name.replace(".base_layer.", ".")

    params = {plain(n): p for n, p in base.named_parameters(remove_duplicate=False) if "lora_" not in n}
    buffers = {plain(n): b for n, b in base.named_buffers(remove_duplicate=False) if "lora_" not in n}
    for table, kind in ((params, "_parameters"), (buffers, "_buffers")):
        names = [n for n, _ in (sliced.named_parameters(remove_duplicate=False) if kind == "_parameters"
                                else sliced.named_buffers(remove_duplicate=False))]
        for name in names:
            owner, _, leaf = name.rpartition(".")
            getattr(sliced.get_submodule(owner), kind)[leaf] = table[name]
    assert not any(t.is_meta for t in (*sliced.parameters(), *sliced.buffers())), "a slice tensor was not shared"
    _freeze(sliced)
    return sliced


def shares_base(dlm: DiffusionLM, dlm_source: ModelSource, ar_source: ModelSource) -> bool:
    """Whether the AR folder is an executor slice of this DLM's base: a causal-context DLM with its drafting
    adapter straight over a base, and one LoRA adapter over the same base with `codila_executor_layers`."""
    return (dlm.fim is not None and dlm.fim.drafts and len(dlm_source.adapters) == 1
            and len(ar_source.adapters) == 1 and ar_source.base == dlm_source.base
            and "codila_executor_layers" in ar_source.overrides())


def load_shared_executor(dlm: DiffusionLM, source: ModelSource,
                         boundary_tokens: tuple[str, str] | None = None) -> ExecutorLM:
    """The executor of a causal-context DLM (shares_base): the first `codila_executor_layers` layers of the
    DLM's own base, shared tensor for tensor (base_slice), with the folder's LoRA adapter attached unmerged to
    the slice alone. Boundary tokens: as load_ar (the default model's: <|quad_start|> / <|quad_end|>)."""
    overrides = source.overrides()
    sliced = base_slice(dlm.model, overrides["codila_executor_layers"],
                        f"{source.folder}/config.json: codila_executor_layers")
    for key, value in overrides.items():  # the slice's own config (a copy): the DLM's stays as it is
        setattr(sliced.config, key, value)
    _check_executor_keys(sliced.config, source.folder)
    model = _attach_lora(sliced, source.adapters[-1])
    _freeze(model)
    return as_executor(model, dlm.tokenizer, source.folder, boundary_tokens)


def _check_executor_keys(config: Any, folder: Path) -> None:
    """codila_tau and codila_block_size, where the folder sets them, must be usable."""
    tau = getattr(config, "codila_tau", None)
    if tau is not None:
        check_codila_tau(tau, f"{folder}/config.json: codila_tau")
    block_size = getattr(config, "codila_block_size", None)
    if block_size is not None:
        check_codila_block_size(block_size, f"{folder}/config.json: codila_block_size")


def load_models(
    dlm_path: str | Path | None = None,
    ar_path: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    boundary_tokens: tuple[str, str] | None = None,
    ar_backend: str = "torch",
) -> ModelPair:
    """Load DLM + AR (the shipped default model for a path left as None) and align their vocabularies.

    Either path may be a LoRA adapter folder. ar_backend: "torch", the one AR runtime; "vllm" is refused with
    the reason (the backend was removed: it could not give the torch backend's results).
    """
    if ar_backend == "vllm":
        raise ValueError("the vLLM AR backend was removed: it could not reproduce the torch executor's entropies, "
                         "EOS rule and seeded sampling (docs/real-pair.md, 'Why there is no vLLM backend'); use ar_backend "
                         "'torch', which runs on the GPU as well")
    if ar_backend != "torch":
        raise ValueError(f"ar_backend must be torch; got {ar_backend!r}")
    dlm_path = dlm_path or DEFAULT_MODEL_DIR / "dlm"
    if ar_path is None and (DEFAULT_MODEL_DIR / "ar").exists():
        ar_path = DEFAULT_MODEL_DIR / "ar"
    ar_source = locate_model(ar_path) if ar_path is not None else None
    a_slice = ar_source is not None and "codila_executor_layers" in ar_source.overrides()
    if a_slice and dtype == INT8:
        raise ValueError(f"{ar_path} is an executor slice that shares the base's weights, and dtype int8 would "
                         "quantize them under it: load with dtype auto or bfloat16 to decode with the executor")
    dlm = load_dlm(dlm_path, device, dtype, trust_remote_code, int8_ok=not a_slice)
    if ar_source is None:  # the default model ships no executor
        if dlm.fim is not None:
            return ModelPair(dlm, None, None)  # a causal-context DLM decodes without one (methods ar, verified)
        raise ValueError("a bidirectional DLM needs an AR executor, and the default model ships none: give ar_path")
    if shares_base(dlm, locate_model(dlm_path), ar_source):  # the default model's executor: no second base
        ar = load_shared_executor(dlm, ar_source, boundary_tokens)
    else:
        ar = load_ar(ar_path, device, dtype, trust_remote_code, boundary_tokens)
    return ModelPair(dlm, ar, pair_alignment(dlm, ar))


def pair_alignment(dlm: DiffusionLM, ar: ExecutorLM) -> VocabAlignment:
    """Which DLM ids the AR shares (the DLM's mask and bos ids excluded), on the DLM's device; ValueError when
    the AR could never end a middle (the DLM's EOS is not its token)."""
    alignment = VocabAlignment.from_tokenizers(
        dlm.tokenizer, ar.tokenizer, dlm_vocab=dlm.vocab_size, ar_vocab=ar.embeddings.shape[0],
        exclude=(dlm.mask_id, *_bos_ids(dlm)),
    )
    if not bool(alignment.shared[dlm.eos_id]):
        raise ValueError(f"the DLM's eos id {dlm.eos_id} ({dlm.tokenizer.convert_ids_to_tokens(dlm.eos_id)!r}) is not "
                         "the same token for the AR: the executor could never end a middle; is this the right pair?")
    return alignment.to(dlm.device)


def make_bidirectional(model: PreTrainedModel) -> None:
    """Turn off causal masking everywhere it is decided.

    transformers builds a bidirectional mask when `config.is_causal` is False, but SDPA still passes
    `is_causal=True` when the mask is skipped unless each attention module says otherwise; set both.
    """
    model.config.is_causal = False
    for module in model.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False


def _freeze(model: PreTrainedModel) -> None:
    """Inference weights: no autograd anywhere a loaded model is used (a trainer turns it back on for what it trains)."""
    model.requires_grad_(False)
    model.eval()


# ----------------------------------------------------------------------------------------------------------
# Tokenizers

def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The folder's tokenizer.

    A folder that names its own tokenizer class in remote code (Dream's `DreamTokenizer`: vocab.json +
    merges.txt, no tokenizer.json) is read without that code by transformers' Qwen2 tokenizer, the byte-level
    BPE Dream's class is, with its special tokens and chat template from tokenizer_config.json.
    """
    path = Path(path)
    try:
        if trust_remote_code or not _names_remote_tokenizer(path):
            return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        from transformers import Qwen2Tokenizer

        log.info("%s names a remote tokenizer class; reading its files as a Qwen2 byte-level BPE", path)
        return Qwen2Tokenizer.from_pretrained(path)
    except (OSError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: cannot load its tokenizer: {err}") from err


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, rows: int, folder: Path) -> None:
    """Refuse a tokenizer that loaded broken (ValueError): it must cover most of the model's `rows` vocabulary
    rows and no more, round-trip a piece of code through ids that exist, and put every special token that
    tokenizer_config.json declares at its declared id."""
    n = len(tokenizer)
    if not rows // 2 <= n <= rows:
        raise ValueError(f"{folder}: the tokenizer has {n} tokens for a model with {rows} vocabulary rows: "
                         "it loaded broken or belongs to another model")
    ids = tokenizer.encode(_SANITY_TEXT, add_special_tokens=False)
    back = tokenizer.decode(ids, clean_up_tokenization_spaces=False) if ids else ""
    if not ids or back != _SANITY_TEXT or max(ids) >= rows:
        raise ValueError(f"{folder}: the tokenizer does not round-trip code ({_SANITY_TEXT!r} -> {ids[:12]} -> "
                         f"{back!r}): it loaded broken")
    declared = _read_json(folder / "tokenizer_config.json").get("added_tokens_decoder", {}) \
        if (folder / "tokenizer_config.json").exists() else {}
    wrong = [(spec["content"], int(tid), tokenizer.convert_tokens_to_ids(spec["content"]))
             for tid, spec in declared.items()
             if isinstance(spec, dict) and tokenizer.convert_tokens_to_ids(spec.get("content")) != int(tid)]
    if wrong:
        raise ValueError(f"{folder}: special tokens are not at the ids tokenizer_config.json declares "
                         f"(token, declared, loaded): {wrong[:5]}")


def _names_remote_tokenizer(path: Path) -> bool:
    config = path / "tokenizer_config.json"
    if not config.exists():
        return False
    auto_map = _read_json(config).get("auto_map") or {}
    return bool(auto_map.get("AutoTokenizer") if isinstance(auto_map, dict) else auto_map)


def _turn_end_ids(tokenizer: PreTrainedTokenizerBase, eos_id: int, rows: int) -> tuple[int, ...]:
    """Ids of the TURN_END_TOKENS this tokenizer has, other than eos_id."""
    ids = []
    for token in TURN_END_TOKENS:
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid != eos_id and 0 <= tid < rows:
            ids.append(tid)
    return tuple(ids)


# ----------------------------------------------------------------------------------------------------------
# Checks and small helpers

def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def _checkpoint_dtype(raw: dict) -> str | None:
    return raw.get("torch_dtype") or raw.get("dtype")


def _require_safetensors(path: Path) -> None:
    if not any(path.glob("*.safetensors")):
        raise ValueError(f"{path} has no .safetensors weights; other formats are refused (they can run code)")


def _remote_code_guard(path: Path, is_dream: bool, load):
    """Run `load`; turn the known failure of Dream's own modelling code under transformers 5 into advice."""
    try:
        return load()
    except KeyError as err:
        if is_dream and err.args == ("default",):
            raise ValueError(
                f"{path}: Dream's own modelling code (modeling_dream.py, written for transformers 4.46) fails under "
                f"this transformers ({_transformers_version()}): its rotary embedding asks for "
                "ROPE_INIT_FUNCTIONS['default'], which transformers 5 removed. Load it without --trust-remote-code: "
                "CoDiLA maps Dream's weights onto transformers' own Qwen2 classes (bidirectional, logit shift), "
                "which give the same logits"
            ) from err
        raise


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _check_loading(path: Path, info: dict) -> None:
    """Refuse a checkpoint whose weights do not match the architecture (silently random layers)."""
    missing = [k for k in info.get("missing_keys", []) if "rotary_emb" not in k]
    unexpected = [k for k in info.get("unexpected_keys", []) if "rotary_emb" not in k]
    mismatched = info.get("mismatched_keys", [])
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{path}: weights do not match the architecture: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, mismatched {list(mismatched)[:5]}"
        )


def _special_id(raw: dict, tokenizer: PreTrainedTokenizerBase, key: str, names: tuple[str, ...]) -> int:
    value = raw.get(key)
    if isinstance(value, list):
        value = value[0]
    if value is None and key == "eos_token_id":
        value = tokenizer.eos_token_id
    if value is None:
        for name in names:
            tid = tokenizer.convert_tokens_to_ids(name)
            if isinstance(tid, int) and tid != tokenizer.unk_token_id:
                value = tid
                break
    if value is None:
        raise ValueError(f"cannot find {key} in config.json or the tokenizer")
    return int(value)


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str, path: Path) -> int:
    tid = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(tid, int) or tid is None or (tokenizer.unk_token_id is not None and tid == tokenizer.unk_token_id):
        raise ValueError(f"{path}: the AR tokenizer has no {token!r} token; set boundary_tokens to two it has")
    return tid


def _bos_ids(dlm: DiffusionLM) -> tuple[int, ...]:
    bos = dlm.tokenizer.bos_token_id
    cfg_bos = getattr(dlm.model.config, "bos_token_id", None)
    return tuple(i for i in {bos, cfg_bos} if isinstance(i, int) and i != dlm.eos_id)
