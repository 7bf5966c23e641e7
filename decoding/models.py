"""Loading the two models of the CoDiLA stack from local Hugging Face folders (safetensors only).

- The DLM: a Dream-family checkpoint (model_type "Dream") mapped onto transformers' Qwen2 classes, or any
  plain Qwen2/Qwen3/Llama checkpoint, always run with bidirectional attention.
- The AR executor: any transformers causal LM (Qwen3-0.6B in the paper), run causally.

Nothing here downloads: paths are local folders, `base:NAME` (a pretrained base the install brought, see
decoding.base) or .gguf files (converted once to a cached folder). `trust_remote_code` only when asked for.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers import PreTrainedModel, Qwen2Config, Qwen2ForCausalLM

from decoding.base import resolve_model_path
from decoding.soft import VocabAlignment

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"

# config.json keys that describe Dream's remote code, not the network: dropped when mapping onto Qwen2.
_DREAM_ONLY_KEYS = ("auto_map", "architectures", "model_type", "transformers_version")


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


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' -> bfloat16 on CUDA, float32 elsewhere; or one of float32, bfloat16, float16."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype must be auto, {', '.join(table)}; got {dtype!r}")
    return table[dtype]


@dataclass
class DiffusionLM:
    """A masked-diffusion LM: bidirectional attention, one forward pass gives marginals for every position.

    logit_shift: True for AR-initialised DLMs (Dream): the prediction for position i is read from the
    output at i - 1. A property of the checkpoint (config `model_type` "Dream", or `dlm_logit_shift` in
    config.json), never guessed.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    mask_id: int
    eos_id: int
    logit_shift: bool

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def vocab_size(self) -> int:
        return self.model.get_output_embeddings().weight.shape[0]


@dataclass
class ExecutorLM:
    """The small causal AR that decodes one block of B tokens from soft DLM marginals.

    open_id / close_id: the boundary tokens around the soft embeddings (`<think>` / `</think>` for Qwen3).
    vllm_engine: a `vllm.LLM` serving the same weights when the vLLM backend was chosen (load_models
    ar_backend="vllm"); the torch model then only provides the embedding matrix.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    open_id: int
    close_id: int
    vllm_engine: Any = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def embeddings(self) -> torch.Tensor:
        """E_ar: (V_ar, H) input embedding matrix."""
        return self.model.get_input_embeddings().weight

    @property
    def tau(self) -> float | None:
        """The dynamic threshold this AR's trainer chose (`codila_tau` in config.json; checked at load),
        or None."""
        return getattr(self.model.config, "codila_tau", None)


@dataclass
class ModelPair:
    """Everything one decode needs: the DLM, the AR executor and how their vocabularies line up."""

    dlm: DiffusionLM
    ar: ExecutorLM
    alignment: VocabAlignment


def dlm_logits(dlm: DiffusionLM, input_ids: torch.Tensor) -> torch.Tensor:
    """Full bidirectional forward. input_ids: (N, L) -> logits (N, L, V), row i predicting token i."""
    logits = dlm.model(input_ids=input_ids, use_cache=False).logits  # (N, L, V)
    return shift_logits(logits) if dlm.logit_shift else logits


def shift_logits(logits: torch.Tensor) -> torch.Tensor:
    """Dream logit shift, applied exactly once: position i is predicted by the output at i - 1.

    Position 0 has no left neighbour and keeps its own output (as Dream does). logits: (N, L, V).
    """
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def load_dlm(
    path: str | Path,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    attn_implementation: str = "sdpa",
) -> DiffusionLM:
    """Load a DLM from a local folder (or base:NAME / a .gguf file) and make its attention bidirectional."""
    path = _local_folder(resolve_model_path(path))
    _require_safetensors(path)
    dev = resolve_device(device)
    raw = json.loads((path / "config.json").read_text())
    is_dream = str(raw.get("model_type", "")).lower() == "dream"
    kwargs = dict(dtype=resolve_dtype(dtype, dev), use_safetensors=True, attn_implementation=attn_implementation)

    if is_dream and not trust_remote_code:
        config = Qwen2Config(**{k: v for k, v in raw.items() if k not in _DREAM_ONLY_KEYS})
        model, info = Qwen2ForCausalLM.from_pretrained(path, config=config, output_loading_info=True, **kwargs)
    else:
        # Dream's auto_map names only AutoModel (DreamModel, which carries the lm_head)
        auto = AutoModel if is_dream else AutoModelForCausalLM
        model, info = auto.from_pretrained(path, trust_remote_code=trust_remote_code, output_loading_info=True, **kwargs)
    _check_loading(path, info)
    make_bidirectional(model)
    model.to(dev).eval()

    tokenizer = load_tokenizer(path, trust_remote_code)
    mask_id = _special_id(raw, tokenizer, "mask_token_id", ("<|mask|>", "[MASK]", "<mask>"))
    eos_id = _special_id(raw, tokenizer, "eos_token_id", ())
    logit_shift = bool(raw.get("dlm_logit_shift", is_dream))
    log.info("DLM %s: %s, %s on %s, mask=%d eos=%d shift=%s", path, type(model).__name__,
             model.dtype, dev, mask_id, eos_id, logit_shift)
    return DiffusionLM(model, tokenizer, mask_id, eos_id, logit_shift)


def check_codila_tau(tau: object, where: str) -> None:
    """Raise ValueError (naming `where`) unless tau is a usable dynamic threshold: a number of nats in (0, 100]."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 < tau <= 100:
        raise ValueError(f"{where} must be a number of nats in (0, 100]; got {tau!r}")


