"""`hf-posenc compare` (fairness of the A/B experiment), `hf-posenc demo` and the command line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hf_posenc import cli, compare, demo


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Real English text from the standard library (pydoc_data), a few files."""
    from pydoc_data.topics import topics

    d = tmp_path_factory.mktemp("corpus")
    names = sorted(topics, key=lambda k: -len(topics[k]))[:12]
    for name in names:
        (d / f"{name}.txt").write_text(topics[name])
    return str(d / "*.txt")


def run_compare(tmp_path, corpus, *extra):
    out = tmp_path / "cmp"
    argv = ["--family", "gpt2", "--size", "tiny", "--train-len", "32", "--eval-lengths", "32,64",
            "--batch-size", "4", "--vocab-size", "300", "--eval-windows", "2", "--corpus", corpus,
            "--out", str(out), *extra]
    assert compare.main(argv) == 0
    return out


def test_compare_trains_each_encoding_on_identical_data(tmp_path, corpus):
    out = run_compare(tmp_path, corpus, "--encodings", "alibi,learned,rope", "--steps", "4")
    results = json.loads((out / "results.json").read_text())["results"]
    assert [r["encoding"] for r in results] == ["alibi", "learned", "rope"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    per_encoding = {}
    for rec in log:
        per_encoding.setdefault(rec["encoding"], []).append((rec["step"], rec["batch"], rec["seed"], rec["lr"]))
    # same steps, same batches in the same order, same seed and schedule for every encoding
    assert len({tuple(v) for v in per_encoding.values()}) == 1 and len(per_encoding["alibi"]) == 4
    first_losses = {rec["encoding"]: rec["loss"] for rec in log if rec["step"] == 0}
    assert len(set(first_losses.values())) > 1  # the encodings really differ
    learned = next(r for r in results if r["encoding"] == "learned")
    assert learned["perplexity"]["64"] is None and "table has 32" in learned["notes"]["64"]
    assert all(r["perplexity"]["32"] > 1 for r in results)
    md = (out / "results.md").read_text()
    assert "| alibi |" in md and "n/a" in md and "train tok/s" in md
    assert (out / "perplexity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_equal_compute_budget_and_bert(tmp_path, corpus):
    out = run_compare(tmp_path, corpus, "--encodings", "t5,nope", "--minutes", "0.02")
    results = json.loads((out / "results.json").read_text())["results"]
    assert all(r["steps"] >= 1 and r["train_seconds"] >= 1.0 for r in results)
    out_bert = tmp_path / "bert"
    assert compare.main(["--family", "bert", "--size", "tiny", "--train-len", "32", "--eval-lengths", "32,64",
                         "--encodings", "alibi,sinusoidal", "--steps", "2", "--batch-size", "2", "--vocab-size",
                         "300", "--eval-windows", "1", "--corpus", corpus, "--out", str(out_bert)]) == 0
    bert = json.loads((out_bert / "results.json").read_text())["results"]
    assert [r["encoding"] for r in bert] == ["alibi", "sinusoidal"] and all(r["steps"] == 2 for r in bert)
    # MLM pseudo-perplexity, finite and above 1 at both lengths (no table limits either encoding)
    assert all(1 < r["perplexity"][n] < float("inf") for r in bert for n in ("32", "64"))
    assert bert[0]["perplexity"]["32"] != bert[1]["perplexity"]["32"]


def test_compare_rejects_bad_arguments(tmp_path, corpus, capsys):
    assert compare.main(["--encodings", "alibi,foo", "--corpus", corpus, "--out", str(tmp_path)]) == 2
    assert "unknown encoding(s) ['foo']" in capsys.readouterr().err
    assert compare.main(["--eval-lengths", "a,b", "--corpus", corpus, "--out", str(tmp_path)]) == 2


def test_demo_builds_the_eval_run():
    args = demo.add_arguments(__import__("argparse").ArgumentParser()).parse_args([])
    argv = demo.eval_argv(args)
    assert argv[argv.index("--lengths") + 1] == "8192,16384"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--extend"] == \
        ["yarn:factor=2.0", "ntk:factor=2.0", "self_extend:factor=2.0"]
    assert "--passkey" in argv and argv[argv.index("--dtype") + 1] == "bfloat16"
    assert argv[argv.index("--passkey-lengths") + 1] == "16384"  # 8k is the perplexity control
    args = demo.add_arguments(__import__("argparse").ArgumentParser()).parse_args(["--passkey-lengths", "8192,16384"])
    argv = demo.eval_argv(args)
    assert argv[argv.index("--passkey-lengths") + 1] == "8192,16384"


def test_demo_quick_on_a_local_model(tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pydoc_data.topics import topics

    tok = compare.build_tokenizer([topics[k] for k in sorted(topics)[:30]], 400)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tok),
                                         max_position_embeddings=256, pad_token_id=0, bos_token_id=1,
                                         eos_token_id=1))
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    out = tmp_path / "demo"
    code = cli.main(["demo", "--quick", "--model", str(tmp_path / "m"), "--trained-length", "256",
                     "--dtype", "float32", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    names = [v["name"] for v in report["variants"]]
    assert names == ["native", "extend:yarn:factor=2.0,original_max_length=256",
                     "extend:ntk:factor=2.0,original_max_length=256",
                     "extend:self_extend:factor=2.0,original_max_length=256"]
    assert all(v.get("error") in (None, "") for v in report["variants"])


@pytest.mark.parametrize("command", ["list", "demo", "eval", "compare", "finetune"])
def test_every_command_has_help(command):
    out = subprocess.run([sys.executable, "-m", "hf_posenc.cli", command, "--help"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout.lower()


def test_list_command_prints_encodings(capsys):
    assert cli.main(["list"]) == 0
    assert "alibi" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_quick_on_the_embedded_model(tmp_path):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--out", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    native = report["variants"][0]
    ppl = native["perplexity"]["lengths"][0]["perplexity"]
    assert 1 < ppl < 100  # a real pretrained model on real text
