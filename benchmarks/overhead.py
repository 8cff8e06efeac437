"""Cost of each positional encoding relative to the native model, measured in one run.

For a SmolLM2-sized Llama and a GPT-2-small-sized model (random weights: speed does not
depend on them) and each sequence length: prefill time, one decode step with a cache of that
length, and peak memory of the prefill, for every encoding, as ratios to the native model
(native RoPE Llama = 1.00 for the Llama rows, native GPT-2 for the GPT-2 rows). Falcon with
``alibi=True`` under SDPA, sized like SmolLM2, is transformers' best native ALiBi: the anchor
to beat. Times are medians of interleaved repetitions (every variant once per round), with
min-max. Peak memory is the resident-memory growth during one prefill (no KV cache, last
logits only), sampled in a fresh process per variant on a 2-layer model of the same shape:
without gradients each layer frees its temporaries, so the peak is one layer's whatever the depth.

    python benchmarks/overhead.py                       # defaults below
    python benchmarks/overhead.py --lengths 512,2048 --reps 7 --out benchmarks/RESULTS.md
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import hf_posenc  # noqa: E402

LLAMA_VARIANTS = ["native", "rope", "nope", "alibi", "alibi:bias", "t5", "sinusoidal", "learned",
                  "ext:linear", "ext:yarn", "ext:dynamic", "falcon-alibi"]
GPT2_VARIANTS = ["native", "nope", "sinusoidal", "rope", "alibi", "alibi:bias", "t5"]


def build(config_name: str, variant: str, max_len: int, layers: int | None = None):
    from transformers import FalconConfig, FalconForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, \
        LlamaForCausalLM

    torch.manual_seed(0)
    if variant == "falcon-alibi":
        cfg = FalconConfig(vocab_size=49152, hidden_size=576, num_hidden_layers=layers or 30, num_attention_heads=9,
                           num_kv_heads=3, new_decoder_architecture=True, alibi=True, bias=False,
                           max_position_embeddings=max_len, attn_implementation="sdpa")
        return FalconForCausalLM(cfg).eval()
    if config_name == "smollm2":
        cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers or 30,
                          num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=max_len,
                          rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                          attn_implementation="sdpa", tie_word_embeddings=True)
        model = LlamaForCausalLM(cfg).eval()
    else:
        cfg = GPT2Config(n_layer=layers or 12, n_embd=768, n_head=12, n_positions=max_len, attn_implementation="sdpa")
        model = GPT2LMHeadModel(cfg).eval()
    if variant == "native":
        return model
    if variant.startswith("ext:"):
        trained = model.config.max_position_embeddings // 2
        return hf_posenc.extend_context(model, variant[4:], factor=2.0, original_max_length=trained)
    name, _, path = variant.partition(":")
    hf_posenc.apply_posenc(model, name)
    if path:
        hf_posenc.get_posenc(model).attention_path = path
    return model


def prefill(model, ids):
    """A generation prefill: fill the cache, logits of the last position only (so the LM head,
    the same for every variant, does not dilute the ratios)."""
    with torch.no_grad():
        try:
            return model(ids, use_cache=True, logits_to_keep=1)
        except TypeError:  # models without logits_to_keep
            return model(ids, use_cache=True)


def time_call(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure_times(config_name, variants, lengths, reps, dtype, layers=None):
    """{(variant, L): {"prefill": [s...], "decode": [s...]}} with variants interleaved per round."""
    max_len = max(lengths) + 8
    models = {v: build(config_name, v, max_len, layers).to(dtype) for v in variants}
    out = {}
    for length in lengths:
        ids = torch.randint(100, 1000, (1, length))
        nxt = torch.randint(100, 1000, (1, 1))
        for v, m in models.items():  # warm-up
            prefill(m, ids[:, :64])
        for _ in range(reps):
            for v, m in models.items():
                rec = out.setdefault((v, length), {"prefill": [], "decode": []})
                holder = {}
                rec["prefill"].append(time_call(lambda: holder.setdefault("o", prefill(m, ids))))
                out_ = holder["o"]
                cache = out_.cache if getattr(out_, "cache", None) is not None else out_.past_key_values
                with torch.no_grad():
                    rec["decode"].append(time_call(lambda: m(nxt, cache=cache, use_cache=True)))
        print(f"  {config_name} L={length} done", file=sys.stderr, flush=True)
    return out


MEMORY_LAYERS = 2  # inference frees each layer's temporaries: the peak is one layer's, whatever the depth


def peak_memory(config_name, variant, lengths, dtype) -> dict:
    """Peak RSS growth (MiB) of a prefill at each length, in a fresh process (see _memory_child)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # large buffers go back to the OS when freed
    cmd = [sys.executable, os.path.abspath(__file__), "_memory", config_name, variant,
           ",".join(map(str, lengths)), str(dtype).split(".")[-1]]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        print(f"  memory of {variant} failed: {res.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return {L: float("nan") for L in lengths}
    return {int(k): v for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items()}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory_child(config_name, variant, lengths, dtype_name):
    """Peak resident memory above the idle model during one prefill (no KV cache, last logits
    only, so the LM head and cache do not hide the attention), sampled every 0.5 ms by a thread,
    on a MEMORY_LAYERS-layer model of the config."""
    import threading

    lengths = [int(x) for x in lengths.split(",")]
    model = build(config_name, variant, max(lengths) + 8, layers=MEMORY_LAYERS).to(getattr(torch, dtype_name))

    def run(ids):
        with torch.no_grad():
            try:
                return model(ids, use_cache=False, logits_to_keep=1)
            except TypeError:  # models without logits_to_keep
                return model(ids, use_cache=False)

    run(torch.randint(100, 1000, (1, 16)))
    out = {}
    for length in sorted(lengths):
        ids = torch.randint(100, 1000, (1, length))
        base, peak, stop = _rss(), [0], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], _rss())
                time.sleep(0.0005)

        thread = threading.Thread(target=sample)
        thread.start()
        result = run(ids)
        stop.set()
        thread.join()
        del result
        out[length] = max(0, peak[0] - base) / 2 ** 20
    print(json.dumps(out))


