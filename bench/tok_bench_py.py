#!/usr/bin/env python3
"""tok_bench_py.py FILE TOKENIZER_DIR [REPS] — Hugging Face `tokenizers` (Python), one thread.

Encodes FILE line by line (each line one text, no special tokens) with encode_batch over
chunks of 1000 lines, parallelism off, and prints one JSON line: bytes, tokens, seconds (best
of REPS), mb_per_s, tokenizers_version. The same work as `lorabatch tokenize --bench FILE`.
"""
import json
import os
import sys
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
import tokenizers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

path, tokdir = sys.argv[1], sys.argv[2]
reps = int(sys.argv[3]) if len(sys.argv) > 3 else 1
tok = Tokenizer.from_file(os.path.join(tokdir, "tokenizer.json"))
data = open(path, "rb").read()
lines = data.decode("utf-8").split("\n")
if lines and lines[-1] == "":
    lines.pop()
best = None
n_tokens = 0
for _ in range(reps):
    t0 = time.perf_counter()
    n_tokens = 0
    for i in range(0, len(lines), 1000):
        for e in tok.encode_batch(lines[i:i + 1000], add_special_tokens=False):
            n_tokens += len(e.ids)
    dt = time.perf_counter() - t0
    best = dt if best is None or dt < best else best
print(json.dumps({"bytes": len(data), "tokens": n_tokens, "seconds": round(best, 4),
                  "mb_per_s": round(len(data) / 1e6 / best, 2), "tokenizers_version": tokenizers.__version__}))
