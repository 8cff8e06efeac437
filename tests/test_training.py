"""Patched models under training tools: gradient checkpointing, torch.compile, half precision,
peft LoRA (and the LongLoRA recipe), and remove_posenc after training."""
from __future__ import annotations

import pytest
import torch

import hf_posenc
from conftest import DECODERS, ENCODINGS, FAMILIES, make_model, patch, tokens
from hf_posenc.attention import merge_bias


def _loss(model, ids):
    out = model(ids, labels=ids)
    return out.loss


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_gives_the_same_gradients(family, encoding):
    ids = tokens(2, 16)
    grads = []
    for checkpointing in (False, True):
        model = patch(make_model(family), encoding)
        model.train()
        model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        _loss(model, ids).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name
    positional = [n for n in grads[0] if "hf_posenc" in n or ".wpe." in n or "position_embeddings" in n]
    if encoding in ("t5", "learned"):
        assert positional and all(grads[0][n].abs().sum() > 0 for n in positional)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward(family, encoding, dtype):
    model = patch(make_model(family), encoding).to(dtype)
    ids = tokens(2, 24)
    with torch.no_grad():
        out = model(ids).logits
        ref = patch(make_model(family), encoding)
        ref.load_state_dict(model.float().state_dict())
        ref_out = ref(ids).logits
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert (out.float() - ref_out).abs().max() < 0.1 * ref_out.abs().max() + 0.05


def test_bias_maths_is_fp32_until_the_final_cast():
    model = patch(make_model("llama"), "alibi").to(torch.bfloat16)
    ctrl = hf_posenc.get_posenc(model)
    q_pos, k_pos = torch.tensor([8000]), torch.arange(8001)
    bias = ctrl.encoding.bias(q_pos, k_pos, 0)
    assert bias.dtype == torch.float32
    merged = merge_bias(None, bias, True, q_pos, k_pos, torch.bfloat16)
    slopes = torch.tensor(ctrl.encoding._slopes.tolist(), dtype=torch.float64)
    exact = (-slopes[:, None] * (8000 - torch.arange(8001, dtype=torch.float64))).to(torch.bfloat16)
    assert torch.equal(merged[0, :, 0], exact)
    # what naive bf16 position arithmetic would give: 7999 is not a bf16 number
    naive = -(slopes[:, None].to(torch.bfloat16) * (torch.tensor(8000, dtype=torch.bfloat16)
                                                       - torch.arange(8001).to(torch.bfloat16)))
    assert not torch.equal(naive, exact)


def test_rope_angles_fp32_at_long_positions():
    model = patch(make_model("gpt2"), "rope").to(torch.bfloat16)
    enc = hf_posenc.get_posenc(model).encoding
    cos, sin = enc.cos_sin(torch.tensor([7999]), torch.bfloat16)
    cos32, sin32 = enc.cos_sin(torch.tensor([7999]), torch.float32)
    assert torch.equal(cos, cos32.to(torch.bfloat16)) and torch.equal(sin, sin32.to(torch.bfloat16))


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_torch_compile_matches_eager_pytorch(family, encoding):
    torch._dynamo.reset()
    model = patch(make_model(family), encoding)
    ids = tokens(2, 16)
    with torch.no_grad():
        ref = model(ids).logits
        compiled = torch.compile(model, backend="aot_eager")
        out = compiled(ids).logits
    assert (out - ref).abs().max() < 1e-5


@pytest.mark.parametrize("encoding", ["alibi", "t5", "rope", "sinusoidal"])
def test_patch_adds_no_graph_breaks(encoding):
    """dynamo's graph-break count of the patched model equals the unpatched model's."""
    ids = tokens(1, 16)
    counts = []
    for patched in (False, True):
        torch._dynamo.reset()
        model = make_model("gpt2")
        if patched:
            patch(model, encoding)
        with torch.no_grad():
            explain = torch._dynamo.explain(model)(ids)
        counts.append(explain.graph_break_count)
    assert counts[1] == counts[0], counts


def _train_steps(model, steps=3, lr=1e-2):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr)
    model.train()
    for step in range(steps):
        loss = _loss(model, tokens(2, 16, seed=10 + step))
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return model


@pytest.mark.parametrize("family,encoding", [("gpt2", "alibi"), ("llama", "t5"), ("llama", "alibi"),
                                             ("gpt2", "rope")])
def test_peft_lora_train_save_reload(family, encoding, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    base = patch(make_model(family), encoding)
    base.save_pretrained(tmp_path / "base")
    targets = ["c_attn"] if family == "gpt2" else ["q_proj", "v_proj"]
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0,
                                           init_lora_weights=False))
    _train_steps(lora)
    lora.save_pretrained(tmp_path / "adapter")
    ids = tokens(2, 20)
    with torch.no_grad():
        ref = lora(input_ids=ids).logits
    reloaded = PeftModel.from_pretrained(hf_posenc.from_pretrained(tmp_path / "base"), tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, ref)


def test_longlora_recipe_trains_positional_params_and_round_trips(tmp_path):
    """LoRA + trainable embeddings, norms and positional parameters; merged and saved whole."""
    from peft import LoraConfig, get_peft_model

    model = patch(make_model("llama"), "t5")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                                            modules_to_save=["embed_tokens", "norm"]))
    for name, p in lora.named_parameters():
        if "hf_posenc" in name:
            p.requires_grad_(True)
    _train_steps(lora)
    merged = lora.merge_and_unload()
    changed = {n for n, p in merged.named_parameters() if not torch.equal(p, before[n])}
    assert "model.hf_posenc.encoding.tables.0.weight" in changed and "model.embed_tokens.weight" in changed
    merged.save_pretrained(tmp_path)
    ids = tokens(2, 20)
    with torch.no_grad():
        assert torch.equal(hf_posenc.from_pretrained(tmp_path)(ids).logits, merged(ids).logits)


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
def test_remove_after_training_keeps_trained_weights_and_restores_encoding(family):
    model = make_model(family)
    native_pos = {n: p.detach().clone() for n, p in model.named_parameters()
                  if ".wpe." in n or "position_embeddings" in n}
    patch(model, "alibi")
    _train_steps(model)
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if "hf_posenc" not in n}
    hf_posenc.remove_posenc(model)
    after = dict(model.named_parameters())
    for name, value in trained.items():
        assert torch.equal(after[name], value), name
    for name, value in native_pos.items():  # the removed table comes back as it was
        assert torch.equal(after[name], value), name
    fresh = make_model(family)
    fresh.load_state_dict(model.state_dict())  # same structure as an unpatched model
