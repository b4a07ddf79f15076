#!/usr/bin/env python3
"""peer_hf.py — the peer for issue 5's workload 1: Hugging Face transformers + PEFT with mixed
adapters in every batch (PEFT's `adapter_names=` batch inference), on the same random
Llama-3-8B-shaped checkpoint and adapters lorabatch runs.

    python3 bench/peer_hf.py --model DIR --adapters DIR/adapters --requests 64 --batch 64 \
        --prompt-len 512 --new 256 --json OUT.json

Each request gets its own 512 random prompt tokens (seeded) and adapter i % n_adapters; greedy,
EOS ignored (min_new_tokens = max_new_tokens). Prints and writes output and total tokens/s.
Fewer requests than lorabatch's 1024 keep the device time small; tokens/s is the figure compared.
"""
import argparse, glob, json, os, time

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--adapters", required=True)
ap.add_argument("--n-adapters", type=int, default=16)
ap.add_argument("--requests", type=int, default=64)
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--prompt-len", type=int, default=512)
ap.add_argument("--new", type=int, default=256)
ap.add_argument("--json", default=None)
a = ap.parse_args()

t0 = time.time()
model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16, device_map="cuda")
dirs = sorted(glob.glob(os.path.join(a.adapters, "*")))[: a.n_adapters]
model = PeftModel.from_pretrained(model, dirs[0], adapter_name="a0")
for i, d in enumerate(dirs[1:], 1):
    model.load_adapter(d, adapter_name=f"a{i}")
model.eval()
load_s = time.time() - t0
g = torch.Generator().manual_seed(0)
ids = torch.randint(1000, 100000, (a.requests, a.prompt_len), generator=g)
names = [f"a{i % len(dirs)}" for i in range(a.requests)]
torch.cuda.synchronize()
t0 = time.time()
n_out = 0
with torch.no_grad():
    for b in range(0, a.requests, a.batch):
        x = ids[b : b + a.batch].cuda()
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=a.new, min_new_tokens=a.new,
                             do_sample=False, adapter_names=names[b : b + a.batch], pad_token_id=0)
        n_out += (out.shape[1] - x.shape[1]) * x.shape[0]
torch.cuda.synchronize()
dt = time.time() - t0
res = {"peer": "transformers+peft", "requests": a.requests, "batch": a.batch, "adapters": len(dirs), "prompt_len": a.prompt_len,
       "new_tokens": a.new, "seconds": dt, "load_seconds": load_s, "output_tok_s": n_out / dt,
       "total_tok_s": (n_out + a.requests * a.prompt_len) / dt, "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}
print(json.dumps(res))
if a.json:
    json.dump(res, open(a.json, "w"), indent=2)
