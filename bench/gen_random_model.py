#!/usr/bin/env python3
"""gen_random_model.py — random-weight checkpoints (and PEFT adapters) of real model shapes.

    python3 bench/gen_random_model.py --shape llama-3-8b --out DIR [--seed 0] [--dtype bf16]
        [--adapters N --ranks 8,16,32,64 --adapter-seed S --targets q_proj,...] [--check]
        [--adapters-only]   (adapters for the shape, no model)

Writes the Hugging Face layout: config.json (real field values of the named model; 4.x spelling
as the published checkpoints have it, or --config-style 5 for transformers 5.x spelling),
generation_config.json, and the weights as model.safetensors when they fit in one shard, else
model-0000i-of-0000n.safetensors (each <= --max-shard-gb) + model.safetensors.index.json,
as save_pretrained does. No tokenizer is written: benchmarks feed token ids.

Deterministic: tensor T is torch.randn from a torch.Generator seeded with
seed * 1000003 + crc32(T's name), times std 0.02 (norm weights are exactly 1, biases std 0.02).
The numbers depend on the generator's device: --device cuda (the default when a GPU is there,
fast) and --device cpu give different (each reproducible) checkpoints; the device is recorded
in the safetensors metadata.

Adapters (--adapters N): DIR/adapters/lora-000-r8/ ... (or --adapter-dir), real PEFT layout
(adapter_config.json + adapter_model.safetensors with
base_model.model.model.layers.{i}.<self_attn|mlp>.<mod>.lora_A.weight [r, in] and .lora_B.weight
[out, r]), ranks cycling through --ranks, lora_alpha = 2 r, B non-zero, written directly.

--check loads the result with transformers (AutoModelForCausalLM, one forward on 4 tokens) and
the first adapter with peft (PeftModel.from_pretrained), to prove the layout.
"""

import argparse
import json
import math
import os
import shutil
import sys
import time
import zlib

LLAMA_GEN = {"bos_token_id": 128000, "do_sample": True, "eos_token_id": 128001, "temperature": 0.6,
             "top_p": 0.9}

SHAPES = {
    "llama-3.2-1b": dict(
        arch="LlamaForCausalLM", model_type="llama", hidden=2048, inter=8192, layers=16, heads=32,
        kv=8, head_dim=64, vocab=128256, max_pos=131072, rope_theta=500000.0, rms_eps=1e-5,
        rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        tie=True, qkv_bias=False, bos=128000, eos=128001, gen=LLAMA_GEN),
    "llama-3-8b": dict(
        arch="LlamaForCausalLM", model_type="llama", hidden=4096, inter=14336, layers=32, heads=32,
        kv=8, head_dim=128, vocab=128256, max_pos=8192, rope_theta=500000.0, rms_eps=1e-5,
        rope_scaling=None, tie=False, qkv_bias=False, bos=128000, eos=128001,
        gen={"bos_token_id": 128000, "eos_token_id": 128001, "do_sample": True, "temperature": 0.6,
             "top_p": 0.9, "max_length": 4096}),
    "qwen2.5-7b": dict(
        arch="Qwen2ForCausalLM", model_type="qwen2", hidden=3584, inter=18944, layers=28, heads=28,
        kv=4, head_dim=128, vocab=152064, max_pos=131072, rope_theta=1000000.0, rms_eps=1e-6,
        rope_scaling=None, tie=False, qkv_bias=True, bos=151643, eos=151643,
        gen={"bos_token_id": 151643, "do_sample": False, "eos_token_id": 151643, "max_new_tokens": 2048},
        qwen_extra={"max_window_layers": 28, "sliding_window": 131072, "use_sliding_window": False,
                    "use_mrope": False}),
    "llama-3-70b": dict(
        arch="LlamaForCausalLM", model_type="llama", hidden=8192, inter=28672, layers=80, heads=64,
        kv=8, head_dim=128, vocab=128256, max_pos=8192, rope_theta=500000.0, rms_eps=1e-5,
        rope_scaling=None, tie=False, qkv_bias=False, bos=128000, eos=128001,
        gen={"bos_token_id": 128000, "eos_token_id": 128001, "do_sample": True, "temperature": 0.6,
             "top_p": 0.9, "max_length": 4096}),
}

ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "f16": "float16", "fp16": "float16",
          "float16": "float16", "f32": "float32", "fp32": "float32", "float32": "float32"}
ELT = {"bfloat16": 2, "float16": 2, "float32": 4}
STD = 0.02


def log(*a):
    print(*a, flush=True)


