#!/usr/bin/env python3
"""gen_fixtures.py — tiny random models, PEFT adapters and Hugging Face reference outputs.

Runs where torch + transformers (5.x) + peft + tokenizers + safetensors are installed (the GPU
machine; everything here runs on its CPU in float32). Writes, for each of four tiny models,

    OUT/<model>/model/              save_pretrained output (config.json in transformers 5.x spelling,
                                    generation_config.json, model.safetensors; llama3 also has a
                                    trained byte-level BPE tokenizer.json + tokenizer_config.json)
    OUT/<model>/adapters/<name>/    PEFT save_pretrained output (adapter_config.json +
                                    adapter_model.safetensors, or adapter_model.bin for bin_r2)
    OUT/<model>/ref.json            greedy continuations, per-step top1-top2 margins and the
                                    first-step logits, for the base model and every adapter

Deterministic: every random draw comes from a torch.Generator / random.Random seeded from a
fixed string (crc32), never from global state. See tests/golden/README.md for the format.

    python3 tests/golden/gen_fixtures.py --out DIR [--only llama3,qwen2]
"""

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
import traceback
import zlib

N_NEW = 12
PROMPT_LENS = (1, 5, 17, 40)
# A prompt is redrawn while any greedy step (base or any adapter) has top1 - top2 below this:
# a near-tie would make the golden test depend on float rounding order.
MIN_MARGIN = 1e-3
MAX_PROMPT_TRIES = 60
# LoRA magnitude: B is drawn so that scale * B @ A @ x has about LORA_RATIO times the
# magnitude of W @ x (A ~ N(0, 1/in), W ~ N(0, 1/in)), i.e. the adapter clearly changes tokens.
LORA_RATIO = 0.5
EMB_STD = 1.0
NORM_STD = 0.1    # RMSNorm weights: 1 + NORM_STD * randn
BIAS_STD = 0.1    # q/k/v biases (Qwen2): BIAS_STD * randn

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BOS_TEXT = "<|begin_of_text|>"
EOS_TEXT = "<|end_of_text|>"

TEXT_PROMPTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "It's 2026: don't panic!\n  Numbers 1234567 and x=3.14;",
    "caf\u00e9 na\u00efve \u2014 \u65e5\u672c\u8a9e \U0001F600 ok",
    "    indented\n\n\nlines\tand\ttabs  ",
]

ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def model_specs():
    """name -> spec. Token ids of llama3 are filled in from its trained tokenizer."""
    return {
        "llama3": dict(
            arch="LlamaForCausalLM", dtype="bfloat16", vocab=512,
            cfg=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                     rms_norm_eps=1e-5, tie_word_embeddings=False,
                     # original_max_position_embeddings 64 (not 32): with head_dim 16 and theta
                     # 5e5 the wavelengths are 6.3, 32.4, 167, ... so 64 puts one frequency in
                     # each llama3 branch (kept < 16, smoothed 16..64, divided by factor > 64).
                     rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                                          low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=64)),
            bos=None, eos=None, gen_eos=None, tokenizer=True,
            extra_adapters=True),
        "qwen2": dict(
            arch="Qwen2ForCausalLM", dtype="float16", vocab=384,
            cfg=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                     rms_norm_eps=1e-6, tie_word_embeddings=True,
                     rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
            bos=382, eos=383, gen_eos=[383, 381], tokenizer=False, extra_adapters=False),
        "qwen3": dict(
            arch="Qwen3ForCausalLM", dtype="bfloat16", vocab=400,
            cfg=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                     max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False,
                     rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
            bos=398, eos=399, gen_eos=399, tokenizer=False, extra_adapters=False),
        "mistral": dict(
            arch="MistralForCausalLM", dtype="float32", vocab=300,
            cfg=dict(hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                     num_attention_heads=8, num_key_value_heads=2, head_dim=8,
                     max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
                     sliding_window=None,
                     rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
            bos=1, eos=2, gen_eos=2, tokenizer=False, extra_adapters=False),
    }


