/**
 * Options and inputs checked before the long work (hardening issue items 11–13): each case fails in one line with
 * exit 2 before anything is written, and --json puts the error on stdout too.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli/main.js';
import { activationsInFile } from '../../src/calibration/memory.js';
import { openModel } from '../../src/engine/model.js';
import { versions } from '../../src/version.js';
import { C4, FIXTURES, WIKI } from '../paths.js';

const MIXTRAL = path.join(FIXTURES, 'tiny-mixtral');
const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-options-')));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function runCli(...args: string[]): Promise<{ code: number; stderr: string; stdout: string; ms: number }> {
  let stderr = '';
  let stdout = '';
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((s) => ((stderr += String(s)), true));
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((stdout += String(s)), true));
  const t0 = performance.now();
  try {
    const code = await main(['node', 'moe-quant', ...args]);
    return { code, stderr, stdout, ms: performance.now() - t0 };
  } finally {
    e.mockRestore();
    o.mockRestore();
  }
}

function oneLineError(r: { code: number; stderr: string }, pattern: RegExp): void {
  expect(r.code, r.stderr).toBe(2);
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('moe-quant: error:'));
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
}

const out = () => path.join(tmp, `out-${Math.random().toString(36).slice(2)}`);
const Q = (o: string, ...rest: string[]) => ['quantize', '--model', MIXTRAL, '--device', 'cpu', '--out', o, ...rest];

describe('quantize checks every input before quantizing', () => {
  it('a missing --eval-data, an --eval-seq-len longer than the text: fail at once, no output', async () => {
    const o = out();
    const r = await runCli(...Q(o, '--eval-data', path.join(tmp, 'nope.txt')));
    oneLineError(r, /data file .*nope\.txt does not exist/);
    expect(r.ms).toBeLessThan(5_000); // not after a quantization (~5 s here)
    const short = path.join(tmp, 'short.txt');
    fs.writeFileSync(short, 'Only a few words of held-out text.');
    oneLineError(await runCli(...Q(o, '--eval-data', short, '--eval-seq-len', '256')), /fewer than one window of --eval-seq-len 256/);
    expect(fs.existsSync(o)).toBe(false);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-') || f.includes('.lock'))).toEqual([]);
  });

  it('--calib together with --data is an error, not a silently ignored --data', async () => {
    oneLineError(await runCli(...Q(out(), '--calib', tmp, '--data', C4)), /give either --calib or --data, not both/);
  });

  it('a binary or non-UTF-8 --data file', async () => {
    const bin = path.join(tmp, 'weights.bin');
    fs.writeFileSync(bin, Buffer.from([1, 2, 0, 0, 7, 255, 3]));
    oneLineError(await runCli('calibrate', '--model', MIXTRAL, '--device', 'cpu', '--data', bin, '--out', out()), /weights\.bin is binary/);
    const latin1 = path.join(tmp, 'latin1.txt');
    fs.writeFileSync(latin1, Buffer.from('caf\xe9 au lait, na\xefve', 'latin1'));
    oneLineError(await runCli('eval', '--model', MIXTRAL, '--device', 'cpu', '--data', latin1), /latin1\.txt is not UTF-8 text/);
  });

  it("--skip '.*' leaves nothing to quantize", async () => {
    const o = out();
    oneLineError(await runCli(...Q(o, '--skip', '.*', '--no-eval', '--data', C4)), /--skip "\.\*" leaves none of the model's \d+ linears to quantize/);
    expect(fs.existsSync(o)).toBe(false);
  });

  it('a linear whose K GPTQ cannot pack (3 bits: 32 values per 3 words) is named before the work', async () => {
    // A group size that does not divide K is fine (a shorter last group); K must still fill whole packed words.
    const o = out();
    const olmoe = path.resolve(__dirname, '../fixtures/generated/olmoe'); // expert width 8: down_proj K = 8
    oneLineError(
      await runCli('quantize', '--model', olmoe, '--out', o, '--device', 'cpu', '--bits', '3', '--no-eval', '--data', C4),
      /^moe-quant: error: model\.layers\.0\.mlp\.experts\.0\.down_proj: input size K=8 is not a multiple of 32, which 3-bit GPTQ qweight packs per 3 int32 words; --skip it, or use --format dequantized$/,
    );
    expect(fs.existsSync(o)).toBe(false);
  });

  it('--model naming a file says a directory is expected', async () => {
    oneLineError(await runCli('inspect', '--model', path.join(MIXTRAL, 'model.safetensors')), /is a file; give the checkpoint directory that holds config\.json/);
    oneLineError(await runCli('eval', '--model', path.join(MIXTRAL, 'model.safetensors'), '--device', 'cpu'), /is a file; give the checkpoint directory/);
  });

  it('--samples beyond the machine: an estimate and an error instead of growing memory', async () => {
    const o = out();
    const r = await runCli('calibrate', '--model', MIXTRAL, '--device', 'cpu', '--samples', '100000000', '--seq-len', '512', '--out', o);
    oneLineError(r, /--samples 100000000 × --seq-len 512 = 51,200,000,000 tokens need about \d+ GB of activations \(hidden 128, float32\), more than a quarter of this machine's .* memory, and \d+ GB in a scratch file, more than the .* free on disk at /);
    expect(fs.existsSync(o)).toBe(false);
    const spec = openModel(MIXTRAL).spec;
    const notes: string[] = [];
    const note = (s: string) => notes.push(s);
    expect(activationsInFile(spec, 128, 512, os.tmpdir(), note, 1e9, 1e12)).toBe(false);
    expect(notes).toEqual([]);
    // 512 × 512 tokens: 0.40 GB of activations, over a quarter of 1 GB: to a 0.13 GB file.
    expect(activationsInFile(spec, 512, 512, os.tmpdir(), note, 1e9, 1e12)).toBe(true);
    expect(notes[0]).toMatch(/need about 0\.40 GB of activations .* of this machine's 1\.00 GB of memory: they wait in a 0\.13 GB scratch file/);
    expect(() => activationsInFile(spec, 512, 512, os.tmpdir(), note, 1e9, 1e8)).toThrow(/more than the 0\.10 GB free on disk/);
    // A container's cgroup limit counts as the machine's memory.
    const spy = vi.spyOn(process, 'constrainedMemory').mockReturnValue(1e9);
    try {
      expect(activationsInFile(spec, 512, 512, os.tmpdir(), note)).toBe(true);
    } finally {
      spy.mockRestore();
    }
  });
});

describe('calibrate --sampler ebss / balanced: bad options', () => {
  it('width 0, τ ≤ 0, seq-len beyond the model, --data or --pool with the wrong sampler: one line, exit 2, nothing written', async () => {
    const o = out();
    const E = ['calibrate', '--model', MIXTRAL, '--device', 'cpu', '--sampler', 'ebss', '--out', o];
    oneLineError(await runCli(...E, '--ebss-width', '0'), /--ebss-width must be a positive integer/);
    oneLineError(await runCli(...E, '--ebss-tau', '0'), /--ebss-tau must be a positive number/);
    oneLineError(await runCli(...E, '--ebss-tau', '-1'), /--ebss-tau/);
    oneLineError(await runCli(...E, '--seq-len', '4096', '--samples', '1'), /--seq-len 4096 is beyond the model's max_position_embeddings \(2048\)/);
    oneLineError(await runCli(...E, '--data', C4), /--data is for --sampler text/);
    oneLineError(await runCli(...E, '--pool', C4), /--pool is for --sampler balanced/);
    oneLineError(await runCli('calibrate', '--model', MIXTRAL, '--device', 'cpu', '--sampler', 'balanced', '--out', o), /--sampler balanced needs a pool/);
    expect(fs.existsSync(o)).toBe(false);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-') || f.includes('.lock') || f.includes('.partial'))).toEqual([]);
  });
});

describe('--json and --version', () => {
  it('errors go to stdout as {"error": {"code", "message"}} with --json, as well as the one line on stderr', async () => {
    const r = await runCli('eval', '--model', MIXTRAL, '--data', path.join(tmp, 'missing.txt'), '--json');
    oneLineError(r, /missing\.txt does not exist/);
    expect(JSON.parse(r.stdout)).toEqual({ error: { code: 'BAD_DATA', message: expect.stringMatching(/missing\.txt does not exist/) } });
    const bad = await runCli('eval', '--seq-len', 'x', '--json');
    expect(bad.code).toBe(2);
    expect(JSON.parse(bad.stdout)).toEqual({ error: { code: 'BAD_OPTION', message: expect.stringMatching(/--seq-len/) } });
    const plain = await runCli('eval', '--model', MIXTRAL, '--data', path.join(tmp, 'missing.txt'));
    expect(plain.stdout).toBe('');
  });

  it('--version prints the package version', async () => {
    const r = await runCli('--version');
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(versions()['moe-quant']);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });
});

describe('what ran is what is reported', () => {
  it('quantize --eval-windows beyond the text evaluates and reports the windows there are', async () => {
    const calib = path.join(tmp, 'calib');
    expect((await runCli('calibrate', '--model', MIXTRAL, '--device', 'cpu', '--samples', '8', '--seq-len', '64', '--out', calib)).code).toBe(0);
    const text = fs.readFileSync(WIKI, 'utf8').slice(0, 3000);
    const evalFile = path.join(tmp, 'eval.txt');
    fs.writeFileSync(evalFile, text);
    const r = await runCli(...Q(out(), '--calib', calib, '--method', 'rtn', '--eval-data', evalFile, '--eval-seq-len', '64', '--eval-windows', '100000', '--json'));
    expect(r.code, r.stderr).toBe(0);
    const json = JSON.parse(r.stdout);
    expect(json.eval.windows).toBeGreaterThan(0);
    expect(json.eval.windows).toBeLessThan(100);
    // One evaluation compared both models on those windows: perplexities, KL divergence and top-1 agreement.
    expect(json.eval.predictions).toBe(json.eval.windows * 63);
    expect(json.eval.reference.model).toBe(MIXTRAL);
    expect(json.ppl_fp).toBe(json.eval.reference.ppl);
    expect(json.kl_mean).toBe(json.eval.reference.kl.mean);
    expect(json.kl_mean).toBeGreaterThan(0);
    expect(json.kl_mean).toBeLessThan(0.1);
    expect(json.top1_agreement).toBe(json.eval.reference.top1_agreement);
    expect(json.top1_agreement).toBeGreaterThan(0.8);
    expect(json.ppl_quantized / json.ppl_fp).toBeCloseTo(json.eval.reference.ppl_ratio, 10);
    expect(r.stderr).toContain(`--eval-windows 100000: eval.txt has ${json.eval.windows} windows of 64 tokens; evaluating all ${json.eval.windows}`);
  });
});
