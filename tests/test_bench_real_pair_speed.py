"""benchmarks.real_pair_speed (a GPU script) checked on CPU with 2-layer stand-ins of the two architectures."""

import json

import torch

from benchmarks.real_pair_speed import DREAM_CODER_7B, QWEN3_06B, build_pair, main


def test_the_script_decodes_every_block_size_and_reports_against_the_paper(tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert main(["--tiny", "--device", "cpu", "--dtype", "float32", "--max-new-tokens", "8", "--prompt-tokens", "4",
                 "--repeats", "1", "--json", str(out)]) == 0
    rows = {r["decoder"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"codila:b=2", "codila:b=4", "codila:b=8", "dlm:k=1"}
    # static CoDiLA commits B positions per DLM pass: N / B passes, one batched AR call each
    for b in (2, 4, 8):
        assert rows[f"codila:b={b}"]["dlm_forwards"] == rows[f"codila:b={b}"]["ar_calls"] == 8 // b
    assert rows["dlm:k=1"]["dlm_forwards"] == 8 and rows["dlm:k=1"]["ar_calls"] == 0
    assert [rows[f"codila:b={b}"]["paper_tokens_per_s"] for b in (2, 4, 8)] == [18, 33, 60]
    assert "paper (A100)" in capsys.readouterr().out


def test_the_full_size_configs_are_the_published_ones():
    # 7.6B + 0.6B parameters, counted from the configs without building anything
    def params(c, tied):
        h, i, layers, v = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
        hd = c.get("head_dim", h // c["num_attention_heads"])
        attn = h * hd * (c["num_attention_heads"] * 2 + c["num_key_value_heads"] * 2)
        return layers * (attn + 3 * h * i) + v * h * (1 if tied else 2)

    assert round(params(DREAM_CODER_7B, tied=False) / 1e9, 1) == 7.6
    assert round(params(QWEN3_06B, tied=True) / 1e9, 1) == 0.6
    pair = build_pair(torch.device("cpu"), torch.float32, tiny=True)
    assert pair.dlm.vocab_size == 152_064 and pair.ar.embeddings.shape[0] == 151_936
    assert int(pair.alignment.shared.sum()) == 151_665
