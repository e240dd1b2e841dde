/** The built CLI, run the way the README tells a new user to: `moe-quant quantize` with no arguments, then the rest. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FIXTURES, WIKI } from '../paths.js';

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.join(ROOT, 'bin/moe-quant');
const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-cli-'));
afterAll(() => fs.rmSync(cwd, { recursive: true, force: true }));

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd, encoding: 'utf8', env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('moe-quant CLI end to end', () => {
  it('every command has --help', () => {
    for (const cmd of ['inspect', 'eval', 'calibrate', 'quantize', 'report', 'doctor']) {
      const r = run(cmd, '--help');
      expect(r.code, cmd).toBe(0);
      expect(r.stdout).toContain('Usage: moe-quant ' + cmd);
      expect(r.stdout).toContain('Example');
    }
  });

  it('`moe-quant quantize` with no arguments runs on the bundled model and prints the table', () => {
    const r = run('quantize');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/method\s+ppl fp\s+ppl 4-bit\s+KL\s+top-1\s+size fp\s+size 4-bit\s+MaxVio natural\s+MaxVio biased/);
    const row = r.stdout.split('\n')[1]!.trim().split(/\s{2,}/);
    const [fp, q, kl, top1] = [Number(row[1]), Number(row[2]), Number(row[3]), row[4]!];
    expect(row[0]).toBe('AGQ');
    expect(q / fp).toBeLessThan(1.01);
    // 4 bits move the next-token distributions a little (mean KL ~3e-3 nats) and rarely the most likely token.
    expect(kl).toBeGreaterThan(1e-4);
    expect(kl).toBeLessThan(0.05);
    expect(top1).toMatch(/^\d+\.\d\d%$/);
    expect(parseFloat(top1)).toBeGreaterThan(85);
    expect(r.stdout).toContain('KL: mean KL(P_fp ‖ P_4-bit) per prediction, nats (99th percentile');
    const out = path.join(cwd, 'moe-quant-out');
    for (const f of ['model.safetensors', 'config.json', 'quant-report.json', 'quant-report.md', 'balance-report.json', 'balance-report.md', 'balance-report.html', 'tokenizer.json'])
      expect(fs.existsSync(path.join(out, f)), f).toBe(true);
    // The quantized model is an ordinary input for the other commands.
    const inspect = run('inspect', '--model', out, '--json');
    expect(inspect.code, inspect.stderr).toBe(0);
    expect(JSON.parse(inspect.stdout).dtypes).toHaveProperty('GPTQ 4-bit');
    const ev = run('eval', '--model', out, '--seq-len', '256', '--max-windows', '4', '--json');
    expect(ev.code, ev.stderr).toBe(0);
    expect(JSON.parse(ev.stdout).quantization).toMatchObject({ quant_method: 'gptq', kernel: 'MatMulNBits' });
    // Parallel workers open the 4-bit checkpoint the same way (MatMulNBits) and agree with the single engine.
    const ev2 = run('eval', '--model', out, '--seq-len', '256', '--max-windows', '4', '--workers', '2', '--json');
    expect(ev2.code, ev2.stderr).toBe(0);
    const [one, two] = [JSON.parse(ev.stdout), JSON.parse(ev2.stdout)];
    expect(two.workers).toBe(2);
    expect(Math.abs(two.nll - one.nll)).toBeLessThan(1e-6);
    // The quantized model against the bundled fp model it came from, as quantize's table compares them.
    const vsFp = run('eval', '--model', out, '--reference', path.join(ROOT, 'models/tiny-deepseek-v3'), '--seq-len', '256', '--max-windows', '40', '--json');
    expect(vsFp.code, vsFp.stderr).toBe(0);
    const k = JSON.parse(vsFp.stdout);
    expect(k.reference.ppl).toBeCloseTo(fp, 3);
    expect(k.ppl).toBeCloseTo(q, 3);
    expect(k.reference.kl.mean.toExponential(2)).toBe(kl.toExponential(2));
    const rep = run('report', out);
    expect(rep.code, rep.stderr).toBe(0);
    expect(rep.stdout).toContain('MaxVio');
    // Running the main command again replaces its own earlier output.
    expect(run('quantize', '--no-eval').code).toBe(0);
  });

  it('doctor names the provider and checks one window against the CPU provider', () => {
    const r = run('doctor', '--json');
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ requested: 'auto', seq_len: 256, ok: true });
    expect(j.note).toMatch(/^device: /);
    expect(j.ppl.cpu).toBeGreaterThan(1);
    // On a machine without a GPU provider (CI) auto is the CPU: nothing to compare.
    if (j.device === 'cpu') expect(j.rel_diff).toBeNull();
    else expect(j.rel_diff).toBeLessThanOrEqual(1e-4);
    const text = run('doctor', '--device', 'cpu');
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^provider\s+cpu\n/);
    expect(text.stdout).toMatch(/result\s+no GPU provider in use; the CPU provider works/);
    const bad = run('doctor', '--device', 'tpu');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--device');
  });

  it('eval splits the windows between parallel workers and gets the reference perplexity', () => {
    const model = path.join(FIXTURES, 'tiny-qwen3-moe');
    const data = WIKI;
    const want = JSON.parse(fs.readFileSync(path.join(model, 'reference.json'), 'utf8'))['ppl_seq256_first40:wiki.test.raw'] as number;
    for (const workers of ['1', '2']) {
      const r = run('eval', '--model', model, '--data', data, '--seq-len', '256', '--max-windows', '40', '--workers', workers, '--json');
      expect(r.code, r.stderr).toBe(0);
      const j = JSON.parse(r.stdout);
      expect(j.workers).toBe(Number(workers));
      expect(Math.abs(j.ppl - want) / want).toBeLessThan(1e-3);
      if (workers === '2') expect(r.stderr).toContain('2 parallel workers');
    }
    const bad = run('eval', '--model', model, '--data', data, '--seq-len', '256', '--max-windows', '4', '--workers', '0');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--workers');
  });

  it('calibrate --json prints the summary and paths', () => {
    const r = run('calibrate', '--samples', '16', '--seq-len', '128', '--json');
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.summary.used).toHaveProperty('maxvio');
    expect(fs.existsSync(j.files['balance-report.html'])).toBe(true);
  });
});
