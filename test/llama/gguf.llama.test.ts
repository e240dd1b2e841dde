/**
 * moe-quant's GGUF files checked by a real llama.cpp (node-llama-cpp's prebuilt CPU build, tools/llama-cpp):
 * float exports against the transformers references, the exact block layout of every type, every type's logits and
 * perplexity against moe-quant's own forward of the same file, and GGUF files solved with AGQ.
 * Needs `npm run llama:install`; `npm run test:llama` runs it (.ci/run does both).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateCheckpoint, KQUANT_MIXTRAL_CONFIG, writeByteTokenizer } from '../../src/bench/synth.js';
import { createEngine } from '../../src/engine/engine.js';
import { evaluatePerplexity } from '../../src/eval/perplexity.js';
import { convertToGguf } from '../../src/formats/gguf/convert.js';
import type { GgufOptions } from '../../src/formats/gguf/writer.js';
import { quantizeModel } from '../../src/pipeline/quantize.js';
import { readReference } from '../engine/helpers.js';
import { C4, FIXTURES, WIKI } from '../paths.js';
import { agreement, llamaLogits, llamaMissing, llamaPerplexity } from './llama.js';

const GENERATED = path.resolve(__dirname, '../fixtures/generated');
const missing = llamaMissing();
if (missing) console.warn(`skipping the llama.cpp suite: ${missing}`);
const suite = missing ? describe.skip : describe;

let tmp: string;
/** A generated fixture with a byte-level tokenizer added (links to its files), so that it can be written as GGUF. */
function withTokenizer(src: string): string {
  if (fs.existsSync(path.join(src, 'tokenizer.json'))) return src;
  const dir = fs.mkdtempSync(path.join(tmp, `${path.basename(src)}-`));
  for (const f of fs.readdirSync(src)) fs.symlinkSync(path.join(src, f), path.join(dir, f));
  const cfg = JSON.parse(fs.readFileSync(path.join(src, 'config.json'), 'utf8')) as { vocab_size: number };
  writeByteTokenizer(dir, cfg.vocab_size);
  return dir;
}
async function gguf(model: string, options: GgufOptions): Promise<string> {
  const dir = fs.mkdtempSync(path.join(tmp, 'gguf-'));
  return convertToGguf(model, dir, options);
}
async function ourLogits(file: string, ids: Int32Array): Promise<Float32Array> {
  const engine = await createEngine(file, { device: 'cpu' });
  try {
    return (await engine.forward.run([ids], { head: 'logits' })).logits!;
  } finally {
    await engine.close();
  }
}

const REPRESENTABLE = [
  path.join(FIXTURES, 'tiny-mixtral'),
  path.join(FIXTURES, 'tiny-qwen3-moe'),
  path.join(FIXTURES, 'tiny-deepseek-v3'),
  path.join(GENERATED, 'olmoe'),
  path.join(GENERATED, 'deepseek-v1'),
  path.join(GENERATED, 'deepseek-v2-lite'),
  path.join(GENERATED, 'deepseek-v3-qlora'),
];

let kmix: string;
let kIds: Int32Array;

