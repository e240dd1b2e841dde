/**
 * One decoder layer of Qwen3-30B-A3B's real shape (hidden 2048, 128 experts top-8 of width 768; 1.28 GB bf16, random
 * weights, the file layout transformers writes — src/bench/synth.ts), through the built CLI as a user runs it:
 * inspect, eval (float32 is 2.5 GB, over the 2 GiB resident budget: experts stream expert-major), calibrate, and
 * quantize with AGQ on the attention and 8 of the 128 experts (the rest left out with --skip to keep CI short).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateCheckpoint, QWEN3_30B_A3B_LAYER } from '../../src/bench/synth.js';
import { C4, FIXTURES, WIKI } from '../paths.js';

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.join(ROOT, 'bin/moe-quant');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-real-'));
const model = path.join(tmp, 'qwen3-30b-a3b-1layer');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: tmp, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => {
  generateCheckpoint(model, QWEN3_30B_A3B_LAYER, 'hf');
  // The trained fixtures' 4,096-token tokenizer, so the commands take text.
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(FIXTURES, 'tiny-mixtral', f), path.join(model, f));
});

describe('one Qwen3-30B-A3B layer (real shape) end to end', () => {
  let fpNll = NaN;

  it('inspect reads the shape', () => {
    const r = run('inspect', '--model', model, '--json');
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(JSON.stringify(j)).toContain('qwen3_moe');
    const text = run('inspect', '--model', model);
    expect(text.stdout).toMatch(/experts\s+128 routed, top-8, softmax, top-k, renormalised; expert width 768/);
    expect(text.stdout).toMatch(/GQA 32 heads \/ 4 kv heads × 128/);
  });

  it('eval streams the layer (over the resident budget: one engine, experts expert-major) and gives a finite perplexity', () => {
    const r = run('eval', '--model', model, '--data', WIKI, '--seq-len', '256', '--max-windows', '8', '--device', 'cpu', '--json');
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as { ppl: number; nll: number; windows: number; workers: number };
    expect(j.windows).toBe(8);
    expect(j.workers).toBe(1); // over the resident budget: one streaming engine
    expect(Number.isFinite(j.ppl) && j.ppl > 1).toBe(true);
    fpNll = j.nll;
  });

  it('calibrate and quantize (AGQ 4-bit on attention and experts 0–7) write a model that evaluates like the original', () => {
    const calib = path.join(tmp, 'calib');
    const c = run('calibrate', '--model', model, '--data', C4, '--samples', '16', '--seq-len', '256', '--out', calib, '--device', 'cpu', '--json');
    expect(c.code, c.stderr).toBe(0);
    const report = JSON.parse(fs.readFileSync(path.join(calib, 'balance-report.json'), 'utf8')) as { layers: Array<{ experts: number; top_k: number; used: { tokens: number[] } }> };
    expect(report.layers).toHaveLength(1);
    expect(report.layers[0]!.experts).toBe(128);
    expect(report.layers[0]!.used.tokens.reduce((a, b) => a + b, 0)).toBe(16 * 256 * 8);

    const out = path.join(tmp, 'q');
    const skip = 'mlp\\.experts\\.([1-9][0-9]+|[89])\\.';
    const q = run('quantize', '--model', model, '--calib', calib, '--method', 'agq', '--skip', skip, '--out', out, '--device', 'cpu', '--no-eval');
    expect(q.code, q.stderr).toBe(0);
    expect(q.stderr).toMatch(/^memory: budget .* → .*; estimated peak /m);
    // Linears of real size: solves in worker threads (up to one per core, as the memory budget allows).
    if (os.availableParallelism() > 1) expect(q.stderr).toMatch(/, \d+ solves in parallel threads;/);
    const qr = JSON.parse(fs.readFileSync(path.join(out, 'quant-report.json'), 'utf8')) as { modules: Array<{ module: string; method: string; tokens: number }> };
    const experts = qr.modules.filter((m) => /experts\.\d+\./.test(m.module));
    expect(experts).toHaveLength(8 * 3);
    expect(qr.modules.filter((m) => /self_attn/.test(m.module))).toHaveLength(4);
    expect(qr.modules.every((m) => m.method === 'agq' || m.tokens === 0)).toBe(true);

    const e = run('eval', '--model', out, '--data', WIKI, '--seq-len', '256', '--max-windows', '8', '--device', 'cpu', '--json');
    expect(e.code, e.stderr).toBe(0);
    const j = JSON.parse(e.stdout) as { nll: number; quantization: unknown };
    expect(j.quantization).toMatchObject({ quant_method: 'gptq', kernel: 'MatMulNBits' });
    expect(Math.abs(j.nll - fpNll)).toBeLessThan(0.02);
  });
});
