#!/usr/bin/env node
/**
 * Which calibration set generalises? The study of the README's "Calibration study" table:
 *   calibration sets {C4 windows, WikiText-2 valid windows, published EBSS, EBSS + --no-repeat-ngram 4, balanced}
 *   × methods {GPTQ, AGQ} × bits {4, 3} on the three trained fixtures, 64 × 256 tokens each, natural routing
 *   (--routing-bias none: the set's own routing is what is compared), group size 128, asymmetric;
 *   measured on WikiText-2 test, held-out web text (C4 documents no pool or calibration set contains) and held-out
 *   code (the JavaScript of the `commander` package in node_modules, MIT license), 40 windows × 256 tokens each, as
 *   perplexity and as KL divergence from the fp model (moe-quant eval --reference), for seeds 0, 1, 2.
 * The C4 slice is split by document: the first 800 documents feed calibration and pools, the last 200 are held out.
 * The balanced set is chosen from 256 C4 windows + 256 WikiText-2 valid windows + the 64 EBSS samples of its seed.
 *
 * Usage: npm run build && node scripts/calibration-study.mjs [--fixtures a,b] [--seeds 0,1,2] [--out .study]
 * Results accumulate in OUT/results.json (a rerun skips what is there); the tables go to stdout.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SHARED = path.resolve(ROOT, '..', 'shared');
const lib = await import(path.join(ROOT, 'dist', 'index.js'));

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const FIXTURES = (args.fixtures ?? 'tiny-qwen3-moe,tiny-mixtral,tiny-deepseek-v3').split(',');
const SEEDS = (args.seeds ?? '0,1,2').split(',').map(Number);
const OUT = path.resolve(args.out ?? path.join(ROOT, '.study'));
const SAMPLES = 64;
const SEQ = 256;
const EVAL = { seqLen: 256, maxWindows: 40 };
fs.mkdirSync(OUT, { recursive: true });

// Data: the C4 slice split by document; WikiText-2 valid for calibration, test for evaluation; code.
const c4Lines = fs.readFileSync(path.join(SHARED, 'data/c4/c4-en-train.00000-of-01024.first1000.jsonl'), 'utf8').split('\n').filter(Boolean);
const C4_POOL = path.join(OUT, 'c4-first800.jsonl');
const C4_HELD = path.join(OUT, 'c4-last200.jsonl');
fs.writeFileSync(C4_POOL, `${c4Lines.slice(0, 800).join('\n')}\n`);
fs.writeFileSync(C4_HELD, `${c4Lines.slice(800).join('\n')}\n`);
const WIKI_VALID = path.join(SHARED, 'data/wikitext-2-raw/wiki.valid.raw');
const WIKI_TEST = path.join(SHARED, 'data/wikitext-2-raw/wiki.test.raw');
const CODE = path.join(OUT, 'code-commander.js');
const commanderLib = path.join(ROOT, 'node_modules/commander/lib');
fs.writeFileSync(
  CODE,
  fs
    .readdirSync(commanderLib)
    .sort()
    .map((f) => fs.readFileSync(path.join(commanderLib, f), 'utf8'))
    .join('\n\n'),
);
const EVAL_SETS = { 'wiki-test': WIKI_TEST, 'c4-heldout': C4_HELD, code: CODE };

const resultsFile = path.join(OUT, 'results.json');
const results = fs.existsSync(resultsFile) ? JSON.parse(fs.readFileSync(resultsFile, 'utf8')) : {};
const save = () => fs.writeFileSync(resultsFile, `${JSON.stringify(results, null, 1)}\n`);
const log = (s) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${s}\n`);

const SETS = ['c4', 'wiki-valid', 'ebss', 'ebss-norepeat4', 'balanced'];
const METHODS = ['gptq', 'agq'];
const BITS = [4, 3];

async function calibration(model, fixture, set, seed) {
  const dir = path.join(OUT, fixture, `calib-${set}-s${seed}`);
  if (fs.existsSync(path.join(dir, 'calibration.json'))) return dir;
  const base = { model, out: dir, samples: SAMPLES, seqLen: SEQ, seed, routingBias: 'none', device: 'cpu', onNote: (n) => log(`  ${n}`) };
  log(`${fixture}: calibration ${set}, seed ${seed}`);
  if (set === 'c4') await lib.calibrate({ ...base, data: [C4_POOL] });
  else if (set === 'wiki-valid') await lib.calibrate({ ...base, data: [WIKI_VALID] });
  else if (set === 'ebss') await lib.calibrate({ ...base, data: [], sampler: 'ebss' });
  else if (set === 'ebss-norepeat4') await lib.calibrate({ ...base, data: [], sampler: 'ebss', ebss: { noRepeatNgram: 4 } });
  else {
    const ebss = await calibration(model, fixture, 'ebss', seed);
    await lib.calibrate({ ...base, data: [], sampler: 'balanced', pool: [C4_POOL, WIKI_VALID, ebss], poolWindows: 256 });
  }
  return dir;
}

async function evaluate(model, reference, key) {
  for (const [name, data] of Object.entries(EVAL_SETS)) {
    const k = `${key}|${name}`;
    if (results[k]) continue;
    const r = reference
      ? await lib.evaluateKl({ model, reference, data, ...EVAL, device: 'cpu' })
      : await lib.evaluatePerplexity({ model, data, ...EVAL, device: 'cpu' });
    results[k] = reference ? { ppl: r.ppl, kl: r.reference.kl.mean, kl_p99: r.reference.kl.p99, top1: r.reference.top1_agreement } : { ppl: r.ppl };
    save();
  }
}

for (const fixture of FIXTURES) {
  const model = path.join(SHARED, 'fixtures', fixture);
  await evaluate(model, null, `${fixture}|fp`);
  for (const seed of SEEDS)
    for (const set of SETS) {
      const calib = await calibration(model, fixture, set, seed);
      const cj = JSON.parse(fs.readFileSync(path.join(calib, 'calibration.json'), 'utf8'));
      const report = JSON.parse(fs.readFileSync(path.join(calib, 'balance-report.json'), 'utf8'));
      results[`${fixture}|${set}|s${seed}|calibration`] = { sigma: report.summary.natural.sigma, distinct_4gram: cj.sampler.distinct_4gram ?? null };
      save();
      for (const method of METHODS)
        for (const bits of BITS) {
          const key = `${fixture}|${set}|s${seed}|${method}|${bits}`;
          if (Object.keys(EVAL_SETS).every((e) => results[`${key}|${e}`])) continue;
          const out = path.join(OUT, fixture, 'q');
          log(`${fixture}: quantize ${set} s${seed} ${method} ${bits}-bit`);
          await lib.quantizeModel({ model, calib, out, method, bits, format: bits === 4 ? 'gptq' : 'dequantized', device: 'cpu', force: true });
          await evaluate(out, model, key);
        }
    }
}

// Tables: mean ± spread (half the max − min over seeds) per fixture, eval set, method and bits.
const stat = (xs) => {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  return { mean: m, half: (Math.max(...xs) - Math.min(...xs)) / 2, n: xs.length };
};
const lines = [];
for (const fixture of FIXTURES) {
  lines.push(`\n### ${fixture}\n`);
  const sig = (set) => stat(SEEDS.map((s) => results[`${fixture}|${set}|s${s}|calibration`]?.sigma).filter((x) => x !== undefined));
  lines.push(`σ of the calibration set (natural routing): ${SETS.map((set) => `${set} ${sig(set).mean.toFixed(4)}`).join(', ')}\n`);
  for (const [metric, digits] of [['ppl', 2], ['kl', 4]]) {
    const fp = Object.keys(EVAL_SETS).map((e) => results[`${fixture}|fp|${e}`]?.ppl);
    lines.push(`${metric === 'ppl' ? 'Perplexity' : 'Mean KL divergence from fp (nats)'}${metric === 'ppl' ? ` (fp: ${fp.map((x) => x?.toFixed(2)).join(' / ')})` : ''}, mean ± half-range over seeds ${SEEDS.join(', ')}:\n`);
    const header = ['set', ...BITS.flatMap((b) => METHODS.flatMap((m) => Object.keys(EVAL_SETS).map((e) => `${b}-bit ${m.toUpperCase()} ${e}`)))];
    lines.push(`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`);
    for (const set of SETS) {
      const cells = BITS.flatMap((b) =>
        METHODS.flatMap((m) =>
          Object.keys(EVAL_SETS).map((e) => {
            const xs = SEEDS.map((s) => results[`${fixture}|${set}|s${s}|${m}|${b}|${e}`]?.[metric]).filter((x) => x !== undefined);
            if (!xs.length) return '—';
            const r = stat(xs);
            return `${r.mean.toFixed(digits)} ± ${r.half.toFixed(digits)}`;
          }),
        ),
      );
      lines.push(`| ${set} | ${cells.join(' | ')} |`);
    }
    lines.push('');
  }
}
process.stdout.write(`${lines.join('\n')}\n`);
