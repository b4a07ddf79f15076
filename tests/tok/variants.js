#!/usr/bin/env node
// variants.js NODE_MODULES OUTDIR — derives tokenizer files that exercise components the six
// published files do not use, from those files (nothing committed), one folder per variant:
//   llama2_metaspace        llama2 with its Prepend+Replace normalizer and its decoder replaced by
//                           Metaspace pre-tokenizer / decoder (prepend_scheme "always", split false)
//   llama2_metaspace_first  the same with prepend_scheme "first"
'use strict';
const fs = require('fs');
const path = require('path');
const [nm, out] = process.argv.slice(2);
const src = path.join(nm, '@lenml', 'tokenizer-llama2', 'models');
const base = JSON.parse(fs.readFileSync(path.join(src, 'tokenizer.json'), 'utf8'));
const cfg = fs.readFileSync(path.join(src, 'tokenizer_config.json'), 'utf8');
for (const scheme of ['always', 'first']) {
  const t = structuredClone(base);
  const meta = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: scheme, split: false };
  t.normalizer = null;
  t.pre_tokenizer = meta;
  t.decoder = meta;
  const dir = path.join(out, scheme === 'always' ? 'llama2_metaspace' : 'llama2_metaspace_first');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(t));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), cfg);
}
