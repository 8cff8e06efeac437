"""The evaluation toolkit: sliding-window arithmetic, perplexity maths, pass-key prompts and
scoring, result files, plots, the evaluate modules and the ``eval`` command, on tiny models."""
from __future__ import annotations

import json
import math
import os
import string
import warnings

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from conftest import make_model
from hf_posenc.evaluation import (
    EvaluationReport, PasskeyResult, PerplexityResult, VariantResult, build_passkey_prompt, load_texts,
    passkey_retrieval, perplexity_by_length, save_plots, window_plan,
)
from hf_posenc.evaluation import command, corpus
from hf_posenc.evaluation.passkey import extract_answer, make_passkey
from hf_posenc.evaluation.results import merge_reports
from hf_posenc.evaluation.perplexity import expected_tokens_scored

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def char_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer (pad 0, bos 1, eos 2, unk 3, then printable characters; 102 ids)."""
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    chars = [c for c in string.printable if c not in "\x0b\x0c"]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(specials + chars)}, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def doc(n: int, seed: int = 0) -> list[int]:
    """A pre-tokenised document of n ids in [4, 100)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, 100, (n,), generator=g).tolist()


def reference_nll(model, ids: list[int], scored: range) -> float:
    """Summed NLL of tokens ids[p] for p in scored, from one full forward pass over ids."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logp = F.log_softmax(logits, dim=-1)
    return -sum(logp[p - 1, ids[p]].item() for p in scored)


# ----------------------------------------------------------------- sliding-window arithmetic
@pytest.mark.parametrize("n,length,stride,windows,tokens", [
    (100, 32, 32, 3, 93),       # non-overlapping: (100-32)//32+1 = 3 windows x 31 scored
    (100, 32, 8, 9, 31 + 8 * 8),  # first window 31, then 8 new tokens per window
    (32, 32, 32, 1, 31),        # exactly one window
    (31, 32, 32, 0, 0),         # too short
    (100, 32, 40, 2, 31 + 31),  # stride > length: later windows still score length-1
])
def test_window_plan_counts(n, length, stride, windows, tokens):
    plan = window_plan(n, length, stride)
    assert len(plan) == windows
    assert expected_tokens_scored(n, length, stride) == tokens
    assert all(start + length <= n for start, _ in plan)


def test_perplexity_counts_tokens_windows_and_documents_exactly(tok):
    model = make_model("llama")
    docs = [doc(100, 1), doc(20, 2), doc(50, 3)]
    with pytest.warns(UserWarning, match="no document has 128 tokens"):
        res = perplexity_by_length(model, tok, docs, [32, 64, 128], progress=False, stride=None)
    r32, r64, r128 = res.lengths
    # 32: docs of 100 (3 windows) and 50 (1 window) used, the 20-token one skipped
    assert (r32.windows, r32.tokens_scored, r32.documents_used, r32.documents_skipped) == (4, 4 * 31, 2, 1)
    assert (r64.windows, r64.tokens_scored, r64.documents_used, r64.documents_skipped) == (1, 63, 1, 2)
    assert r128.perplexity is None and r128.tokens_scored == 0 and "no document" in r128.note
    assert r32.stride == 32 and res.documents == 3
    # stride < length, and max_documents keeps the first long-enough documents
    res = perplexity_by_length(model, tok, docs, [32], stride=8, max_documents=1, progress=False)
    r = res.lengths[0]
    assert (r.windows, r.tokens_scored, r.documents_used, r.documents_skipped) == (9, 31 + 8 * 8, 1, 1)
    res = perplexity_by_length(model, tok, docs, [32], max_windows_per_document=1, progress=False)
    assert (res.lengths[0].windows, res.lengths[0].tokens_scored) == (2, 62)


def test_no_long_enough_document_warns(tok):
    with pytest.warns(UserWarning, match="no document has 64 tokens"):
        res = perplexity_by_length(make_model("gpt2"), tok, [doc(10)], [64], progress=False)
    assert res.lengths[0].perplexity is None and res.lengths[0].documents_skipped == 1


def test_texts_are_tokenised_without_special_tokens(tok):
    model = make_model("llama")
    text = "hello world, " * 5  # 65 characters = 65 tokens, no BOS/EOS added
    r = perplexity_by_length(model, tok, [text], [65], progress=False).lengths[0]
    assert (r.windows, r.tokens_scored) == (1, 64)
    r = perplexity_by_length(model, tok, [text], [66], add_bos=True, progress=False).lengths[0]
    assert (r.windows, r.tokens_scored) == (1, 65)


# ----------------------------------------------------------------- perplexity maths
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_perplexity_equals_exp_mean_nll_of_a_reference_loop(family, tok):
    model = make_model(family)
    ids = doc(48, 5)
    r = perplexity_by_length(model, tok, [ids], [48], progress=False).lengths[0]
    ref = reference_nll(model, ids, range(1, 48)) / 47
    assert r.nll == pytest.approx(ref, rel=1e-5)
    assert r.perplexity == pytest.approx(math.exp(ref), rel=1e-5)


def test_strided_windows_score_the_right_tokens_in_any_batch(tok):
    model = make_model("llama")
    docs = [doc(40, 6), doc(30, 7)]
    length, stride = 16, 6
    total, count = 0.0, 0
    for ids in docs:  # reference: each window scored by its own forward pass
        for k, (start, first) in enumerate(window_plan(len(ids), length, stride)):
            total += reference_nll(model, ids[start:start + length], range(first, length))
            count += length - first
    for batch_size in (1, 3):  # a batch mixes first and later windows of two documents
        r = perplexity_by_length(model, tok, docs, [length], stride=stride, batch_size=batch_size,
                                 progress=False).lengths[0]
        assert r.tokens_scored == count
        assert r.nll == pytest.approx(total / count, rel=1e-5)


def test_bf16_model_is_supported_and_loss_is_fp32(tok):
    model = make_model("llama")
    ids = doc(40, 8)
    fp32 = perplexity_by_length(model, tok, [ids], [40], progress=False).lengths[0].perplexity
    bf16 = perplexity_by_length(model.to(torch.bfloat16), tok, [ids], [40], progress=False).lengths[0].perplexity
    assert isinstance(bf16, float) and bf16 == pytest.approx(fp32, rel=0.05)


# ----------------------------------------------------------------- pass key
@pytest.mark.parametrize("length", [400, 1000])
@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_passkey_prompt_length_and_needle_depth(tok, length, depth):
    p = build_passkey_prompt(tok, length, depth, "12345")
    assert length - 8 <= p.num_tokens <= length  # within one filler word (up to 8 characters here)
    assert p.text.count("12345") == 2 and p.text.endswith("What is the pass key? The pass key is")
    assert tok.decode(p.input_ids[0, p.needle_start:p.needle_start + 15]) == "The pass key is"
    # the needle sits at `depth` of the filler: measure the filler characters before it
    before = p.text[:p.text.index("The pass key is 12345")]
    after = p.text[p.text.index("the pass key.") + len("the pass key."):p.text.index("What is")]
    filler_before = len(before.split("\n", 1)[1]) if "\n" in before else 0
    total = filler_before + len(after)
    assert abs(filler_before - depth * total) <= 22  # at the nearest sentence end (sentences <= 22 chars)
    assert abs(filler_before / total - depth) < (0.05 if length == 1000 else 0.1)
    if length == 1000:  # the header (task description) is short next to the filler
        assert abs(p.needle_start / p.num_tokens - depth) < 0.2


def test_passkey_prompt_too_short_raises(tok):
    with pytest.raises(ValueError, match="too short"):
        build_passkey_prompt(tok, 50, 0.5, "12345")


def test_passkeys_are_deterministic_five_digit_numbers():
    keys = [make_passkey(0, 4096, d, t) for d in (0.0, 0.5) for t in range(5)]
    assert keys == [make_passkey(0, 4096, d, t) for d in (0.0, 0.5) for t in range(5)]
    assert all(len(k) == 5 and k.isdigit() for k in keys) and len(set(keys)) > 1
    assert [make_passkey(1, 4096, 0.0, t) for t in range(5)] != keys[:5]  # another seed, other keys
    assert extract_answer(" 12345. Remember") == "12345" and extract_answer(" no") is None


class Oracle(torch.nn.Module):
    """Generates the pass key it reads in the prompt: a model that 'knows' the answer."""

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer, self.anchor = tokenizer, torch.nn.Parameter(torch.zeros(1))

    def generate(self, input_ids, max_new_tokens, **kwargs):
        text = self.tokenizer.decode(input_ids[0])
        key = text.split("The pass key is ")[1][:5]
        new = self.tokenizer(f" {key}. Done", add_special_tokens=False, return_tensors="pt").input_ids
        return torch.cat([input_ids, new[:, :max_new_tokens]], dim=1)


def test_passkey_scores_one_for_an_oracle_and_about_zero_for_a_random_model(tok):
    result = passkey_retrieval(Oracle(tok), tok, [300, 500], depths=(0.0, 0.5, 1.0), trials=3, progress=False)
    assert result.per_length() == {300: 1.0, 500: 1.0}
    assert all(c.accuracy == 1.0 and c.trials == 3 for c in result.cells)
    random_model = make_model("llama")
    result = passkey_retrieval(random_model, tok, [300], depths=(0.0, 1.0), trials=2, progress=False)
    assert result.mean_accuracy(300) <= 0.25
    assert [s["passkey"] for s in result.samples] == [make_passkey(0, 300, d, t) for d in (0.0, 1.0) for t in range(2)]


# ----------------------------------------------------------------- results, markdown, plots
def _report(tok) -> EvaluationReport:
    model = make_model("llama")
    with pytest.warns(UserWarning, match="no document has 128 tokens"):
        ppl = perplexity_by_length(model, tok, [doc(100), doc(70, 1)], [32, 64, 128], progress=False)
    keys = passkey_retrieval(Oracle(tok), tok, [300, 400], depths=(0.0, 1.0), trials=2, progress=False)
    return EvaluationReport(variants=[VariantResult("native", perplexity=ppl, passkey=keys),
                                      VariantResult("alibi", posenc={"name": "alibi", "options": {}}, perplexity=ppl)],
                            metadata={"model": "tiny"})


def test_json_round_trip_and_markdown(tok, tmp_path):
    report = _report(tok)
    report.save_json(tmp_path / "r.json")
    again = EvaluationReport.load_json(tmp_path / "r.json")
    assert again.to_dict() == report.to_dict()
    json.loads((tmp_path / "r.json").read_text())  # strict JSON (no NaN)
    ppl = report["native"].perplexity
    ppl.save_json(tmp_path / "p.json")
    assert PerplexityResult.load_json(tmp_path / "p.json") == ppl
    keys = report["native"].passkey
    keys.save_json(tmp_path / "k.json")
    assert PasskeyResult.load_json(tmp_path / "k.json") == keys
    md = report.to_markdown()
    assert f"{ppl.at(32).perplexity:.2f}" in md and f"{ppl.at(64).perplexity:.2f}" in md
    assert "| native |" in md and "| alibi |" in md and "1.00" in md
    assert f"{ppl.at(32).tokens_scored}" in ppl.to_markdown() and "depth 0" in keys.to_markdown()


def test_a_variant_split_by_length_merges_into_one_run(tok):
    """Perplexity in one run and pass key at two lengths in two more (3 and 1 trials) join into
    what one run gives; anything measured twice, or a variant built differently, is refused."""
    model = make_model("llama")
    docs = [doc(100), doc(70, 1)]
    ppl = perplexity_by_length(model, tok, docs, [32, 64], progress=False)
    keys = passkey_retrieval(Oracle(tok), tok, [300, 400], depths=(0.0, 1.0), trials=1, progress=False)
    ext = {"method": "yarn", "options": {"factor": 4}}
    parts = [EvaluationReport([VariantResult("v", extend=ext, perplexity=ppl),
                               VariantResult("native", perplexity=ppl)]),
             EvaluationReport([VariantResult("v", extend=ext, passkey=passkey_retrieval(
                 Oracle(tok), tok, [400], depths=(0.0, 1.0), trials=1, progress=False))]),
             EvaluationReport([VariantResult("v", extend=ext, passkey=passkey_retrieval(
                 Oracle(tok), tok, [300], depths=(0.0, 1.0), trials=3, progress=False))])]
    merged = merge_reports(parts, sources=["a", "b", "c"])
    assert merged.names() == ["v", "native"] and merged.metadata["runs"]["b"]["variants"] == ["v"]
    v = merged["v"]
    assert v.perplexity.perplexities() == ppl.perplexities()
    assert v.passkey.lengths == [300, 400] and [c.trials for c in v.passkey.cells] == [3, 3, 1, 1]
    assert [(c.length, c.depth) for c in v.passkey.cells] == [(c.length, c.depth) for c in keys.cells]
    assert v.passkey.per_length() == {300: 1.0, 400: 1.0} and v.passkey.trials == 1
    assert "trials per cell: 300: 3, 400: 1" in merged.to_markdown()
    assert sorted(s["passkey"] for s in v.passkey.samples if s["trial"] == 0) == sorted(
        s["passkey"] for s in keys.samples)  # the same keys as one run
    with pytest.raises(ValueError, match=r"perplexity at \[32, 64\] measured in more than one run"):
        merge_reports([parts[0], parts[0]])
    with pytest.raises(ValueError, match=r"pass key at \[400\]"):
        merge_reports([parts[1], parts[1]])
    other = EvaluationReport([VariantResult("v", extend={"method": "ntk", "options": {"factor": 4}})])
    with pytest.raises(ValueError, match="built differently"):
        merge_reports([parts[0], other])
    with pytest.raises(ValueError, match="different texts or settings"):
        merge_reports([parts[0], EvaluationReport([VariantResult("v", extend=ext, perplexity=perplexity_by_length(
            model, tok, docs[:1], [16], progress=False))])])


def test_plots_are_png_files(tok, tmp_path):
    paths = save_plots(_report(tok), tmp_path)
    assert sorted(os.path.basename(p) for p in paths) == ["passkey_native.png", "perplexity.png"]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == PNG_MAGIC


# ----------------------------------------------------------------- corpus
def test_load_texts_from_files_globs_and_datasets(tmp_path):
    (tmp_path / "a.txt").write_text("alpha " * 10)
    (tmp_path / "b.txt").write_text("beta")
    assert load_texts(f"{tmp_path}/a.txt,{tmp_path}/b.txt") == ["alpha " * 10, "beta"]
    assert load_texts(f"{tmp_path}/*.txt", min_chars=10) == ["alpha " * 10]
    (tmp_path / "d.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    assert load_texts(str(tmp_path / "d.jsonl")) == ["one", "two"]
    import datasets

    datasets.Dataset.from_dict({"text": ["x" * 5, "y" * 7]}).save_to_disk(str(tmp_path / "ds"))
    assert load_texts(str(tmp_path / "ds"), max_documents=1) == ["x" * 5]
    data = datasets.load_dataset("text", data_files=str(tmp_path / "a.txt"), split="train")
    assert data["text"] == [("alpha " * 10)]
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_texts(f"{tmp_path}/missing.txt")


def test_default_corpus_largest_first_or_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install python3.11-doc"):
        corpus.default_corpus_files(root=str(tmp_path))
    if not os.path.isdir(corpus.DEFAULT_CORPUS_DIR):
        pytest.skip("python3.11-doc is not installed")
    files = corpus.default_corpus_files()
    sizes = [os.path.getsize(f) for f in files]
    assert len(files) > 50 and sizes == sorted(sizes, reverse=True) and sizes[-1] >= corpus.DEFAULT_MIN_BYTES


# ----------------------------------------------------------------- evaluate modules
def test_evaluate_modules_load_offline_by_path_and_compute(tok, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import evaluate
    import hf_posenc.metrics

    model = make_model("llama")
    ppl = evaluate.load(hf_posenc.metrics.path("perplexity_by_length"))
    out = ppl.compute(predictions=["ab" * 40, "c" * 20], model=model, tokenizer=tok, lengths=[32, 64])
    assert out["lengths"] == [32, 64] and out["tokens_scored"] == [2 * 31, 63]
    assert out["documents_skipped"] == [1, 1] and all(p > 1 for p in out["perplexities"])
    keys = evaluate.load(hf_posenc.metrics.path("passkey_retrieval"))
    out = keys.compute(lengths=[300], model=Oracle(tok), tokenizer=tok, depths=[0.5], trials=2)
    assert out["accuracy"] == [1.0] and out["accuracy_by_depth"] == {"300": [1.0]}
    with pytest.raises(ValueError, match="unknown hf_posenc metric"):
        hf_posenc.metrics.path("nope")


# ----------------------------------------------------------------- command line
@pytest.fixture
def saved_model(tmp_path, tok):
    path = tmp_path / "tiny"
    make_model("llama").save_pretrained(path)
    tok.save_pretrained(path)
    (tmp_path / "doc.txt").write_text("The quick brown fox jumps over the lazy dog. " * 4)
    return path, tmp_path / "doc.txt"


def test_command_end_to_end(saved_model, tmp_path, capsys):
    model_dir, text = saved_model
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="no document has 512 tokens"):
        rc = command.main(["--model", str(model_dir), "--posenc", "alibi", "--lengths", "32,64,512",
                           "--texts", str(text), "--passkey", "--passkey-lengths", "300", "--depths", "0,1",
                           "--trials", "1", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert {"results.json", "results.md", "perplexity.png", "passkey_native.png", "passkey_alibi.png"} <= set(
        os.listdir(out))
    report = EvaluationReport.load_json(out / "results.json")
    assert report.names() == ["native", "alibi"]
    assert report["alibi"].posenc == {"name": "alibi", "options": {}}
    r = report["native"].perplexity.at(64)
    assert (r.tokens_scored, r.documents_used) == (2 * 63, 1)
    assert report["native"].perplexity.at(512).perplexity is None  # 180-character document
    assert report["alibi"].passkey.cells[0].trials == 1
    printed = capsys.readouterr().out
    assert "| native |" in printed and "| alibi |" in printed
    assert (out / "results.md").read_text().count("| native |") >= 1


@pytest.mark.parametrize("argv,message", [
    (["--lengths", "2k"], "expected comma-separated integers"),
    (["--lengths", "32", "--posenc", "rope:theta"], "expected key=value"),
    (["--lengths", "32", "--depths", "0.5,2"], "depths must be in"),
])
def test_command_rejects_bad_arguments(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        command.main(argv + ["--out", str(tmp_path)])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_command_reports_unknown_encodings_and_missing_files(saved_model, tmp_path, capsys):
    model_dir, text = saved_model
    base = ["--model", str(model_dir), "--lengths", "32", "--out", str(tmp_path / "o"), "--no-progress"]
    assert command.main(base + ["--texts", str(text), "--posenc", "bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert command.main(base + ["--texts", str(tmp_path / "nothing.txt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert command.main(base + ["--texts", str(text), "--extend", "no_such_method:factor=2"]) == 2
    assert "no_such_method" in capsys.readouterr().err


def test_command_compares_an_extended_variant(saved_model, tmp_path):
    model_dir, text = saved_model
    out = tmp_path / "ext"
    rc = command.main(["--model", str(model_dir), "--extend", "linear:factor=2", "--lengths", "32,128",
                       "--texts", str(text), "--out", str(out), "--no-progress", "--no-plots"])
    assert rc == 0
    report = EvaluationReport.load_json(out / "results.json")
    assert report.names() == ["native", "extend:linear:factor=2"]
    assert report["extend:linear:factor=2"].extend == {"method": "linear", "options": {"factor": 2}}
    native, extended = (report[n].perplexity.at(32).perplexity for n in report.names())
    assert native != extended and not os.path.exists(out / "perplexity.png")


def test_a_run_split_with_no_native_merges_into_the_full_report(saved_model, tmp_path, capsys):
    model_dir, text = saved_model
    base = ["--model", str(model_dir), "--lengths", "32", "--texts", str(text), "--no-progress", "--no-plots"]
    assert command.main(base + ["--extend", "linear:factor=2", "--out", str(tmp_path / "full")]) == 0
    assert command.main(base + ["--out", str(tmp_path / "a")]) == 0
    assert command.main(base + ["--no-native", "--extend", "linear:factor=2", "--out", str(tmp_path / "b")]) == 0
    assert EvaluationReport.load_json(tmp_path / "b" / "results.json").names() == ["extend:linear:factor=2"]
    merged_dir = str(tmp_path / "merged")
    assert command.main(["--merge", f"{tmp_path / 'a'},{tmp_path / 'b'}", "--out", merged_dir]) == 0
    full = EvaluationReport.load_json(tmp_path / "full" / "results.json")
    merged = EvaluationReport.load_json(os.path.join(merged_dir, "results.json"))
    assert merged.names() == full.names()
    for name in full.names():  # the same numbers as one run
        assert merged[name].perplexity.at(32).perplexity == pytest.approx(full[name].perplexity.at(32).perplexity)
    assert set(merged.metadata["runs"]) == {str(tmp_path / "a"), str(tmp_path / "b")}
    assert merged.metadata["lengths"] == [32] and "| native |" in capsys.readouterr().out
    # a variant in two runs, an empty run, a missing directory: errors, nothing written
    assert command.main(["--merge", f"{tmp_path / 'a'},{tmp_path / 'full'}", "--out", str(tmp_path / "x")]) == 2
    assert "'native': perplexity at [32] measured in more than one run" in capsys.readouterr().err
    assert command.main(base + ["--no-native", "--out", str(tmp_path / "y")]) == 2
    assert "no variant" in capsys.readouterr().err
    assert command.main(["--merge", str(tmp_path / "nope"), "--out", str(tmp_path / "z")]) == 2
    assert not os.path.exists(tmp_path / "x") and not os.path.exists(tmp_path / "z")


# ----------------------------------------------------------------- the embedded model (slow)
@pytest.mark.slow
def test_embedded_smollm2_at_2k_tokens():
    """Real numbers on SmolLM2-135M (bf16): perplexity at 2048 on the largest default-corpus
    document (its first window) and one pass-key prompt of 2048 tokens. About a minute on 2 cores."""
    pytest.importorskip("gguf")
    from hf_posenc.default_model import load_model_and_tokenizer

    try:
        model, tokenizer = load_model_and_tokenizer(dtype="bfloat16")
        texts = load_texts(max_documents=1)
    except (FileNotFoundError, ImportError) as exc:
        pytest.skip(str(exc))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ppl = perplexity_by_length(model, tokenizer, texts, [2048], max_documents=1, max_windows_per_document=1,
                                   progress=False)
        keys = passkey_retrieval(model, tokenizer, [2048], depths=(0.5,), trials=1, progress=False)
    r = ppl.at(2048)
    assert (r.tokens_scored, r.documents_used) == (2047, 1)
    assert 1.5 < r.perplexity < 50  # Python documentation for a 135M model: single digits expected
    prompt_tokens = keys.samples[0]["prompt_tokens"]
    assert 2040 <= prompt_tokens <= 2048
    assert keys.cells[0].trials == 1
