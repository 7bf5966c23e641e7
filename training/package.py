"""Package trained adapters as the shipped default model: small, bfloat16, over a base the install brings.

    python -m training.package --dlm ~/.cache/codila-lsp/runs/v6-dlm-lora/export \\
        --ar ~/.cache/codila-lsp/runs/v6-ar-b4 --output decoding/default_model

Each of `dlm/` and `ar/` becomes a peft LoRA adapter folder: adapter_config.json (its base named by
registry, e.g. `base:qwen2.5-coder-0.5b`, never a path of this machine), adapter_model.safetensors in bfloat16 and
config.json with the CoDiLA keys the loader reads (the base's config with them on top). No tokenizer: the
base's is used, so the pair shares its ids exactly. Written beside the target and swapped in, folder by
folder. Refuses adapters over anything but a registered base, and a pair over the size limit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from decoding.base import BASE_PREFIX

log = logging.getLogger("training.package")

MAX_MEGABYTES = 32.0  # per version, both adapters together (the project's limit on weights in git)
KEPT_FILES = ("adapter_config.json", "adapter_model.safetensors", "config.json")


def package_adapter(source: Path, target: Path) -> int:
    """Copy one adapter folder into `target` with bf16 weights; returns the weight file's size in bytes."""
    spec = json.loads((source / "adapter_config.json").read_text())
    base = spec.get("base_model_name_or_path", "")
    if not base.startswith(BASE_PREFIX):
        raise ValueError(f"{source}: the adapter's base is {base!r}; a shipped adapter must name a registered "
                         f"base ({BASE_PREFIX}NAME) so that it loads on every machine")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = load_file(source / "adapter_model.safetensors")
    halved = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
    save_file(halved, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    spec.pop("revision", None)
    (tmp / "adapter_config.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    config = json.loads((source / "config.json").read_text())
    config.pop("_name_or_path", None)
    config.pop("codila_source", None)  # the base's conversion record: it describes the cache, not this folder
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return (target / "adapter_model.safetensors").stat().st_size


def package(dlm: Path, ar: Path, output: Path) -> dict:
    sizes = {}
    for name, source in (("dlm", dlm), ("ar", ar)):
        sizes[name] = package_adapter(Path(source).expanduser(), Path(output) / name)
    total = sum(sizes.values()) / 1e6
    if total > MAX_MEGABYTES:
        raise ValueError(f"the pair's weights are {total:.1f} MB, over the {MAX_MEGABYTES:g} MB limit: lower the rank")
    log.info("packaged into %s: %s (%.1f MB)", output, {k: f"{v / 1e6:.1f} MB" for k, v in sizes.items()}, total)
    return sizes


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dlm", required=True, help="the DLM's adapter folder (training.adapt's export/)")
    p.add_argument("--ar", required=True, help="the executor's adapter folder (training.finetune --lora-rank's output)")
    p.add_argument("--output", default="decoding/default_model", help="the folder that gets dlm/ and ar/")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    package(Path(args.dlm), Path(args.ar), Path(args.output))


if __name__ == "__main__":
    main()
