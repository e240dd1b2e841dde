/** `moe-quant eval --reference` as a user runs it: the JSON fields, the text report, and its one-line errors. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli/main.js';
import { FIXTURES, WIKI } from '../paths.js';

const MIXTRAL = path.join(FIXTURES, 'tiny-mixtral');
const DEEPSEEK = path.join(FIXTURES, 'tiny-deepseek-v3');
const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-eval-ref-')));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const DATA = path.join(tmp, 'wiki-head.txt');
fs.writeFileSync(DATA, fs.readFileSync(WIKI, 'utf8').slice(0, 40_000));

async function runCli(...args: string[]): Promise<{ code: number; stderr: string; stdout: string }> {
  let stderr = '';
  let stdout = '';
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((s) => ((stderr += String(s)), true));
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((stdout += String(s)), true));
  try {
    return { code: await main(['node', 'moe-quant', ...args]), stderr, stdout };
  } finally {
    e.mockRestore();
    o.mockRestore();
  }
}

const EVAL = (...rest: string[]) => ['eval', '--model', MIXTRAL, '--data', DATA, '--seq-len', '64', '--max-windows', '8', '--device', 'cpu', ...rest];
const SPREAD = ['mean', 'mean_stderr', 'max', 'p99_9', 'p99', 'p95', 'p90', 'median', 'p10', 'p5', 'p1', 'p0_1', 'min'];

describe('moe-quant eval --reference', () => {
  it('--json: the evaluated model\'s eval fields, and the reference with the comparison', async () => {
    const r = await runCli(...EVAL('--reference', DEEPSEEK, '--json'));
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ model: MIXTRAL, windows: 8, seq_len: 64, predictions: 8 * 63, workers: 1 });
    expect(Object.keys(j.reference).sort()).toEqual(
      ['model', 'ppl', 'nll', 'quantization', 'kl', 'top1_agreement', 'top1_agreement_stderr', 'mean_abs_delta_nll', 'ln_ppl_ratio', 'ln_ppl_ratio_stderr', 'ppl_ratio', 'nll_correlation', 'delta_p'].sort(),
    );
    expect(j.reference.model).toBe(DEEPSEEK);
    expect(Object.keys(j.reference.kl).sort()).toEqual([...SPREAD].sort());
    expect(Object.keys(j.reference.delta_p).sort()).toEqual([...SPREAD, 'p75', 'p25', 'rms'].sort());
    const k = j.reference.kl;
    expect(k.min).toBeGreaterThan(0);
    expect(k.min <= k.p1 && k.p1 <= k.median && k.median <= k.p99 && k.p99 <= k.max).toBe(true);
    expect(j.reference.top1_agreement).toBeGreaterThan(0);
    expect(j.reference.top1_agreement).toBeLessThan(1);
    expect(j.reference.ppl_ratio).toBeCloseTo(j.ppl / j.reference.ppl, 10);
    expect(j.reference.ln_ppl_ratio).toBeCloseTo(j.nll - j.reference.nll, 10);
  });

  it('prints both perplexities, the KL divergence and the top-1 agreement', async () => {
    const r = await runCli(...EVAL('--reference', DEEPSEEK));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^\s+model\s+reference\nperplexity\s+\d+\.\d{4}\s+\d+\.\d{4}\n/);
    expect(r.stdout).toMatch(/\nKL divergence\s+mean \d\.\d{6} ± \d\.\d{6}\s+median \d\.\d{6}\s+99% \d\.\d{6}\s+99\.9% \d\.\d{6}\s+max \d+\.\d{6}\n/);
    expect(r.stdout).toMatch(/\nsame top-1\s+\d+\.\d{3} ± \d\.\d{3} %\n/);
    expect(r.stdout).toContain(`reference ${DEEPSEEK}\n`);
    expect(r.stdout).toMatch(/504 predictions, 8 windows × 64; [\d.]+ s for both models/);
  });

  it('a reference that tokenizes differently, or is not a model: one line, exit 2', async () => {
    const other = path.join(tmp, 'other-tokenizer');
    fs.mkdirSync(other);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer_config.json']) fs.copyFileSync(path.join(MIXTRAL, f), path.join(other, f));
    const tok = JSON.parse(fs.readFileSync(path.join(MIXTRAL, 'tokenizer.json'), 'utf8'));
    tok.model.merges = tok.model.merges.slice(100);
    fs.writeFileSync(path.join(other, 'tokenizer.json'), JSON.stringify(tok));
    for (const [ref, pattern] of [
      [other, /^moe-quant: error: --reference \S+other-tokenizer tokenizes \S+wiki-head\.txt differently from --model \S+tiny-mixtral \(token \d+ is id \d+ for --model, \d+ for --reference\); the KL divergence needs both models to share the tokenizer$/],
      [path.join(tmp, 'nope'), /^moe-quant: error: --reference: model directory \S+nope does not exist$/],
    ] as const) {
      const r = await runCli(...EVAL('--reference', ref));
      expect(r.code, r.stderr).toBe(2);
      const lines = r.stderr.split('\n').filter((l) => l.startsWith('moe-quant: error:'));
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(pattern);
      expect(r.stdout).toBe('');
    }
  });
});