def make_config(s, dtype, style):
    c = {
        "architectures": [s["arch"]],
        "attention_dropout": 0.0,
        "bos_token_id": s["bos"],
        "eos_token_id": s["eos"],
        "hidden_act": "silu",
        "hidden_size": s["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": s["inter"],
        "max_position_embeddings": s["max_pos"],
        "model_type": s["model_type"],
        "num_attention_heads": s["heads"],
        "num_hidden_layers": s["layers"],
        "num_key_value_heads": s["kv"],
        "rms_norm_eps": s["rms_eps"],
        "tie_word_embeddings": s["tie"],
        "use_cache": True,
        "vocab_size": s["vocab"],
    }
    if s["model_type"] == "llama":
        c.update({"attention_bias": False, "mlp_bias": False, "head_dim": s["head_dim"], "pretraining_tp": 1})
    c.update(s.get("qwen_extra", {}))
    if style == 4:
        c["rope_theta"] = s["rope_theta"]
        c["rope_scaling"] = dict(s["rope_scaling"]) if s["rope_scaling"] else None
        c["torch_dtype"] = dtype
        c["transformers_version"] = "4.45.0"
    else:
        rp = {"rope_theta": s["rope_theta"], "rope_type": "default"}
        if s["rope_scaling"]:
            rp.update(s["rope_scaling"])
        c["rope_parameters"] = rp
        c["dtype"] = dtype
        c["transformers_version"] = "5.0.0"
    return c


def tensor_plan(s):
    """[(name, shape, kind)] in save_pretrained's order; kind: 'w' (normal), 'norm' (ones), 'bias'."""
    H, I, nh, kv, hd = s["hidden"], s["inter"], s["heads"], s["kv"], s["head_dim"]
    out = [("model.embed_tokens.weight", (s["vocab"], H), "w")]
    for i in range(s["layers"]):
        p = f"model.layers.{i}."
        out.append((p + "input_layernorm.weight", (H,), "norm"))
        for m, o in (("q_proj", nh * hd), ("k_proj", kv * hd), ("v_proj", kv * hd)):
            out.append((p + f"self_attn.{m}.weight", (o, H), "w"))
            if s["qkv_bias"]:
                out.append((p + f"self_attn.{m}.bias", (o,), "bias"))
        out.append((p + "self_attn.o_proj.weight", (H, nh * hd), "w"))
        out.append((p + "post_attention_layernorm.weight", (H,), "norm"))
        out.append((p + "mlp.gate_proj.weight", (I, H), "w"))
        out.append((p + "mlp.up_proj.weight", (I, H), "w"))
        out.append((p + "mlp.down_proj.weight", (H, I), "w"))
    out.append(("model.norm.weight", (H,), "norm"))
    if not s["tie"]:
        out.append(("lm_head.weight", (s["vocab"], H), "w"))
    return out


def lora_dims(s, mod):
    H, I, nh, kv, hd = s["hidden"], s["inter"], s["heads"], s["kv"], s["head_dim"]
    return {"q_proj": (H, nh * hd), "k_proj": (H, kv * hd), "v_proj": (H, kv * hd), "o_proj": (nh * hd, H),
            "gate_proj": (H, I), "up_proj": (H, I), "down_proj": (I, H)}[mod]  # (in, out)


def lora_name(i, mod, ab):
    grp = "mlp" if mod in ("gate_proj", "up_proj", "down_proj") else "self_attn"
    return f"base_model.model.model.layers.{i}.{grp}.{mod}.lora_{ab}.weight"


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def tensor_seed(seed, name):
    return (seed * 1000003 + zlib.crc32(name.encode())) & 0x7FFFFFFFFFFFFFFF


def randn(torch, shape, seed, name, device, std, dtype):
    g = torch.Generator(device=device)
    g.manual_seed(tensor_seed(seed, name))
    t = torch.randn(shape, generator=g, device=device, dtype=torch.float32)
    t.mul_(std)
    return t.to(dtype).cpu().contiguous()


def free_bytes(path):
    p = os.path.abspath(path)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    return shutil.disk_usage(p).free


def gb(n):
    return f"{n / 1e9:.2f} GB"


def write_model(args, s, dtype_name, device):
    import torch
    from safetensors.torch import save_file

    dtype = getattr(torch, dtype_name)
    plan = tensor_plan(s)
    elt = ELT[dtype_name]
    max_bytes = int(args.max_shard_gb * 1e9)
    shards, cur, cur_bytes = [], [], 0
    for name, shape, kind in plan:
        nb = numel(shape) * elt
        if cur and cur_bytes + nb > max_bytes:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append((name, shape, kind))
        cur_bytes += nb
    shards.append(cur)
    total = sum(numel(sh) * elt for _, sh, _ in plan)
    n_params = sum(numel(sh) for _, sh, _ in plan)
    n = len(shards)
    log(f"{args.shape}: {n_params / 1e9:.3f} B params, {gb(total)} as {dtype_name}, {n} shard(s), "
        f"generator on {device}")
    meta = {"format": "pt", "generator": f"torch.randn on {device}, seed {args.seed}"}
    weight_map = {}
    t0 = time.time()
    for si, shard in enumerate(shards):
        fname = "model.safetensors" if n == 1 else f"model-{si + 1:05d}-of-{n:05d}.safetensors"
        tensors = {}
        for name, shape, kind in shard:
            if kind == "norm":
                tensors[name] = torch.ones(shape, dtype=dtype)
            else:
                tensors[name] = randn(torch, shape, args.seed, name, device, STD, dtype)
            weight_map[name] = fname
        save_file(tensors, os.path.join(args.out, fname), metadata=meta)
        log(f"  wrote {fname}: {len(tensors)} tensors, "
            f"{gb(sum(t.numel() * t.element_size() for t in tensors.values()))}, {time.time() - t0:.1f}s")
        del tensors
    if n > 1:
        idx = {"metadata": {"total_size": total},
               "weight_map": {k: weight_map[k] for k in sorted(weight_map)}}
        with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
            json.dump(idx, f, indent=2)
            f.write("\n")
    return total, time.time() - t0


def write_adapters(args, s, device):
    import torch
    from safetensors.torch import save_file

    adtype = getattr(torch, DTYPES[args.adapter_dtype])
    ranks = [int(x) for x in args.ranks.split(",") if x]
    targets = [t for t in args.targets.split(",") if t]
    for t in targets:
        if t not in ALL7:
            raise SystemExit(f"unknown target {t!r}; choose from {','.join(ALL7)}")
    out_dirs = []
    aseed = args.adapter_seed if args.adapter_seed is not None else args.seed + 1
    t0 = time.time()
    for ai in range(args.adapters):
        r = ranks[ai % len(ranks)]
        alpha = 2 * r
        scale = alpha / r
        d = os.path.join(args.adapter_dir, f"lora-{ai:03d}-r{r}")
        os.makedirs(d, exist_ok=True)
        tensors = {}
        for i in range(s["layers"]):
            for mod in targets:
                fin, fout = lora_dims(s, mod)
                na, nb_ = lora_name(i, mod, "A"), lora_name(i, mod, "B")
                # delta W = scale * B @ A has element std ~0.1 * STD (10% of the base weights)
                sa = 1.0 / math.sqrt(fin)
                sb = 0.1 * STD * math.sqrt(fin) / (scale * math.sqrt(r))
                tensors[na] = randn(torch, (r, fin), aseed * 7919 + ai, na, device, sa, adtype)
                tensors[nb_] = randn(torch, (fout, r), aseed * 7919 + ai, nb_, device, sb, adtype)
        save_file(tensors, os.path.join(d, "adapter_model.safetensors"), metadata={"format": "pt"})
        cfg = {
            "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": os.path.abspath(args.out),
            "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
            "layers_pattern": None, "layers_to_transform": None, "lora_alpha": alpha, "lora_dropout": 0.0,
            "modules_to_save": None, "peft_type": "LORA", "r": r, "rank_pattern": {}, "revision": None,
            "target_modules": sorted(targets), "task_type": "CAUSAL_LM", "use_dora": False, "use_rslora": False,
        }
        with open(os.path.join(d, "adapter_config.json"), "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        log(f"  adapter {d}: r={r} alpha={alpha}, {len(tensors)} tensors, {gb(nbytes)}")
        out_dirs.append(d)
    log(f"  adapters: {time.time() - t0:.1f}s")
    return out_dirs


def adapter_bytes(args, s):
    ranks = [int(x) for x in args.ranks.split(",") if x]
    targets = [t for t in args.targets.split(",") if t]
    elt = ELT[DTYPES[args.adapter_dtype]]
    tot = 0
    for ai in range(args.adapters):
        r = ranks[ai % len(ranks)]
        for mod in targets:
            fin, fout = lora_dims(s, mod)
            tot += s["layers"] * r * (fin + fout) * elt
    return tot


def check(args, s, adapter_dirs, device):
    import torch
    from transformers import AutoModelForCausalLM
    t0 = time.time()
    m = AutoModelForCausalLM.from_pretrained(args.out, dtype=torch.bfloat16)
    m = m.to(device).eval()
    t_load = time.time() - t0
    ids = torch.tensor([[s["bos"], 1000, 2000, 3000]], device=device)
    with torch.no_grad():
        lg = m(input_ids=ids).logits.float()
    ok = bool(torch.isfinite(lg).all())
    log(f"check: transformers loaded {type(m).__name__} in {t_load:.1f}s; logits {tuple(lg.shape)} "
        f"finite={ok} std={lg.std().item():.4f}")
    # the loaded weights are the file's
    from safetensors import safe_open
    name = "model.layers.0.self_attn.q_proj.weight"
    fname = "model.safetensors"
    ip = os.path.join(args.out, "model.safetensors.index.json")
    if os.path.exists(ip):
        fname = json.load(open(ip))["weight_map"][name]
    with safe_open(os.path.join(args.out, fname), framework="pt") as f:
        ft = f.get_tensor(name)
    same = torch.equal(m.model.layers[0].self_attn.q_proj.weight.detach().cpu().to(ft.dtype), ft)
    log(f"check: {name} equals the file: {same}")
    if s["tie"]:
        log(f"check: tied lm_head is embed_tokens: "
            f"{m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()}")
    ok = ok and same
    if adapter_dirs:
        from peft import PeftModel
        t1 = time.time()
        pm = PeftModel.from_pretrained(m, adapter_dirs[0]).eval()
        n_mod = sum(1 for k, _ in pm.named_parameters() if ".lora_A." in k)
        with torch.no_grad():
            lg2 = pm(input_ids=ids).logits.float()
        diff = (lg2 - lg).abs().max().item()
        aok = bool(torch.isfinite(lg2).all()) and diff > 0
        log(f"check: peft loaded {adapter_dirs[0]} in {time.time() - t1:.1f}s: {n_mod} LoRA A matrices; "
            f"max |logit diff| vs base {diff:.4g}; ok={aok}")
        ok = ok and aok
    log(f"check: {'OK' if ok else 'FAILED'} ({time.time() - t0:.1f}s)")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"],
                    help="where the random numbers are drawn (changes the numbers); auto = cuda if present")
    ap.add_argument("--max-shard-gb", type=float, default=5.0)
    ap.add_argument("--config-style", type=int, default=4, choices=[4, 5],
                    help="4: rope_theta/rope_scaling/torch_dtype as published; 5: rope_parameters/dtype")
    ap.add_argument("--adapters", type=int, default=0)
    ap.add_argument("--ranks", default="8,16,32,64")
    ap.add_argument("--targets", default=",".join(ALL7))
    ap.add_argument("--adapter-seed", type=int, default=None)
    ap.add_argument("--adapter-dtype", default="f32", choices=sorted(DTYPES))
    ap.add_argument("--adapter-dir", default=None, help="default: OUT/adapters")
    ap.add_argument("--check", action="store_true", help="load the result with transformers + peft")
    ap.add_argument("--adapters-only", action="store_true",
                    help="write only the adapters (--adapters N) for the shape; OUT's model is left as it is")
    args = ap.parse_args()

    import torch
    s = SHAPES[args.shape]
    dtype_name = DTYPES[args.dtype]
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.adapter_dir is None:
        args.adapter_dir = os.path.join(args.out, "adapters")

    total = 0 if args.adapters_only else sum(numel(sh) for _, sh, _ in tensor_plan(s)) * ELT[dtype_name]
    need = total + adapter_bytes(args, s)
    free = free_bytes(args.out)
    if need * 1.02 + 64e6 > free:
        log(f"error: {args.shape} needs {gb(need)} on disk, only {gb(free)} free under {args.out}")
        return 2
    os.makedirs(args.out, exist_ok=True)
    if args.adapters_only:
        t0 = time.time()
        adapter_dirs = write_adapters(args, s, device) if args.adapters > 0 else []
        log(f"done: {len(adapter_dirs)} adapters under {args.adapter_dir} in {time.time() - t0:.1f}s")
        return 0
    for fn in os.listdir(args.out):  # stale shards of an earlier run would confuse loaders
        if fn.startswith("model") and (fn.endswith(".safetensors") or fn.endswith(".index.json")):
            os.remove(os.path.join(args.out, fn))
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(make_config(s, dtype_name, args.config_style), f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump(dict(s["gen"], transformers_version="4.45.0"), f, indent=2, sort_keys=True)
        f.write("\n")
    t0 = time.time()
    nbytes, dt = write_model(args, s, dtype_name, device)
    log(f"weights: {gb(nbytes)} in {dt:.1f}s ({nbytes / 1e9 / max(dt, 1e-9):.2f} GB/s)")
    adapter_dirs = write_adapters(args, s, device) if args.adapters > 0 else []
    log(f"done: {args.out} in {time.time() - t0:.1f}s")
    if args.check:
        return 0 if check(args, s, adapter_dirs, device) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