def adapter_specs(with_bin):
    specs = [
        dict(name="all7_r8", r=8, lora_alpha=16, target_modules=list(ALL7), n_mod_per_layer=7),
        dict(name="qv_rslora_r4", r=4, lora_alpha=8, use_rslora=True,
             target_modules=["q_proj", "v_proj"], n_mod_per_layer=2),
        dict(name="regex_patterns", r=6, lora_alpha=12,
             target_modules=r".*\.(q_proj|o_proj|down_proj|up_proj)$",
             rank_pattern={"o_proj": 2}, alpha_pattern={"down_proj": 32}, n_mod_per_layer=4),
        dict(name="layer1_r16", r=16, lora_alpha=8, layers_to_transform=[1],
             target_modules=["gate_proj", "up_proj", "k_proj"], n_mod_per_layer=None, n_mod=3),
    ]
    if with_bin:
        specs.append(dict(name="bin_r2", r=2, lora_alpha=4, target_modules=["k_proj", "down_proj"],
                          n_mod_per_layer=2, safe=False))
    return specs


def log(*a):
    print(*a, flush=True)


def seed_of(*parts):
    return zlib.crc32("/".join(str(p) for p in parts).encode("utf-8"))


def gen(*parts):
    import torch
    g = torch.Generator(device="cpu")
    g.manual_seed(seed_of(*parts))
    return g


def write_json(path, obj, indent=2):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, sort_keys=True)
        f.write("\n")


# ----------------------------------------------------------------------------- tokenizer

WORDS = (
    "the of and to in is was for on that with as by at from it he she they we you this be are "
    "or his her their an have has had not but all were which one two three when there can more "
    "time will would about if so out up what into other some could them these then only new "
    "first over also after many most such where year years people way work world life day part "
    "state city school house water number system program group place game light model batch "
    "adapter token engine record output input shard file line text word sentence story small "
    "large little great good long short high low old young right left early late next last "
    "same different important public private real sure free full open close quick brown fox "
    "jumps lazy dog cat bird river mountain forest garden window door table chair paper letter "
    "music picture color green blue red white black yellow morning evening night summer winter "
    "spring autumn north south east west king queen child children mother father friend teacher "
    "student doctor market money price value question answer problem reason example result "
    "because before during without between under again always never often sometimes today "
    "tomorrow yesterday everything nothing something everyone someone hello thanks please sorry "
    "make made take took give gave find found think thought know knew come came look looked "
    "want wanted use used tell told ask asked seem seemed feel felt try tried leave left call "
    "called keep kept begin began show showed hear heard play played run ran move moved live "
    "lived believe hold bring happen write wrote provide sit stand lose pay meet include "
    "continue set learn change lead understand watch follow stop create speak read allow add "
    "spend grow offer remember love consider appear buy wait serve die send expect build stay "
    "fall cut reach kill remain suggest raise pass sell require report decide pull"
).split()
CONTRACTIONS = ["don't", "it's", "we'll", "they're", "I'm", "you've", "he'd", "can't", "isn't",
                "She's", "I'll", "won't"]
PUNCT_END = [".", ".", ".", "!", "?", "...", ";", ":"]


def training_text(n_sentences=4000):
    rng = random.Random(seed_of("tokenizer-corpus"))
    lines = []
    for i in range(n_sentences):
        n = rng.randint(3, 14)
        ws = []
        for j in range(n):
            x = rng.random()
            if x < 0.08:
                ws.append(rng.choice(CONTRACTIONS))
            elif x < 0.14:
                ws.append(str(rng.choice([rng.randint(0, 9), rng.randint(10, 99), rng.randint(100, 99999),
                                          1990 + rng.randint(0, 40)])))
            else:
                ws.append(rng.choice(WORDS))
            if j + 1 < n and rng.random() < 0.07:
                ws[-1] += ","
        ws[0] = ws[0][:1].upper() + ws[0][1:]
        s = " ".join(ws) + rng.choice(PUNCT_END)
        if rng.random() < 0.05:
            s = '"' + s + '"'
        if rng.random() < 0.04:
            s = "    " + s
        lines.append(s)
        lines.append("\n\n" if rng.random() < 0.2 else ("\n" if rng.random() < 0.5 else " "))
    return "".join(lines)