def fmt(values, ref):
    med = statistics.median(values) / statistics.median(ref)
    return f"{med:.2f}x ({min(values) / statistics.median(ref):.2f}-{max(values) / statistics.median(ref):.2f})"


def report(config_name, variants, lengths, mem_lengths, times, memory, dtype):
    lines = [f"### {config_name} ({str(dtype).split('.')[-1]}), ratios to native (median, min-max)", "",
             "| variant | " + " | ".join(f"prefill {L}" for L in lengths) + " | "
             + " | ".join(f"decode {L}" for L in lengths) + " | " + " | ".join(f"mem {L}" for L in mem_lengths) + " |",
             "|---" * (1 + 2 * len(lengths) + len(mem_lengths)) + "|"]
    for v in variants:
        row = [v]
        row += [fmt(times[(v, L)]["prefill"], times[("native", L)]["prefill"]) for L in lengths]
        row += [fmt(times[(v, L)]["decode"], times[("native", L)]["decode"]) for L in lengths]
        for L in mem_lengths:
            ref = memory["native"].get(L, float("nan"))
            val = memory[v].get(L, float("nan"))
            row.append(f"{val / ref:.2f}x" if ref == ref and ref > 0 and val == val else "n/a")
        lines.append("| " + " | ".join(row) + " |")
    abs_row = ["native absolute"] + [f"{statistics.median(times[('native', L)]['prefill']):.3f} s" for L in lengths] \
        + [f"{statistics.median(times[('native', L)]['decode']) * 1000:.1f} ms" for L in lengths] \
        + [f"{memory['native'].get(L, float('nan')):.0f} MiB" for L in mem_lengths]
    lines.append("| " + " | ".join(abs_row) + " |")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_memory":  # internal: one variant's peak memory, in its own process
        return _memory_child(*argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="smollm2,gpt2", help="comma list of smollm2, gpt2")
    p.add_argument("--lengths", default="512,2048,4096,8192", help="comma list of sequence lengths")
    p.add_argument("--reps", type=int, default=7, help="interleaved repetitions (>= 7 for the record)")
    p.add_argument("--variants", default=None, help="comma list (default: all for the config)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--layers", type=int, default=None,
                   help="layers per model for the timings (default: full size, 30 / 12); every layer has the "
                        "same shape and the prefill keeps only the last logits, so ratios hold at any depth")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--memory-lengths", default=None,
                   help="lengths for peak memory (default: --lengths plus 16384)")
    p.add_argument("--out", default=None, help="append the markdown tables to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    lengths = [int(x) for x in args.lengths.split(",")]
    mem_lengths = [int(x) for x in args.memory_lengths.split(",")] if args.memory_lengths \
        else sorted(set(lengths) | {16384})
    header = (f"Run {time.strftime('%Y-%m-%d %H:%M')}: {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
              f"transformers {__import__('transformers').__version__}, hf_posenc {hf_posenc.__version__}, "
              f"{args.reps} reps, layers {args.layers or 'full'} (memory: {MEMORY_LAYERS})")
    sections = [header]
    for config_name in args.configs.split(","):
        variants = args.variants.split(",") if args.variants else \
            (LLAMA_VARIANTS if config_name == "smollm2" else GPT2_VARIANTS)
        if "native" not in variants:
            variants = ["native", *variants]
        times = measure_times(config_name, variants, lengths, args.reps, dtype, args.layers)
        memory = {v: ({} if args.no_memory else peak_memory(config_name, v, mem_lengths, dtype)) for v in variants}
        sections.append(report(config_name, variants, lengths, mem_lengths, times, memory, dtype))
        print(sections[-1], flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n\n".join(sections) + "\n\n")


if __name__ == "__main__":
    main()
