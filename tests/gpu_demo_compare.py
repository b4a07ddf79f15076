#!/usr/bin/env python3
"""gpu_demo_compare.py — the demo job's CUDA outputs against the CPU backend's, by the golden rule.

    tests/gpu_demo_compare.py BIN JOB CUDA_OUT CPU_OUT

Both runs must have written token ids (output.token_ids: true). For every record:
  - identical token ids: counted as identical;
  - greedy (temperature 0) and different: at the first differing step k the CPU backend is asked
    again, through `BIN generate --device cpu --margins`, for the one token after the prompt and
    the common prefix; it must give the CPU run's token k again (else the check itself is broken:
    counted as a failure), and its top-2 logit margin at that step must be below bf16 noise,
    2e-2 x max |logit| (the rule test_golden applies against Hugging Face). A larger margin is a
    real mismatch: a failure.
  - sampled (temperature > 0) and different: listed apart; the top-2 rule does not apply.
Prints one line per differing record and a summary; exits 1 on any failure.
"""
import glob
import json
import os
import shutil
import subprocess
import sys

import yaml

NOISE = 2e-2


BIN = None


def zlines(path):
    # zstd -dc, or lorabatch's own `cat` where the zstd program is missing (the GPU machines)
    cmd = ["zstd", "-dc", path] if shutil.which("zstd") else [BIN, "cat", path]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout.decode()
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def main():
    if len(sys.argv) != 5:
        print(__doc__)
        return 2
    global BIN
    bin_, job_path, cuda_dir, cpu_dir = sys.argv[1:]
    BIN = bin_
    job = yaml.safe_load(open(job_path))
    base = os.path.dirname(os.path.abspath(job_path))
    rel = lambda p: p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))
    model = rel(job["model"])
    amap = {k: rel(v) for k, v in job["adapters"]["map"].items()}
    shards = {os.path.splitext(os.path.basename(i["path"]))[0]: rel(i["path"]) for i in job["inputs"]}
    gen = job.get("generation", {})
    n_same = n_tie = n_sampled = 0
    fails = []
    for f in sorted(glob.glob(os.path.join(cuda_dir, "*.jsonl.zst"))):
        name = os.path.basename(f)
        shard, adapter = name.split(".")[0], name.split(".")[1]
        recs = [json.loads(x) for x in open(shards[shard])]
        a, b = zlines(f), zlines(os.path.join(cpu_dir, name))
        if len(a) != len(b):
            fails.append(f"{name}: {len(a)} records on CUDA, {len(b)} on the CPU")
            continue
        for x, y in zip(a, b):
            if x.get("token_ids") == y.get("token_ids"):
                n_same += 1
                continue
            rec = recs[x["index"]]
            t1, t2 = x.get("token_ids", []), y.get("token_ids", [])
            k = next((i for i in range(min(len(t1), len(t2))) if t1[i] != t2[i]), min(len(t1), len(t2)))
            tag = f"{name} index {x['index']} ({rec.get('id')})"
            if float(rec.get("temperature", gen.get("temperature", 0.0))) > 0:
                n_sampled += 1
                print(f"sampled {tag}: first differing step {k} (top-2 rule not applicable)")
                continue
            if "prompt_token_ids" in rec:
                ids = rec["prompt_token_ids"]
            else:
                tk = subprocess.run([bin_, "tokenize", "--tokenizer", model, "--special", "--config-bos", "--text", rec["prompt"]],
                                    capture_output=True, check=True).stdout.decode()
                ids = json.loads(tk)["ids"]
            cmd = [bin_, "generate", "--device", "cpu", "--model", model]
            if adapter != "base":
                cmd += ["--adapter", f"a={amap[adapter]}", "--use", "a"]
            cmd += ["--prompt-ids", ",".join(str(i) for i in ids + t2[:k]), "--max-tokens", "1", "--margins"]
            r = subprocess.run(cmd, capture_output=True)
            if r.returncode:
                fails.append(f"{tag}: generate failed: {r.stderr.decode()[-300:]}")
                continue
            g = json.loads(r.stdout.decode().splitlines()[-1])
            got = g["token_ids"][0] if g["token_ids"] else "EOS"
            want = t2[k] if k < len(t2) else "EOS"
            margin, scale = g["margins"][0], g["max_abs_logits"][0]
            line = (f"{tag}: first differing step {k}: CUDA {t1[k] if k < len(t1) else 'EOS'}, CPU {want}; "
                    f"CPU top-2 margin {margin:.4g} = {margin / scale:.2e} x max |logit|")
            if got != want:
                fails.append(f"{tag}: the CPU re-run gives {got} at step {k}, the CPU run gave {want}")
            elif margin < NOISE * scale:
                n_tie += 1
                print("near-tie " + line)
            else:
                fails.append("MISMATCH " + line)
    for f in fails:
        print("FAIL " + f)
    print(f"demo CUDA vs CPU: {n_same} records identical, {n_tie} greedy records diverge at a CPU near-tie "
          f"(margin < {NOISE} x max |logit|), {n_sampled} sampled records differ, {len(fails)} failures")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
