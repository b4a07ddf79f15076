#!/usr/bin/env node
// tok_bench_node.js NODE_MODULES FILE TOKENIZER_DIR [REPS] — Hugging Face `tokenizers` through its
// Node binding (the same Rust core as the Python package), one thread (parallelism off).
// Same work and output as tok_bench_py.py: one JSON line with bytes, tokens, seconds, mb_per_s.
'use strict';
process.env.TOKENIZERS_PARALLELISM = 'false';
process.env.RAYON_NUM_THREADS = '1';
const fs = require('fs');
const path = require('path');
const [nm, file, dir, reps = '1'] = process.argv.slice(2);
const { Tokenizer } = require(path.join(path.resolve(nm), 'tokenizers'));
(async () => {
  const t = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
  const data = fs.readFileSync(file);
  const lines = data.toString('utf8').split('\n');
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  let best = Infinity, tokens = 0;
  for (let r = 0; r < Number(reps); r++) {
    const t0 = process.hrtime.bigint();
    tokens = 0;
    for (let i = 0; i < lines.length; i += 1000) {
      const enc = await t.encodeBatch(lines.slice(i, i + 1000), { addSpecialTokens: false });
      for (const e of enc) tokens += e.getIds().length;
    }
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  const version = require(path.join(path.resolve(nm), 'tokenizers', 'package.json')).version;
  console.log(JSON.stringify({ bytes: data.length, tokens, seconds: +best.toFixed(4),
    mb_per_s: +(data.length / 1e6 / best).toFixed(2), tokenizers_version: version }));
})();