def build_tokenizer(out_dir, vocab_size):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 2, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    text = training_text()
    chunks = [text[i:i + 2000] for i in range(0, len(text), 2000)]
    tok.train_from_iterator(chunks, trainer=trainer)
    # Llama 3's tokenizer.json has ignore_merges: true; mirror it.
    d = json.loads(tok.to_str())
    d["model"]["ignore_merges"] = True
    tok = Tokenizer.from_str(json.dumps(d))
    n_base = tok.get_vocab_size(with_added_tokens=False)
    tok.add_special_tokens([AddedToken(BOS_TEXT, special=True, normalized=False),
                            AddedToken(EOS_TEXT, special=True, normalized=False)])
    bos = tok.token_to_id(BOS_TEXT)
    eos = tok.token_to_id(EOS_TEXT)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS_TEXT} $A",
                                      pair=f"{BOS_TEXT} $A:0 {BOS_TEXT}:1 $B:1",
                                      special_tokens=[(BOS_TEXT, bos)]),
    ])
    tok.decoder = decoders.ByteLevel()
    total = tok.get_vocab_size(with_added_tokens=True)
    log(f"  tokenizer: {n_base} BPE tokens + 2 special = {total}; bos={bos} eos={eos}; "
        f"corpus {len(text)} chars")
    assert total <= vocab_size and bos < vocab_size and eos < vocab_size, (total, bos, eos)
    if total != vocab_size:
        log(f"  WARNING: tokenizer vocab {total} < {vocab_size} (the trainer ran out of merges)")
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    tok_cfg = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {
            str(bos): {"content": BOS_TEXT, "lstrip": False, "normalized": False, "rstrip": False,
                       "single_word": False, "special": True},
            str(eos): {"content": EOS_TEXT, "lstrip": False, "normalized": False, "rstrip": False,
                       "single_word": False, "special": True},
        },
        "bos_token": BOS_TEXT,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS_TEXT,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 256,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    write_json(os.path.join(out_dir, "tokenizer_config.json"), tok_cfg)
    # Reload from disk, so the ids below are what the saved file gives.
    tok2 = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
    text_prompts = []
    for t in TEXT_PROMPTS:
        enc = tok2.encode(t)  # add_special_tokens=True by default
        ids = list(enc.ids)
        dec = tok2.decode(ids, skip_special_tokens=True)
        if dec != t:
            log(f"  WARNING: tokenizer round trip differs: {t!r} -> {dec!r}")
        assert ids and ids[0] == bos, ids
        assert all(0 <= i < vocab_size for i in ids)
        text_prompts.append({"text": t, "ids": ids})
        log(f"  text {t!r}: {len(ids)} ids {ids}")
    return bos, eos, text_prompts


def check_tokenizer_with_transformers(model_dir, text_prompts):
    """Soft check: transformers' AutoTokenizer gives the same ids. Reports only."""
    try:
        from transformers import AutoTokenizer
        at = AutoTokenizer.from_pretrained(model_dir)
        for tp in text_prompts:
            got = at(tp["text"])["input_ids"]
            if list(got) != tp["ids"]:
                log(f"  NOTE: AutoTokenizer ids differ for {tp['text']!r}: {list(got)} vs {tp['ids']}")
            else:
                log(f"  AutoTokenizer agrees on {tp['text'][:20]!r}")
    except Exception as e:  # noqa: BLE001
        log(f"  NOTE: AutoTokenizer check failed: {type(e).__name__}: {e}")


# ----------------------------------------------------------------------------- models

def randomize_base(model, name):
    """Overwrite every parameter (HF's init too, including its constants) from seeded generators."""
    import torch
    hidden = model.config.hidden_size
    with torch.no_grad():
        for pname, p in model.named_parameters():
            g = gen("base", name, pname)
            z = torch.randn(tuple(p.shape), generator=g, dtype=torch.float32)
            if pname.endswith("norm.weight"):
                v = 1.0 + NORM_STD * z
            elif pname.endswith(".bias"):
                v = BIAS_STD * z
            elif pname.endswith("embed_tokens.weight"):
                # tied: the embedding is also the output projection; N(0, 1/hidden) keeps the
                # logits ~unit and the residual from being dominated by the current token's
                # embedding (with N(0, 1) the tied model just repeats its last token, and no
                # adapter changes a greedy token)
                v = z / math.sqrt(hidden) if model.config.tie_word_embeddings else EMB_STD * z
            elif pname == "lm_head.weight":
                v = z / math.sqrt(hidden)
            elif p.dim() == 2:
                v = z / math.sqrt(p.shape[1])
            else:
                raise RuntimeError(f"unexpected parameter {pname} {tuple(p.shape)}")
            p.copy_(v.to(p.dtype))