suite('GGUF in a real llama.cpp', () => {
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-llama-'));
    kmix = path.join(tmp, 'kquant-mixtral');
    generateCheckpoint(kmix, KQUANT_MIXTRAL_CONFIG, 'bench', 0.05);
    writeByteTokenizer(kmix, KQUANT_MIXTRAL_CONFIG.vocab_size);
    kIds = Int32Array.from(Buffer.from(fs.readFileSync(WIKI, 'utf8').slice(0, 64), 'latin1').subarray(0, 64));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  describe('float export vs the transformers references', () => {
    for (const dir of REPRESENTABLE) {
      it(`${path.basename(dir)}: F32 within 1e-3 with identical top-1, F16 within 1e-2`, async () => {
        const model = withTokenizer(dir);
        const ref = readReference(dir);
        for (const [type, bound] of [['f32', 1e-3], ['f16', 1e-2]] as const) {
          const { logits, vocab } = llamaLogits(await gguf(model, { type }), ref.ids);
          const a = agreement(logits, ref.logits, vocab);
          console.log(`${path.basename(dir)} ${type}: max |Δ| ${a.max.toExponential(2)}, top-1 ${(a.top1 * 100).toFixed(1)}%`);
          expect(a.max).toBeLessThan(bound);
          if (type === 'f32') expect(a.top1).toBe(1);
        }
      });
    }
  });

  describe('exact block layout: only token_embd quantized, llama.cpp dequantizes its rows as we do', () => {
    const cases: Array<[string, string[]]> = [
      ['tiny-mixtral', ['q4_0', 'q4_1', 'q5_0', 'q5_1', 'q8_0']],
      ['kquant-mixtral', ['q4_k', 'q5_k', 'q6_k']],
    ];
    for (const [name, types] of cases) {
      it(`${name}: ${types.join(', ')} within 1e-5`, async () => {
        const model = name === 'kquant-mixtral' ? kmix : path.join(FIXTURES, name);
        const ids = name === 'kquant-mixtral' ? kIds : readReference(model).ids;
        for (const type of types) {
          const file = await gguf(model, { type: 'f32', override: (t) => (t === 'token_embd.weight' ? (type as never) : undefined) });
          const { logits, vocab } = llamaLogits(file, ids);
          const a = agreement(logits, await ourLogits(file, ids), vocab);
          console.log(`${name} token_embd ${type}: max |Δ| ${a.max.toExponential(2)}`);
          expect(a.max).toBeLessThanOrEqual(1e-5);
        }
      });
    }
  });

  describe("every quantized type: llama.cpp vs moe-quant's forward of the same file", () => {
    const cases: Array<[string, string[]]> = [
      ['tiny-mixtral', ['q4_0', 'q4_1', 'q5_0', 'q5_1', 'q8_0']],
      ['tiny-deepseek-v3', ['q4_0', 'q8_0']],
      ['tiny-qwen3-moe', ['q4_0']],
      ['kquant-mixtral', ['q4_k', 'q5_k', 'q6_k']],
    ];
    for (const [name, types] of cases) {
      it(`${name}: ${types.join(', ')}: mean |Δlogit| < 0.05, top-1 ≥ 90%, perplexity within 0.5%`, async () => {
        const model = name === 'kquant-mixtral' ? kmix : path.join(FIXTURES, name);
        const ids = name === 'kquant-mixtral' ? kIds : readReference(model).ids;
        for (const type of types) {
          const file = await gguf(model, { type: type as never });
          const { logits, vocab } = llamaLogits(file, ids);
          const a = agreement(logits, await ourLogits(file, ids), vocab);
          const theirs = llamaPerplexity(file, WIKI, 256, 40);
          const ours = await evaluatePerplexity({ model: file, data: WIKI, seqLen: 256, maxWindows: 40, device: 'cpu', workers: 1 });
          const rel = Math.abs(theirs.ppl / ours.ppl - 1);
          console.log(`${name} ${type}: mean |Δ| ${a.mean.toExponential(2)}, max ${a.max.toExponential(2)}, top-1 ${(a.top1 * 100).toFixed(1)}%; ppl llama.cpp ${theirs.ppl.toFixed(3)} ours ${ours.ppl.toFixed(3)} (${(rel * 100).toFixed(3)}%)`);
          expect(a.mean).toBeLessThan(0.05);
          expect(a.top1).toBeGreaterThanOrEqual(0.9);
          expect(rel).toBeLessThan(0.005);
        }
      });
    }
  });

  describe('GGUF solved with AGQ (grid solve, permuted q/k, MLA k_b/v_b)', () => {
    const runs: Array<[string, string]> = [
      ['tiny-mixtral', 'q4_0'],
      ['tiny-deepseek-v3', 'q4_1'],
      ['kquant-mixtral', 'q4_k'],
    ];
    for (const [name, type] of runs) {
      it(`${name} AGQ ${type}: llama.cpp agrees with our forward`, async () => {
        const model = name === 'kquant-mixtral' ? kmix : path.join(FIXTURES, name);
        const ids = name === 'kquant-mixtral' ? kIds : readReference(model).ids;
        const out = path.join(tmp, `agq-${name}-${type}`);
        const r = await quantizeModel({ model, out, data: [C4], format: 'gguf', gguf: { type: type as never }, method: 'agq', calibration: { samples: 16, seqLen: 256 }, device: 'cpu' });
        const file = r.files.model[0]!;
        const { logits, vocab } = llamaLogits(file, ids);
        const a = agreement(logits, await ourLogits(file, ids), vocab);
        const theirs = llamaPerplexity(file, WIKI, 256, 40);
        const ours = await evaluatePerplexity({ model: file, data: WIKI, seqLen: 256, maxWindows: 40, device: 'cpu', workers: 1 });
        console.log(`${name} AGQ ${type}: mean |Δ| ${a.mean.toExponential(2)}, top-1 ${(a.top1 * 100).toFixed(1)}%; ppl llama.cpp ${theirs.ppl.toFixed(3)} ours ${ours.ppl.toFixed(3)}`);
        expect(a.mean).toBeLessThan(0.05);
        expect(a.top1).toBeGreaterThanOrEqual(0.9);
        expect(Math.abs(theirs.ppl / ours.ppl - 1)).toBeLessThan(0.005);
      });
    }
  });
});
