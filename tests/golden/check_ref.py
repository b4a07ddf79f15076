#!/usr/bin/env python3
"""check_ref.py — an independent, pure-Python (no numpy, no torch) check of the golden fixtures.

Re-implements the forward pass (RMSNorm, RoPE incl. llama3 scaling, GQA, q/k norm, q/k/v bias,
SwiGLU, tied head, PEFT LoRA scale incl. rsLoRA and alpha_pattern) from the saved files alone, in
double precision, and compares with ref.json: first-step logits (relative to the row's max |logit|)
and, for prompts up to --greedy-max-len tokens, the 12 greedy tokens. adapter_model.bin is skipped.
It is the executable form of the format in README.md; ~30 s with the defaults.

    python3 tests/golden/check_ref.py [tests/golden/fixtures] [--greedy-max-len 5]
"""
import json, math, os, re, struct, sys


def load_st(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    hdr = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        raw = data[base + a:base + b]
        dt = v["dtype"]
        if dt == "F32":
            vals = list(struct.unpack(f"<{len(raw)//4}f", raw))
        elif dt == "F16":
            vals = list(struct.unpack(f"<{len(raw)//2}e", raw))
        elif dt == "BF16":
            u = struct.unpack(f"<{len(raw)//2}H", raw)
            vals = list(struct.unpack(f"<{len(u)}f", struct.pack(f"<{len(u)}I", *[x << 16 for x in u])))
        else:
            raise ValueError(dt)
        shape = v["shape"]
        if len(shape) == 2:
            r, c = shape
            vals = [vals[i * c:(i + 1) * c] for i in range(r)]
        out[k] = vals
    return out


def matvec(W, x):
    return [sum(w * xi for w, xi in zip(row, x)) for row in W]


def rmsnorm(x, w, eps):
    ms = sum(v * v for v in x) / len(x)
    r = 1.0 / math.sqrt(ms + eps)
    return [v * r * wi for v, wi in zip(x, w)]


def inv_freqs(cfg, hd):
    rp = cfg.get("rope_parameters") or {}
    theta = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))
    inv = [1.0 / (theta ** (2 * i / hd)) for i in range(hd // 2)]
    if rp.get("rope_type") == "llama3":
        f, lo, hi, old = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"], rp["original_max_position_embeddings"]
        lw, hw = old / lo, old / hi
        out = []
        for fr in inv:
            wl = 2 * math.pi / fr
            if wl < hw:
                out.append(fr)
            elif wl > lw:
                out.append(fr / f)
            else:
                s = (old / wl - lo) / (hi - lo)
                out.append((1 - s) * fr / f + s * fr)
        inv = out
    return inv


def rope(v, pos, inv):
    h = len(v) // 2
    out = list(v)
    for i in range(h):
        c, s = math.cos(pos * inv[i]), math.sin(pos * inv[i])
        out[i] = v[i] * c - v[i + h] * s
        out[i + h] = v[i + h] * c + v[i] * s
    return out


class Lora:
    def __init__(self, adir):
        self.cfg = json.load(open(os.path.join(adir, "adapter_config.json")))
        self.t = load_st(os.path.join(adir, "adapter_model.safetensors"))

    def get(self, layer, grp, mod):
        pre = f"base_model.model.model.layers.{layer}.{grp}.{mod}."
        if pre + "lora_A.weight" not in self.t:
            return None
        A, B = self.t[pre + "lora_A.weight"], self.t[pre + "lora_B.weight"]
        r = len(A)
        alpha = self.cfg["lora_alpha"]
        name = f"model.layers.{layer}.{grp}.{mod}"
        for k, v in (self.cfg.get("alpha_pattern") or {}).items():
            if re.match(rf"(.*\.)?({k})$", name):
                alpha = v
                break
        scale = alpha / math.sqrt(r) if self.cfg.get("use_rslora") else alpha / r
        return A, B, scale


def proj(W, b, x, lora, layer, grp, mod):
    y = matvec(W, x)
    if b is not None:
        y = [a + c for a, c in zip(y, b)]
    if lora is not None:
        g = lora.get(layer, grp, mod)
        if g is not None:
            A, B, s = g
            t = matvec(A, x)
            d = matvec(B, t)
            y = [a + s * c for a, c in zip(y, d)]
    return y


def forward(cfg, W, ids, lora):
    H = cfg["hidden_size"]; nh = cfg["num_attention_heads"]; nkv = cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh; eps = cfg["rms_norm_eps"]; L = cfg["num_hidden_layers"]
    inv = inv_freqs(cfg, hd)
    xs = [list(W["model.embed_tokens.weight"][t]) for t in ids]
    for l in range(L):
        p = f"model.layers.{l}."
        ks, vs, qs = [], [], []
        for pos, x in enumerate(xs):
            h = rmsnorm(x, W[p + "input_layernorm.weight"], eps)
            q = proj(W[p + "self_attn.q_proj.weight"], W.get(p + "self_attn.q_proj.bias"), h, lora, l, "self_attn", "q_proj")
            k = proj(W[p + "self_attn.k_proj.weight"], W.get(p + "self_attn.k_proj.bias"), h, lora, l, "self_attn", "k_proj")
            v = proj(W[p + "self_attn.v_proj.weight"], W.get(p + "self_attn.v_proj.bias"), h, lora, l, "self_attn", "v_proj")
            qh = [q[i * hd:(i + 1) * hd] for i in range(nh)]
            kh = [k[i * hd:(i + 1) * hd] for i in range(nkv)]
            vh = [v[i * hd:(i + 1) * hd] for i in range(nkv)]
            if p + "self_attn.q_norm.weight" in W:
                qh = [rmsnorm(z, W[p + "self_attn.q_norm.weight"], eps) for z in qh]
                kh = [rmsnorm(z, W[p + "self_attn.k_norm.weight"], eps) for z in kh]
            qs.append([rope(z, pos, inv) for z in qh])
            ks.append([rope(z, pos, inv) for z in kh])
            vs.append(vh)
        new = []
        for pos, x in enumerate(xs):
            att = []
            for hh in range(nh):
                kv = hh // (nh // nkv)
                sc = [sum(a * b for a, b in zip(qs[pos][hh], ks[j][kv])) / math.sqrt(hd) for j in range(pos + 1)]
                m = max(sc); e = [math.exp(s - m) for s in sc]; z = sum(e)
                o = [0.0] * hd
                for j in range(pos + 1):
                    w = e[j] / z
                    for d in range(hd):
                        o[d] += w * vs[j][kv][d]
                att.extend(o)
            o = proj(W[p + "self_attn.o_proj.weight"], None, att, lora, l, "self_attn", "o_proj")
            x = [a + b for a, b in zip(x, o)]
            h = rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
            g = proj(W[p + "mlp.gate_proj.weight"], None, h, lora, l, "mlp", "gate_proj")
            u = proj(W[p + "mlp.up_proj.weight"], None, h, lora, l, "mlp", "up_proj")
            a = [gi / (1 + math.exp(-gi)) * ui for gi, ui in zip(g, u)]
            d = proj(W[p + "mlp.down_proj.weight"], None, a, lora, l, "mlp", "down_proj")
            new.append([a1 + b1 for a1, b1 in zip(x, d)])
        xs = new
    h = rmsnorm(xs[-1], W["model.norm.weight"], eps)
    head = W.get("lm_head.weight") or W["model.embed_tokens.weight"]
    return matvec(head, h)


def main(root, greedy_max_len=5, tol=1e-5):
    worst, n_bad = 0.0, 0
    for model in sorted(os.listdir(root)):
        md = os.path.join(root, model)
        if not os.path.isdir(md):
            continue
        cfg = json.load(open(os.path.join(md, "model", "config.json")))
        W = load_st(os.path.join(md, "model", "model.safetensors"))
        ref = json.load(open(os.path.join(md, "ref.json")))
        for var, rs in ref["results"].items():
            adir = os.path.join(md, "adapters", var)
            if var != "base" and not os.path.exists(os.path.join(adir, "adapter_model.safetensors")):
                print(f"{model}/{var}: skipped (not safetensors)")
                continue
            lora = None if var == "base" else Lora(adir)
            for pi, (prompt, r) in enumerate(zip(ref["prompts"], rs)):
                lg = forward(cfg, W, prompt, lora)
                mx = max(abs(v) for v in r["logits"])
                err = max(abs(a - b) for a, b in zip(lg, r["logits"])) / mx
                worst = max(worst, err)
                ok_tok = None
                if len(prompt) <= greedy_max_len:
                    ids = list(prompt); toks = []
                    for _ in range(ref["n_new"]):
                        l2 = forward(cfg, W, ids, lora)
                        t = max(range(len(l2)), key=lambda i: l2[i]); toks.append(t); ids.append(t)
                    ok_tok = toks == r["tokens"]
                    n_bad += 0 if ok_tok else 1
                n_bad += 1 if err > tol else 0
                print(f"{model}/{var} prompt {pi} (len {len(prompt)}): rel logit err {err:.2e}"
                      + ("" if ok_tok is None else f", greedy tokens match: {ok_tok}"), flush=True)
    print(f"worst relative logit error {worst:.2e}; {n_bad} mismatches")
    return 1 if n_bad else 0


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("root", nargs="?", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
    ap.add_argument("--greedy-max-len", type=int, default=5)
    a = ap.parse_args()
    sys.exit(main(a.root, a.greedy_max_len))