def build_model(name, spec, model_dir):
    import torch
    import transformers
    from transformers import GenerationConfig

    cfg_cls = getattr(transformers, spec["arch"].replace("ForCausalLM", "Config"))
    model_cls = getattr(transformers, spec["arch"])
    cfg = cfg_cls(vocab_size=spec["vocab"], bos_token_id=spec["bos"], eos_token_id=spec["eos"], **spec["cfg"])
    torch.manual_seed(seed_of("hf-init", name))  # HF's own init; overwritten below anyway
    model = model_cls(cfg)
    randomize_base(model, name)
    model = model.to(getattr(torch, spec["dtype"]))
    model.eval()
    gc = GenerationConfig(bos_token_id=spec["bos"], eos_token_id=spec["gen_eos"])
    model.generation_config = gc
    model.save_pretrained(model_dir)
    gc.save_pretrained(model_dir)
    files = sorted(os.listdir(model_dir))
    log(f"  saved {model_dir}: {files}")
    assert "model.safetensors" in files, files
    with open(os.path.join(model_dir, "config.json")) as f:
        log("  config.json: " + json.dumps(json.load(f), sort_keys=True))
    with open(os.path.join(model_dir, "generation_config.json")) as f:
        log("  generation_config.json: " + json.dumps(json.load(f), sort_keys=True))
    ref_state = {k: v.detach().to(torch.float32).clone() for k, v in model.state_dict().items()}
    return ref_state


def load_base(model_dir):
    import torch
    from transformers import AutoModelForCausalLM
    m, info = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager",
                                                   output_loading_info=True)
    m.eval()
    return m, info


def check_loaded(model, info, ref_state, tied):
    import torch
    missing = [k for k in info.get("missing_keys", []) if not (tied and k == "lm_head.weight")]
    bad = {k: info.get(k) for k in ("unexpected_keys", "mismatched_keys", "error_msgs") if info.get(k)}
    if missing or bad:
        # the tensor-by-tensor comparison below is the real check; this is for the log
        log(f"  NOTE: loading info: missing={missing} {bad}")
    sd = model.state_dict()
    for k, v in ref_state.items():
        if k not in sd:
            raise RuntimeError(f"loaded model lacks {k}")
        if sd[k].dtype != torch.float32 or not torch.equal(sd[k], v):
            raise RuntimeError(f"loaded {k} differs from what was saved")
    if tied and not torch.equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"]):
        raise RuntimeError("tied lm_head differs from embed_tokens")


# ----------------------------------------------------------------------------- adapters

