"""scripts/finetune.py / hf_posenc.training on tiny random models with a tiny offline tokenizer.

Runs go through ``hf_posenc.training.main`` in-process (fast), except the kill test and the
2-process tests, which start real processes (``torchrun``, gloo on CPU).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import hf_posenc
from hf_posenc.training import main
from hf_posenc.training.pose import pose_position_ids

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "finetune.py")
WORDS = [f"w{i}" for i in range(100)]
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = 128


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run far faster on one thread (and do not fight over shared CI cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def subprocess_env():
    return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS + [".", ","])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                   eos_token="[EOS]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def make_texts(directory, n_docs=12, words=300, seed=0):
    """Text files whose words follow a simple pattern (learnable: the loss falls)."""
    rng = random.Random(seed)
    os.makedirs(directory, exist_ok=True)
    for d in range(n_docs):
        start, out = rng.randrange(100), []
        for i in range(words):
            out.append(WORDS[(start + 3 * i + (i // 7)) % 100] if rng.random() > 0.1 else rng.choice(WORDS))
            if i % 11 == 10:
                out.append(".")
        with open(os.path.join(directory, f"doc{d:02d}.txt"), "w") as f:
            f.write(" ".join(out))
    return str(directory)


def save_tiny(directory, family="gpt2", dropout=0.0, max_pos=64, **overrides):
    from transformers import (
        BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
    )

    torch.manual_seed(0)
    tok = make_tokenizer()
    ids = dict(vocab_size=VOCAB, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
               eos_token_id=tok.eos_token_id)
    if family == "gpt2":
        cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=max_pos, resid_pdrop=dropout,
                         embd_pdrop=dropout, attn_pdrop=dropout, **ids, **overrides)
        model = GPT2LMHeadModel(cfg)
    elif family == "llama":
        cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=max_pos, **ids, **overrides)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                         max_position_embeddings=max_pos, hidden_dropout_prob=dropout,
                         attention_probs_dropout_prob=dropout, **ids, **overrides)
        model = BertForMaskedLM(cfg)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    return make_texts(tmp_path_factory.mktemp("texts"))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("gpt2"), "gpt2")


@pytest.fixture(scope="module")
def gpt2_dropout_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("gpt2d"), "gpt2", dropout=0.1)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("llama"), "llama")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("bert"), "bert")


def base_args(model, texts, out, *extra, steps=4, seq=16, bs=2):
    """Arguments of a small run; ``model`` or ``texts`` None leaves --model / --train-files out."""
    head = (["--model", model] if model else []) + (["--train-files", texts] if texts else [])
    return head + ["--output-dir", str(out), "--seq-len", str(seq), "--batch-size", str(bs), "--max-steps", str(steps),
                   "--lr", "3e-3", "--no-progress", "--eval-documents", "2", *map(str, extra)]


def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def losses(out):
    return [m["loss"] for m in metrics(out)]


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ------------------------------------------------------------------------------ basics
def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--model", "--posenc", "--extend", "--objective", "--train-files", "--dataset", "--seq-len", "--pose",
                 "--pose-target-len", "--lora", "--lora-r", "--lora-alpha", "--lora-targets", "--lora-trainable",
                 "--max-steps", "--batch-size", "--grad-accum", "--lr", "--lr-schedule", "--warmup-steps",
                 "--weight-decay", "--bf16", "--gradient-checkpointing", "--eval-every", "--eval-lengths",
                 "--save-every", "--output-dir", "--resume-from", "--seed", "--max-train-tokens", "--max-documents"):
        assert flag in text, flag


def test_script_help_runs():
    out = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True, timeout=120,
                         env=subprocess_env())
    assert out.returncode == 0 and "--pose-target-len" in out.stdout


def test_single_process_run_writes_metrics_plot_and_loadable_model(gpt2_dir, texts, tmp_path):
    out = tmp_path / "run"
    rc = main(base_args(gpt2_dir, texts, out, "--posenc", "alibi", "--eval-every", "3", "--eval-lengths", "16,32",
                        steps=6, bs=4))
    assert rc == 0
    lines = metrics(out)
    assert [m["step"] for m in lines] == list(range(1, 7))
    for m in lines:
        assert {"step", "loss", "lr", "tokens", "tokens_per_s", "world_size"} <= m.keys()
        assert m["world_size"] == 1 and m["tokens_per_s"] > 0
    assert lines[-1]["tokens"] == 6 * 4 * 16
    assert lines[-1]["loss"] < lines[0]["loss"]
    assert set(lines[2]["eval"]) == {"16", "32"} and all(v > 0 for v in lines[2]["eval"].values())
    assert os.path.getsize(out / "loss_curve.png") > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 1 and summary["final_loss"] == lines[-1]["loss"]
    model = hf_posenc.from_pretrained(str(out / "final"))
    assert model.config.posenc["encoding"] == "alibi"
    assert hf_posenc.get_posenc(model).encoding.name == "alibi"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out / "final")
    ids = tok("w1 w2 w3 w4", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


def test_data_cache_is_reused(gpt2_dir, texts, tmp_path):
    cache = tmp_path / "cache"
    for i in range(2):
        assert main(base_args(gpt2_dir, texts, tmp_path / f"r{i}", "--cache-dir", cache, steps=1)) == 0
    files = sorted(os.listdir(cache))
    assert len([f for f in files if f.startswith("tokens-")]) == 1
    assert len([f for f in files if f.startswith("packed-")]) == 1
    assert losses(tmp_path / "r0") == losses(tmp_path / "r1")


def test_grad_accum_steps_the_optimizer_once_per_accumulation(gpt2_dir, texts, tmp_path):
    assert main(base_args(gpt2_dir, texts, tmp_path / "acc", "--grad-accum", "3", steps=2, bs=2)) == 0
    lines = metrics(tmp_path / "acc")
    assert [m["optimizer_steps"] for m in lines] == [1, 2]
    assert [m["micro_steps"] for m in lines] == [3, 6]
    assert lines[-1]["tokens"] == 2 * 3 * 2 * 16
    # 2 micro-batches of 2 accumulate to the same update as 1 batch of 4 (same samples)
    assert main(base_args(gpt2_dir, texts, tmp_path / "a2", "--grad-accum", "2", steps=3, bs=2)) == 0
    assert main(base_args(gpt2_dir, texts, tmp_path / "a1", steps=3, bs=4)) == 0
    assert losses(tmp_path / "a2") == pytest.approx(losses(tmp_path / "a1"), abs=1e-5)


# ------------------------------------------------------------------------------ resuming
def _compare(a, b, tol=1e-6):
    la, lb = metrics(a), metrics(b)
    assert [m["step"] for m in la] == [m["step"] for m in lb]
    for x, y in zip(la, lb):
        assert abs(x["loss"] - y["loss"]) <= tol, (x, y)
        assert x["lr"] == pytest.approx(y["lr"], abs=1e-12)
        assert x["tokens"] == y["tokens"]


def test_resume_after_stop_matches_uninterrupted_run(gpt2_dropout_dir, texts, tmp_path):
    common = ("--posenc", "t5", "--grad-accum", "2", "--warmup-steps", "2", "--save-every", "2")
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert main(base_args(gpt2_dropout_dir, texts, ref, *common, steps=7)) == 0
    assert main(base_args(gpt2_dropout_dir, texts, cut, *common, "--stop-after", "5", steps=7)) == 0
    assert [m["step"] for m in metrics(cut)] == [1, 2, 3, 4, 5]
    assert not (cut / "final").exists()
    assert main(base_args(gpt2_dropout_dir, texts, cut, *common, steps=7)) == 0  # auto-resume from step 4
    assert json.loads((cut / "summary.json").read_text())["resumed_from"].endswith("step-4")
    _compare(ref, cut)
    state = json.loads((cut / "checkpoints" / "step-6" / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["micro_steps"] == 12 and state["samples_consumed"] == 24
    a, b = hf_posenc.from_pretrained(str(ref / "final")), hf_posenc.from_pretrained(str(cut / "final"))
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.allclose(p, q, atol=1e-6), n


def test_resume_after_sigkill_matches_uninterrupted_run(gpt2_dropout_dir, texts, tmp_path):
    common = ("--save-every", "1", "--max-grad-norm", "0.5")
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    assert main(base_args(gpt2_dropout_dir, texts, ref, *common, steps=12)) == 0
    proc = subprocess.Popen([sys.executable, SCRIPT, *base_args(gpt2_dropout_dir, texts, killed, *common, steps=12)],
                            env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    path = killed / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode != 0, "the run finished before it could be killed"
    assert not (killed / "final").exists()
    assert main(base_args(gpt2_dropout_dir, texts, killed, *common, steps=12)) == 0
    resumed = json.loads((killed / "summary.json").read_text())["resumed_from"]
    assert resumed is not None and int(resumed.rsplit("-", 1)[1]) >= 3
    _compare(ref, killed)


def test_resume_refuses_a_different_run(gpt2_dir, texts, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(base_args(gpt2_dir, texts, out, "--save-every", "1", "--stop-after", "1", steps=3)) == 0
    assert main(base_args(gpt2_dir, texts, out, "--save-every", "1", steps=3, seq=32)) == 2
    assert "cannot resume" in capsys.readouterr().err


# ------------------------------------------------------------------------------ 2 processes
def _torchrun(args, nproc=2, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), SCRIPT, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=subprocess_env())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return out


def test_two_processes_match_one_process_and_see_disjoint_data(gpt2_dir, texts, tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    common = ("--log-samples", "--grad-accum", "2", "--weight-decay", "0.1")
    _torchrun(base_args(gpt2_dir, texts, two, *common, steps=4, bs=2))
    assert main(base_args(gpt2_dir, texts, one, *common, steps=4, bs=4)) == 0
    lines = metrics(two)
    assert [m["world_size"] for m in lines] == [2] * 4
    assert json.loads((two / "summary.json").read_text())["distributed_type"] == "MULTI_CPU"
    assert losses(two) == pytest.approx(losses(one), abs=1e-5)
    r0, r1 = read_jsonl(two / "samples_rank0.jsonl"), read_jsonl(two / "samples_rank1.jsonl")
    b0 = [b for line in r0 for b in line["blocks"]]
    b1 = [b for line in r1 for b in line["blocks"]]
    assert len(b0) == len(b1) == 4 * 2 * 2
    assert not set(b0) & set(b1), "the two processes read the same sample"
    single = read_jsonl(one / "samples_rank0.jsonl")
    for a, b, s in zip(r0, r1, single):  # per micro-step, the union of the ranks is the 1-process batch
        assert a["micro_step"] == b["micro_step"] == s["micro_step"]
        assert a["blocks"] + b["blocks"] == s["blocks"]
    model = hf_posenc.from_pretrained(str(two / "final"))
    ref = hf_posenc.from_pretrained(str(one / "final"))
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        assert torch.allclose(p, q, atol=1e-5), n


# ------------------------------------------------------------------------------ PoSE
def test_pose_position_ids_span_target_and_stay_sorted():
    seq, target = 64, 4096
    maxima = []
    for s in range(300):
        pos = pose_position_ids(seq, target, torch.Generator().manual_seed(s))
        assert pos.shape == (seq,) and pos[0] == 0
        assert (pos[1:] > pos[:-1]).all()
        assert int(pos.max()) < target
        maxima.append(int(pos.max()))
    assert max(maxima) > 0.95 * target and min(maxima) < 0.5 * target
    pos = pose_position_ids(64, 4096, torch.Generator().manual_seed(1), chunks=4)
    assert (pos[1:] > pos[:-1]).all() and int(pos.max()) < 4096
    assert torch.equal(pose_position_ids(64, 64, torch.Generator()), torch.arange(64))


def test_pose_run_feeds_skipped_positions_to_the_model(llama_dir, texts, tmp_path):
    from hf_posenc.training import data as data_mod

    seen = []
    real = data_mod.BatchMaker.__call__

    def spy(self, ids, positions):
        batch = real(self, ids, positions)
        seen.append(batch)
        return batch

    data_mod.BatchMaker.__call__ = spy
    try:
        rc = main(base_args(llama_dir, texts, tmp_path / "pose", "--extend", "yarn:factor=8", "--pose", steps=3))
    finally:
        data_mod.BatchMaker.__call__ = real
    assert rc == 0
    pos = torch.cat([b["position_ids"] for b in seen])
    assert pos.shape[1] == 16 and (pos[:, 1:] > pos[:, :-1]).all() and int(pos.max()) < 512
    assert int(pos.max()) > 64  # beyond the trained 64 positions: the default target is the extension's 512
    assert all(b["attention_mask"].all() for b in seen)
    model = hf_posenc.from_pretrained(str(tmp_path / "pose" / "final"))
    assert model.config.posenc["extension"]["method"] == "yarn"


@pytest.mark.parametrize("spec,needle", [("--posenc=alibi", "attention-score bias"),
                                         ("--extend=dynamic:factor=4", "raw cache indices"),
                                         ("--posenc=nope", "no positions")])
def test_pose_refuses_encodings_that_ignore_position_ids(llama_dir, gpt2_dir, texts, tmp_path, capsys, spec, needle):
    rc = main(base_args(llama_dir, texts, tmp_path / "x", spec, "--pose", "--pose-target-len", "256", steps=1))
    assert rc == 2
    err = capsys.readouterr().err
    assert "--pose needs a positional encoding that reads position_ids" in err and needle in err


def test_pose_refuses_gpt2_rope_in_attention(gpt2_dir, texts, tmp_path, capsys):
    rc = main(base_args(gpt2_dir, texts, tmp_path / "x", "--posenc", "rope", "--pose", "--pose-target-len", "256",
                        steps=1))
    assert rc == 2 and "inside this gpt2 model's attention" in capsys.readouterr().err


def test_pose_with_learned_table_needs_an_extended_table(gpt2_dir, texts, tmp_path, capsys):
    rc = main(base_args(gpt2_dir, texts, tmp_path / "x", "--pose", "--pose-target-len", "128", steps=1))
    assert rc == 2 and "--extend interpolate:max_length=128" in capsys.readouterr().err
    rc = main(base_args(gpt2_dir, texts, tmp_path / "y", "--extend", "interpolate:max_length=128", "--pose", steps=2))
    assert rc == 0


# ------------------------------------------------------------------------------ LoRA, MLM
def test_lora_run_saves_a_merged_model(llama_dir, texts, tmp_path):
    out = tmp_path / "lora"
    rc = main(base_args(llama_dir, texts, out, "--posenc", "t5", "--lora", "--lora-r", "4",
                        "--lora-trainable", "embeddings,norms,positional", steps=3))
    assert rc == 0
    cfg = json.loads((out / "run_config.json").read_text())
    assert 0 < cfg["model"]["trainable_parameters"] < cfg["model"]["parameters"]
    model = hf_posenc.from_pretrained(str(out / "final"))
    names = [n for n, _ in model.named_parameters()]
    assert not any("lora" in n for n in names)
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(llama_dir)
    merged = dict(model.named_parameters())
    assert not torch.equal(merged["model.layers.0.self_attn.q_proj.weight"],
                           dict(base.named_parameters())["model.layers.0.self_attn.q_proj.weight"])
    assert not torch.equal(merged["model.embed_tokens.weight"], dict(base.named_parameters())["model.embed_tokens.weight"])
    assert torch.equal(merged["model.layers.0.mlp.up_proj.weight"],  # neither LoRA-adapted nor trainable
                       dict(base.named_parameters())["model.layers.0.mlp.up_proj.weight"])


def test_mlm_objective_on_bert(bert_dir, texts, tmp_path):
    out = tmp_path / "mlm"
    rc = main(base_args(bert_dir, texts, out, "--objective", "mlm", "--posenc", "sinusoidal", "--eval-lengths", "16",
                        steps=5, bs=4))
    assert rc == 0
    lines = metrics(out)
    assert len(lines) == 5 and all(m["loss"] > 0 for m in lines)
    assert lines[-1]["eval"]["16"] > 1
    model = hf_posenc.from_pretrained(str(out / "final"))
    assert type(model).__name__ == "BertForMaskedLM" and model.config.posenc["encoding"] == "sinusoidal"


def test_mlm_masking_is_deterministic_per_seed_and_sample(bert_dir):
    import argparse

    from hf_posenc.training.data import BatchMaker

    tok = make_tokenizer()
    args = argparse.Namespace(objective="mlm", seed=3, seq_len=64, pose_chunks=2, mlm_probability=0.15)
    maker = BatchMaker(args, tok, VOCAB)
    ids = torch.randint(len(SPECIALS), VOCAB - 2, (4, 64), generator=torch.Generator().manual_seed(0))
    ids[:, 0], ids[:, -1] = tok.cls_token_id, tok.sep_token_id
    a, b = maker(ids, [0, 1, 2, 3]), maker(ids, [0, 1, 2, 3])
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    c = maker(ids[1:2], [1])
    assert torch.equal(c["labels"][0], a["labels"][1])  # per sample: independent of the batch it is in
    masked = a["labels"] != -100
    assert not masked[:, 0].any() and not masked[:, -1].any()  # specials never masked
    assert 0.05 < masked.float().mean() < 0.3
    assert (a["input_ids"][masked] == tok.mask_token_id).float().mean() > 0.5
    args.seed = 4
    assert not torch.equal(BatchMaker(args, tok, VOCAB)(ids, [0, 1, 2, 3])["labels"], a["labels"])


# ------------------------------------------------------------------------------ errors
def test_seq_len_over_learned_table_points_to_extend(texts, tmp_path, capsys):
    model = save_tiny(tmp_path / "gpt2", "gpt2", max_pos=64)
    assert main(base_args(model, texts, tmp_path / "x", steps=1, seq=128)) == 2
    err = capsys.readouterr().err
    assert "--seq-len 128 exceeds the model's learned position table of 64 positions" in err and "--extend interpolate:max_length=128" in err
    assert main(base_args(model, texts, tmp_path / "y", "--extend", "interpolate:max_length=128", steps=1, seq=128)) == 0


@pytest.mark.parametrize("extra,needle", [
    (("--posenc", "nosuch"), "unknown positional encoding 'nosuch'"),
    (("--extend", "yarn:factor=2"), "does not apply"),
    (("--model", "/nonexistent/model"), "no such file or directory"),
    (("--model", "no-such-org/no-such-model-xyz"), "could not be loaded"),
    (("--train-files", "/nonexistent/*.txt"), "no file matches"),
    (("--train-files", "/nonexistent/file.txt"), "no such file"),
    (("--dataset", "/nonexistent/dataset_dir"), "--dataset"),
])
def test_clear_errors(gpt2_dir, texts, tmp_path, capsys, monkeypatch, extra, needle):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network retries
    model = None if "--model" in extra else gpt2_dir
    files = None if "--train-files" in extra or "--dataset" in extra else texts
    assert main(base_args(model, files, tmp_path / "x", *extra, steps=1)) == 2
    assert needle in capsys.readouterr().err


def test_no_data_errors(gpt2_dir, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    assert main(base_args(gpt2_dir, str(empty), tmp_path / "x", steps=1)) == 2
    assert "no training data" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text("w1 w2 w3")
    assert main(base_args(gpt2_dir, str(short), tmp_path / "y", steps=1)) == 2
    assert "fewer than one --seq-len block" in capsys.readouterr().err


def test_argument_errors_exit_2(gpt2_dir, texts, tmp_path):
    for extra in (["--lora-trainable", "norms"], ["--lora", "--lora-trainable", "heads"], ["--pose-target-len", "9"],
                  ["--dataset", "x"]):
        with pytest.raises(SystemExit) as exc:
            main(base_args(gpt2_dir, texts, tmp_path / "x", *extra))
        assert exc.value.code == 2


def test_dataset_saved_to_disk_and_jsonl_files(gpt2_dir, texts, tmp_path):
    import datasets

    docs = [open(os.path.join(texts, f)).read() for f in sorted(os.listdir(texts))]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"content": docs})}).save_to_disk(tmp_path / "ds")
    out = tmp_path / "d"
    assert main(base_args(gpt2_dir, None, out, "--text-column", "content", "--dataset", tmp_path / "ds",
                          steps=1)) == 0
    run_cfg = json.loads((out / "run_config.json").read_text())
    assert run_cfg["data"]["documents"] == len(docs)
    with open(tmp_path / "docs.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    assert main(base_args(gpt2_dir, str(tmp_path / "docs.jsonl"), tmp_path / "j", "--max-documents", "6",
                          steps=1)) == 0
    assert json.loads((tmp_path / "j" / "run_config.json").read_text())["data"]["documents"] == 6


def test_accelerate_configs_are_valid():
    from accelerate.commands.config.config_args import load_config_from_file

    folder = os.path.join(ROOT, "configs", "accelerate")
    names = sorted(f for f in os.listdir(folder) if f.endswith(".yaml"))
    assert {"single.yaml", "ddp.yaml", "fsdp.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml"} <= set(names)
    kinds = {}
    for name in names:
        cfg = load_config_from_file(os.path.join(folder, name))
        kinds[name] = str(cfg.distributed_type)
    assert "FSDP" in kinds["fsdp.yaml"] and "DEEPSPEED" in kinds["deepspeed_zero3.yaml"]
    assert "MULTI_GPU" in kinds["ddp.yaml"] and kinds["single.yaml"].endswith("NO")
