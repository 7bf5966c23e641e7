"""Fine-tune the AR executor of a CoDiLA pair on a frozen DLM's marginals (the method's training recipe).

    python -m training.finetune --dlm DLM_DIR --ar AR_DIR --data train.jsonl --block-size 4 --output runs/ar-b4
    torchrun --nproc_per_node 8 -m training.finetune --dlm DLM_DIR --ar AR_DIR --data train.jsonl \\
        --block-size 4 --output runs/ar-b4

Per sample: the response is cut into contiguous blocks of B tokens; t ~ U(0.2, 0.8) and every block is
masked with p = (1 - eps) t + eps (eps = 1e-3), at least one block always. The frozen DLM runs on the
masked sequence; for each masked block the AR's input is [E(<think>), e_1..e_B, E(</think>)] built from the
DLM's marginals by decoding.soft (the very code inference uses), followed by the block's true tokens
(teacher forcing); the AR learns cross-entropy on the B true tokens (training.finetune_recipe; the loop is
training.finetune_trainer's, the settings training.config.FinetuneConfig's). Defaults are the paper's: AdamW,
lr 1e-5, cosine decay, warmup ratio 0.03, max grad norm 7.0, weight decay 0, batch 1 x 8 accumulation,
validation every 100 steps keeping the best checkpoint by validation loss, 32k steps.

Data (`--data`, repeatable; training.finetune_data):
- instruction records: a .jsonl file, a .parquet shard, or a folder of them (Ling-Coder-SFT's
  data/train_000NN_of_00026.parquet): a chat `messages` list of {role, content} (user/assistant or
  HUMAN/ASSISTANT) or two fields (`--instruction-field`, `--response-field`). The last assistant turn is
  the response, rendered after the DLM tokenizer's chat template; the loss is on the response only; a
  response cut at `--max-response` gets no EOS. Records are tokenised once into `--data-cache`;
- a folder (or a single file) of source code: spans of the files become the response (the editor's infill
  shape: prefix + middle + EOS padding up to `--budget` + suffix), the rest of the file is context;
- the word `stdlib`: the training split of the Python standard library, less the "dev" files pretraining
  validates on (held-out files are never read).
Any other file type is refused.

`--output` becomes a complete HF model folder (config, model.safetensors, tokenizer) holding the best
checkpoint, loadable by decoding.models.load_ar. With `--lora-rank R` (> 0) only a new LoRA adapter trains
(peft; every attention and MLP projection by default, plus the embedding rows of the two boundary tokens)
and `--output` becomes an adapter folder instead (adapter_config.json naming --ar as its base,
adapter_model.safetensors, config.json with the codila_* keys, tokenizer), which every loader accepts and
merges at load:

    python -m training.finetune --dlm DLM_DIR --ar AR_DIR --data train.jsonl --lora-rank 16 --lr 2e-4 --output runs/ar-lora

--ar may itself be an adapter folder: it is merged, and the new adapter names it as its base. Resumable
state lives in `--output`/checkpoints/ (written atomically; the trained tensors only); rerunning the same
command after a kill continues from the last checkpoint with the same data, masks and optimizer state.
`--json-progress` prints one JSON object per line on stdout. Every flag with its default and range:
docs/training.md, made from the settings table (training.config.FinetuneConfig).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from training.config import FinetuneConfig
from training.finetune_trainer import Trainer

PROG = "python -m training.finetune"


def finetune(config: FinetuneConfig, on_step: Callable[[int], None] | None = None) -> dict:
    """Fine-tune and return {"done", "output", "best_val_loss", "step"}; `output` is a loadable AR folder."""
    Path(config.output).mkdir(parents=True, exist_ok=True)
    return Trainer(config).train(on_step)


def parse_args(argv: list[str] | None = None) -> FinetuneConfig:
    """The run the command line describes. SystemExit for a bad flag, ValueError for values that do not go
    together."""
    return FinetuneConfig.from_command_line(FinetuneConfig.parser(PROG, __doc__), argv)


def main(argv: list[str] | None = None) -> None:
    finetune(FinetuneConfig.command_line(PROG, __doc__, argv))


if __name__ == "__main__":
    main()