def make_adapter(model_dir, adir, name, aspec, n_layers):
    import torch
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    base, _ = load_base(model_dir)
    kw = dict(task_type="CAUSAL_LM", r=aspec["r"], lora_alpha=aspec["lora_alpha"], lora_dropout=0.0,
              bias="none", target_modules=aspec["target_modules"], init_lora_weights=False)
    for k in ("use_rslora", "rank_pattern", "alpha_pattern", "layers_to_transform"):
        if k in aspec:
            kw[k] = aspec[k]
    cfg = LoraConfig(**kw)
    pm = get_peft_model(base, cfg)
    mods = []
    with torch.no_grad():
        for mname, mod in pm.named_modules():
            if isinstance(mod, LoraLayer) and "default" in getattr(mod, "lora_A", {}):
                A = mod.lora_A["default"].weight
                B = mod.lora_B["default"].weight
                r, fin = A.shape
                scale = float(mod.scaling["default"])
                sa = 1.0 / math.sqrt(fin)
                sb = LORA_RATIO / (scale * math.sqrt(r))
                A.copy_(sa * torch.randn(tuple(A.shape), generator=gen("lora", name, aspec["name"], mname, "A")))
                B.copy_(sb * torch.randn(tuple(B.shape), generator=gen("lora", name, aspec["name"], mname, "B")))
                short = mname.split("model.layers.")[-1]
                mods.append((short, r, scale, tuple(A.shape), tuple(B.shape)))
    want = aspec["n_mod"] if aspec.get("n_mod") else aspec["n_mod_per_layer"] * n_layers
    log(f"  adapter {aspec['name']}: {len(mods)} LoRA modules: " +
        ", ".join(f"{s} r={r} scale={sc:g}" for s, r, sc, _, _ in mods))
    if len(mods) != want:
        raise RuntimeError(f"adapter {aspec['name']}: {len(mods)} modules, expected {want}")
    pm.save_pretrained(adir, safe_serialization=aspec.get("safe", True))
    # Normalize the two fields that depend on where/how this ran: the base path (informational
    # only; relative to the adapter folder) and target_modules (PEFT keeps a set: order varies).
    cpath = os.path.join(adir, "adapter_config.json")
    with open(cpath) as f:
        acfg = json.load(f)
    acfg["base_model_name_or_path"] = "../../model"
    if isinstance(acfg.get("target_modules"), list):
        acfg["target_modules"] = sorted(acfg["target_modules"])
    write_json(cpath, acfg)
    readme = os.path.join(adir, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    files = sorted(os.listdir(adir))
    log(f"  saved {adir}: {files}")
    return mods


def adapter_file_tensors(adir):
    import torch
    st = os.path.join(adir, "adapter_model.safetensors")
    if os.path.exists(st):
        from safetensors.torch import load_file
        return load_file(st)
    return torch.load(os.path.join(adir, "adapter_model.bin"), map_location="cpu", weights_only=True)


def load_with_adapter(model_dir, adir):
    import torch
    from peft import PeftModel
    base, _ = load_base(model_dir)
    pm = PeftModel.from_pretrained(base, adir)
    pm.eval()
    # Prove the saved file is what runs: every file tensor equals the live LoRA weight.
    live = dict(pm.named_parameters())
    ft = adapter_file_tensors(adir)
    if not ft:
        raise RuntimeError(f"{adir}: no tensors in the adapter file")
    for k, v in ft.items():
        lk = k.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
        if lk not in live:
            raise RuntimeError(f"{adir}: file tensor {k} not in the loaded model")
        if not torch.equal(live[lk].detach().float(), v.float()):
            raise RuntimeError(f"{adir}: {k} differs after loading")
    n_live = sum(1 for k in live if ".lora_A.default." in k)
    n_file = sum(1 for k in ft if ".lora_A." in k)
    if n_live != n_file:
        raise RuntimeError(f"{adir}: {n_live} live LoRA modules vs {n_file} in the file")
    return pm, sorted(ft.keys())


# ----------------------------------------------------------------------------- reference

def greedy(model, prompt, n_new):
    import torch
    ids = list(prompt)
    toks, margins, first = [], [], None
    with torch.no_grad():
        for step in range(n_new):
            out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
            lg = out.logits[0, -1].to(torch.float32)
            if not bool(torch.isfinite(lg).all()):
                raise RuntimeError("non-finite logits")
            nxt = int(torch.argmax(lg))
            top2 = torch.topk(lg, 2).values
            margins.append(float(top2[0] - top2[1]))
            if step == 0:
                first = [float(x) for x in lg.tolist()]
            toks.append(nxt)
            ids.append(nxt)
    return {"tokens": toks, "margins": margins, "logits": first}


def pick_prompts(name, variants, vocab, avoid):
    rng = random.Random(seed_of("prompts", name))
    prompts, results = [], {v: [] for v in variants}
    worst = math.inf
    for L in PROMPT_LENS:
        best = None
        for attempt in range(MAX_PROMPT_TRIES):
            p = []
            while len(p) < L:
                t = rng.randrange(vocab)
                if t not in avoid:
                    p.append(t)
            res = {v: greedy(m, p, N_NEW) for v, m in variants.items()}
            mm = min(min(r["margins"]) for r in res.values())
            if best is None or mm > best[0]:
                best = (mm, p, res, attempt)
            if mm >= MIN_MARGIN:
                break
        mm, p, res, attempt = best
        if mm < MIN_MARGIN:
            log(f"  WARNING: prompt len {L}: best min margin {mm:.3g} after {MAX_PROMPT_TRIES} tries")
        log(f"  prompt len {L}: attempt {attempt}, min margin over all variants {mm:.4g}")
        worst = min(worst, mm)
        prompts.append(p)
        for v in variants:
            results[v].append(res[v])
    return prompts, results, worst


def summarize_changes(results):
    base = results["base"]
    out = {}
    for v, rs in results.items():
        if v == "base":
            continue
        diff = sum(1 for rb, ra in zip(base, rs) for a, b in zip(rb["tokens"], ra["tokens"]) if a != b)
        total = sum(len(rb["tokens"]) for rb in base)
        first_diff = sum(1 for rb, ra in zip(base, rs) if rb["tokens"][0] != ra["tokens"][0])
        maxd = max(max(abs(x - y) for x, y in zip(rb["logits"], ra["logits"])) for rb, ra in zip(base, rs))
        out[v] = dict(tokens_changed=f"{diff}/{total}", first_token_changed=f"{first_diff}/{len(base)}",
                      max_first_logit_diff=round(maxd, 4))
    return out


# ----------------------------------------------------------------------------- driver

def do_model(name, spec, out_root, summary):
    import torch
    t0 = time.time()
    root = os.path.join(out_root, name)
    if os.path.exists(root):
        shutil.rmtree(root)
    model_dir = os.path.join(root, "model")
    os.makedirs(model_dir)
    log(f"== {name} ({spec['arch']}, stored {spec['dtype']})")
    text_prompts = None
    if spec["tokenizer"]:
        bos, eos, text_prompts = build_tokenizer(model_dir, spec["vocab"])
        spec["bos"], spec["eos"], spec["gen_eos"] = bos, eos, eos
    ref_state = build_model(name, spec, model_dir)
    tied = bool(spec["cfg"].get("tie_word_embeddings"))
    base, info = load_base(model_dir)
    check_loaded(base, info, ref_state, tied)
    log(f"  reload check ok ({len(ref_state)} tensors equal after bf16/f16 -> f32 widening)")
    if text_prompts is not None:
        check_tokenizer_with_transformers(model_dir, text_prompts)

    n_layers = spec["cfg"]["num_hidden_layers"]
    variants = {"base": base}
    adapter_info = {}
    for aspec in adapter_specs(spec["extra_adapters"]):
        adir = os.path.join(root, "adapters", aspec["name"])
        mods = make_adapter(model_dir, adir, name, aspec, n_layers)
        pm, keys = load_with_adapter(model_dir, adir)
        variants[aspec["name"]] = pm
        adapter_info[aspec["name"]] = dict(n_modules=len(mods), n_tensors=len(keys))

    eos_ids = spec["gen_eos"] if isinstance(spec["gen_eos"], list) else [spec["gen_eos"]]
    avoid = set(eos_ids) | {spec["eos"]}
    prompts, results, worst = pick_prompts(name, variants, spec["vocab"], avoid)
    ref = {"model": name, "dtype_compute": "float32", "n_new": N_NEW, "prompts": prompts, "results": results}
    if text_prompts is not None:
        ref["text_prompts"] = text_prompts
    for v, rs in results.items():
        for r in rs:
            assert all(math.isfinite(x) for x in r["logits"]) and len(r["logits"]) == spec["vocab"]
    with open(os.path.join(root, "ref.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f)
        f.write("\n")
    changes = summarize_changes(results)
    for v, c in changes.items():
        log(f"  {v}: vs base: {c}")
    log(f"  base tokens: {[r['tokens'] for r in results['base']]}")
    size = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(root) for fn in fns)
    dt = time.time() - t0
    log(f"  {name}: {size} bytes, worst margin {worst:.4g}, {dt:.1f}s")
    summary[name] = dict(bytes=size, worst_margin=worst, seconds=round(dt, 1), adapters=adapter_info,
                         changes=changes)
    del variants, base
    torch.cuda.empty_cache() if torch.cuda.is_available() else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (created; model folders inside are replaced)")
    ap.add_argument("--only", default="", help="comma-separated subset of: llama3,qwen2,qwen3,mistral")
    args = ap.parse_args()

    import torch
    import transformers
    torch.set_num_threads(1)  # one fixed reduction order on CPU
    transformers.utils.logging.disable_progress_bar()
    try:
        import peft
        import tokenizers
        import safetensors
        vers = dict(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
                    tokenizers=tokenizers.__version__, safetensors=safetensors.__version__)
    except Exception as e:  # noqa: BLE001
        vers = {"error": str(e)}
    log(f"versions: {vers}  python {sys.version.split()[0]}")

    os.makedirs(args.out, exist_ok=True)
    specs = model_specs()
    names = [n for n in specs if not args.only or n in args.only.split(",")]
    summary, failed = {}, []
    t0 = time.time()
    for n in names:
        try:
            do_model(n, specs[n], args.out, summary)
        except Exception:  # noqa: BLE001 — report and go on with the next model
            traceback.print_exc()
            failed.append(n)
            sys.stdout.flush()
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(args.out) for fn in fns)
    log(f"summary: {json.dumps(summary, sort_keys=True)}")
    log(f"versions: {vers}")
    log(f"total {total} bytes in {args.out}; {time.time() - t0:.1f}s; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