def load_ar(
    path: str | Path,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    boundary_tokens: tuple[str, str] = ("<think>", "</think>"),
    attn_implementation: str = "sdpa",
) -> ExecutorLM:
    """Load the AR executor (any causal LM; a folder, base:NAME or a .gguf file) and its boundary tokens."""
    path = _local_folder(resolve_model_path(path))
    _require_safetensors(path)
    dev = resolve_device(device)
    model, info = AutoModelForCausalLM.from_pretrained(
        path,
        dtype=resolve_dtype(dtype, dev),
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
        attn_implementation=attn_implementation,
        output_loading_info=True,
    )
    _check_loading(path, info)
    tau = getattr(model.config, "codila_tau", None)
    if tau is not None:
        check_codila_tau(tau, f"{path}/config.json: codila_tau")
    model.to(dev).eval()
    tokenizer = load_tokenizer(path, trust_remote_code)
    open_id, close_id = (_token_id(tokenizer, t, path) for t in boundary_tokens)
    log.info("AR %s: %s, %s on %s, boundary ids %d/%d, dynamic threshold %s", path, type(model).__name__,
             model.dtype, dev, open_id, close_id, f"{tau} nats" if tau is not None else "not set")
    return ExecutorLM(model, tokenizer, open_id, close_id)


def load_models(
    dlm_path: str | Path | None = None,
    ar_path: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    boundary_tokens: tuple[str, str] = ("<think>", "</think>"),
    ar_backend: str = "torch",
) -> ModelPair:
    """Load DLM + AR (the shipped default model for a path left as None) and align their vocabularies.

    ar_backend: "torch" runs the AR executor with transformers; "vllm" also starts a vLLM engine on the AR
    folder (GPU, vLLM >= 0.11; imported only here).
    """
    if ar_backend not in ("torch", "vllm"):
        raise ValueError(f"ar_backend must be torch or vllm; got {ar_backend!r}")
    dlm = load_dlm(dlm_path or DEFAULT_MODEL_DIR / "dlm", device, dtype, trust_remote_code)
    ar = load_ar(ar_path or DEFAULT_MODEL_DIR / "ar", device, dtype, trust_remote_code, boundary_tokens)
    if ar_backend == "vllm":
        from decoding.executor import load_vllm_engine

        ar.vllm_engine = load_vllm_engine(str(ar_path or DEFAULT_MODEL_DIR / "ar"), dtype=dtype,
                                          trust_remote_code=trust_remote_code)
    alignment = VocabAlignment.from_tokenizers(
        dlm.tokenizer, ar.tokenizer, dlm_vocab=dlm.vocab_size, ar_vocab=ar.embeddings.shape[0],
        exclude=(dlm.mask_id, *_bos_ids(dlm)),
    )
    return ModelPair(dlm, ar, alignment.to(dlm.device))


def make_bidirectional(model: PreTrainedModel) -> None:
    """Turn off causal masking everywhere it is decided.

    transformers builds a bidirectional mask when `config.is_causal` is False, but SDPA still passes
    `is_causal=True` when the mask is skipped unless each attention module says otherwise; set both.
    """
    model.config.is_causal = False
    for module in model.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False


def load_tokenizer(path: Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The folder's tokenizer; Dream's remote tokenizer class falls back to its tokenizer.json/BPE files."""
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (ValueError, OSError, KeyError) as err:
        if trust_remote_code:
            raise
        log.info("AutoTokenizer failed for %s (%s); loading its tokenizer files directly", path, err)
    from transformers import PreTrainedTokenizerFast, Qwen2TokenizerFast

    if (path / "tokenizer.json").exists():
        return PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"))
    if (path / "vocab.json").exists() and (path / "merges.txt").exists():
        tok = Qwen2TokenizerFast(vocab_file=str(path / "vocab.json"), merges_file=str(path / "merges.txt"))
        added = json.loads((path / "tokenizer_config.json").read_text()).get("added_tokens_decoder", {})
        for _, spec in sorted(added.items(), key=lambda kv: int(kv[0])):
            tok.add_special_tokens({"additional_special_tokens": [spec["content"]]})
        return tok
    raise ValueError(f"{path}: no tokenizer found (tokenizer.json, or vocab.json + merges.txt)")


def _local_folder(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ValueError(f"model folder {str(path)!r} does not exist (models are loaded from local folders only)")
    if not (path / "config.json").exists():
        raise ValueError(f"{path} has no config.json: is it a Hugging Face model folder?")
    return path


def _require_safetensors(path: Path) -> None:
    if not any(path.glob("*.safetensors")):
        raise ValueError(f"{path} has no .safetensors weights; other formats are refused (they can run code)")


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
