/**
 * Bad input through the real CLI entry point: each case must print exactly one error line, exit with code 2 and
 * never show a stack trace.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { SafetensorsFile, writeSafetensors } from '../../src/checkpoint/safetensors.js';
import { main } from '../../src/cli/main.js';
import { FIXTURES, WIKI } from '../paths.js';

const MIXTRAL = path.join(FIXTURES, 'tiny-mixtral');
const QWEN = path.join(FIXTURES, 'tiny-qwen3-moe');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-bad-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function copyModel(src: string, name: string): string {
  const dir = path.join(tmp, name);
  fs.cpSync(src, dir, { recursive: true });
  for (const f of fs.readdirSync(dir)) fs.chmodSync(path.join(dir, f), 0o644);
  return dir;
}

/** `s` as a literal inside a RegExp. */
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Rewrites `dst`/model.safetensors from `src`'s with `edit[name]` applied to those tensors' raw 16-bit words. */
function writeModified(src: string, dst: string, edit: Record<string, (u16: Uint16Array) => unknown>): void {
  const st = SafetensorsFile.open(path.join(src, 'model.safetensors'));
  for (const name of Object.keys(edit)) expect(st.tensors.get(name)?.dtype, name).toBe('BF16');
  writeSafetensors(
    path.join(dst, 'model.safetensors'),
    [...st.tensors.values()].map((t) => ({
      name: t.name,
      dtype: t.dtype,
      shape: t.shape,
      data: () => {
        const b = st.readBytes(t.name);
        edit[t.name]?.(new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2));
        return b;
      },
    })),
  );
  st.close();
}

async function runCli(...args: string[]): Promise<{ code: number; stderr: string; stdout: string }> {
  let stderr = '';
  let stdout = '';
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((s) => ((stderr += String(s)), true));
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((stdout += String(s)), true));
  try {
    const code = await main(['node', 'moe-quant', ...args]);
    return { code, stderr, stdout };
  } finally {
    e.mockRestore();
    o.mockRestore();
  }
}

function expectOneLineError(r: { code: number; stderr: string }, pattern: RegExp): void {
  if (process.env["SHOW_ERRORS"]) console.log(r.stderr.trim());
  expect(r.code).toBe(2);
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('moe-quant: error:'));
  expect(lines.length, r.stderr).toBe(1);
  expect(lines[0]).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
}

describe('bad input → one line, exit code 2', () => {
  it('quantize --format gguf with a tokenizer llama.cpp would split differently (Llama-3\'s pattern): refused before any work', async () => {
    const dir = path.join(tmp, 'llama3-tokenizer');
    fs.mkdirSync(dir);
    for (const f of fs.readdirSync(QWEN)) if (f !== 'tokenizer.json') fs.symlinkSync(path.join(QWEN, f), path.join(dir, f));
    const tj = JSON.parse(fs.readFileSync(path.join(QWEN, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
    const llama3 = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
    tj['pre_tokenizer'] = { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: llama3 }, behavior: 'Isolated', invert: false }, { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] };
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tj));
    const out = path.join(tmp, 'llama3-out');
    expectOneLineError(
      await runCli('quantize', '--model', dir, '--data', WIKI, '--format', 'gguf', '--no-eval', '--device', 'cpu', '--out', out),
      new RegExp(`^moe-quant: error: --format gguf: ${escape(path.join(dir, 'tokenizer.json'))}: pre-tokenizer Sequence\\[Split\\("\\(\\?i:'s\\|.*", Isolated\\), ByteLevel\\(add_prefix_space false, use_regex false\\)\\] cannot be written as a llama\\.cpp tokenizer \\(supported: `),
    );
    expect(fs.existsSync(out)).toBe(false);
  });

  it('truncated safetensors file', async () => {
    const dir = copyModel(MIXTRAL, 'truncated');
    const f = path.join(dir, 'model.safetensors');
    fs.truncateSync(f, fs.statSync(f).size - 1000);
    expectOneLineError(await runCli('inspect', '--model', dir), /model\.safetensors/);
  });

  it('header length past end of file', async () => {
    const dir = copyModel(MIXTRAL, 'header-len');
    const f = path.join(dir, 'model.safetensors');
    const fd = fs.openSync(f, 'r+');
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(10n ** 9n);
    fs.writeSync(fd, b, 0, 8, 0);
    fs.closeSync(fd);
    expectOneLineError(await runCli('inspect', '--model', dir), /header/i);
  });

  it('tensor shape contradicting config.json', async () => {
    const dir = copyModel(MIXTRAL, 'shape');
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    cfg.intermediate_size = 512;
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
    expectOneLineError(await runCli('inspect', '--model', dir), /w1\.weight has shape \[256,128\] but config\.json implies \[512,128\]/);
  });

  it('missing shard', async () => {
    const dir = copyModel(QWEN, 'shard');
    fs.rmSync(path.join(dir, 'model-00002-of-00002.safetensors'));
    expectOneLineError(await runCli('eval', '--model', dir, '--data', WIKI), /model-00002-of-00002\.safetensors/);
  });

  it('missing tensor', async () => {
    const dir = copyModel(MIXTRAL, 'missing-tensor');
    const src = SafetensorsFile.open(path.join(MIXTRAL, 'model.safetensors'));
    const keep = [...src.tensors.values()].filter((t) => t.name !== 'model.layers.2.block_sparse_moe.experts.5.w2.weight');
    writeSafetensors(
      path.join(dir, 'model.safetensors'),
      keep.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: () => src.readBytes(t.name) })),
    );
    src.close();
    expectOneLineError(await runCli('inspect', '--model', dir), /experts\.5\.w2\.weight is missing/);
  });

  it('unsupported architecture lists the supported ones', async () => {
    const dir = copyModel(MIXTRAL, 'arch');
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    cfg.model_type = 'llama';
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
    expectOneLineError(await runCli('inspect', '--model', dir), /"llama" is not supported \(supported: mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek, deepseek_v2, deepseek_v3\)/);
  });

  it('routing config transformers cannot route, and two spellings of the expert count that disagree', async () => {
    const v3 = copyModel(path.join(FIXTURES, 'tiny-deepseek-v3'), 'n-group');
    const cfg = JSON.parse(fs.readFileSync(path.join(v3, 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(v3, 'config.json'), JSON.stringify({ ...cfg, n_group: 3 }));
    expectOneLineError(
      await runCli('inspect', '--model', v3),
      /n-group\/config\.json: "n_group" must divide "n_routed_experts" = 16 into equal groups \(got 3\)$/,
    );
    const qwen = copyModel(QWEN, 'spellings');
    const q = JSON.parse(fs.readFileSync(path.join(qwen, 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(qwen, 'config.json'), JSON.stringify({ ...q, num_local_experts: q.num_experts * 2 }));
    expectOneLineError(
      await runCli('inspect', '--model', qwen),
      /spellings\/config\.json: "num_experts" \(\d+\) and "num_local_experts" \(\d+\) are two spellings of one setting and disagree$/,
    );
  });

  it('empty data file', async () => {
    const f = path.join(tmp, 'empty.txt');
    fs.writeFileSync(f, '  \n');
    expectOneLineError(await runCli('eval', '--model', MIXTRAL, '--data', f), /empty/);
  });

  it('missing data file', async () => {
    expectOneLineError(await runCli('eval', '--model', MIXTRAL, '--data', path.join(tmp, 'nope.txt')), /does not exist/);
  });

  it('seq-len larger than the data', async () => {
    const f = path.join(tmp, 'short.txt');
    fs.writeFileSync(f, 'A short text.');
    expectOneLineError(await runCli('eval', '--model', MIXTRAL, '--data', f, '--seq-len', '256'), /fewer than one window/);
  });

  it('NaN/Inf in logits from finite but overflowing weights', async () => {
    // Every weight is finite (so the reader lets it through), but a final norm of bf16's largest value overflows
    // float32 in the head: the logits check is the last line of defence.
    const dir = copyModel(MIXTRAL, 'nan');
    writeModified(MIXTRAL, dir, { 'model.norm.weight': (u16) => u16.fill(0x7f7f) });
    expectOneLineError(await runCli('eval', '--model', dir, '--data', WIKI, '--seq-len', '64', '--max-windows', '1', '--device', 'cpu'), /NaN\/Inf in the model's logits/);
  });

  it('NaN/Inf weights: eval, calibrate and quantize name the tensor and write nothing; inspect reads no data', async () => {
    const dir = copyModel(MIXTRAL, 'nan-weights');
    const expert = 'model.layers.1.block_sparse_moe.experts.3.w2.weight'; // BF16 [128, 256]
    writeModified(MIXTRAL, dir, {
      'lm_head.weight': (u16) => (u16[5 * 128 + 7] = 0x7fc0), // bf16 NaN at [5, 7]
      [expert]: (u16) => {
        u16[2 * 256 + 9] = 0x7f80; // +Inf at [2, 9]
        u16[100 * 256] = 0xff80; // −Inf at [100, 0]
      },
    });
    const file = escape(path.join(dir, 'model.safetensors'));
    const expertErr = new RegExp(`tensor ${escape(expert)} \\(BF16 \\[128, 256\\]\\) in ${file} holds 2 ±Inf, the first at index \\[2, 9\\]`);
    const headErr = new RegExp(`tensor lm_head\\.weight \\(BF16 \\[4096, 128\\]\\) in ${file} holds 1 NaN, the first at index \\[5, 7\\]`);
    expect((await runCli('inspect', '--model', dir)).code).toBe(0);
    const evalArgs = ['eval', '--model', dir, '--data', WIKI, '--seq-len', '64', '--max-windows', '2', '--device', 'cpu'];
    expectOneLineError(await runCli(...evalArgs), expertErr);
    expectOneLineError(await runCli(...evalArgs, '--workers', '2'), expertErr); // from a worker thread, code kept
    const text = path.join(tmp, 'calib-text.txt'); // small, so tokenizing costs nothing
    fs.writeFileSync(text, fs.readFileSync(WIKI, 'utf8').slice(0, 20000));
    const calOut = path.join(tmp, 'nan-calib');
    expectOneLineError(await runCli('calibrate', '--model', dir, '--data', text, '--samples', '4', '--seq-len', '64', '--device', 'cpu', '--out', calOut), expertErr);
    // quantize reads the tensors it only copies (lm_head) before calibrating, so it fails at once on the head
    const qOut = path.join(tmp, 'nan-quant');
    expectOneLineError(await runCli('quantize', '--model', dir, '--data', text, '--no-eval', '--device', 'cpu', '--out', qOut), headErr);
    // with a calibration made on the clean model (same fingerprint: same config, names, dtypes and shapes)
    const clean = path.join(tmp, 'clean-calib');
    expect((await runCli('calibrate', '--model', MIXTRAL, '--data', text, '--samples', '4', '--seq-len', '64', '--device', 'cpu', '--out', clean)).code).toBe(0);
    expectOneLineError(await runCli('quantize', '--model', dir, '--calib', clean, '--no-eval', '--device', 'cpu', '--out', qOut), headErr);
    // only the expert damaged: quantize fails in layer 1 naming it (not with an anonymous "weight" error)
    const dir2 = copyModel(MIXTRAL, 'inf-expert');
    writeModified(MIXTRAL, dir2, { [expert]: (u16) => (u16[2 * 256 + 9] = 0x7f80) });
    expectOneLineError(
      await runCli('quantize', '--model', dir2, '--calib', clean, '--method', 'rtn', '--no-eval', '--device', 'cpu', '--out', qOut),
      new RegExp(`tensor ${escape(expert)} .* holds 1 ±Inf`),
    );
    for (const out of [calOut, qOut]) expect(fs.existsSync(out), out).toBe(false);
    expect(fs.readdirSync(tmp).filter((f) => f.startsWith('nan-') && f !== 'nan-weights')).toEqual([]);
  });

  it('bad option values', async () => {
    expect((await runCli('eval', '--seq-len', '0')).code).toBe(2);
    expect((await runCli('eval', '--device', 'tpu')).code).toBe(2);
  });

  it('calibrate and quantize: unknown option values, --samples 0, --bits 5, existing foreign --out', async () => {
    expect((await runCli('calibrate', '--routing-bias', 'sometimes')).code).toBe(2);
    expect((await runCli('calibrate', '--bias-update', 'cubic')).code).toBe(2);
    expect((await runCli('calibrate', '--samples', '0')).code).toBe(2);
    expect((await runCli('quantize', '--method', 'awq')).code).toBe(2);
    expect((await runCli('quantize', '--max-memory', 'lots')).code).toBe(2);
    const tight = path.join(tmp, 'q-tight');
    expectOneLineError(await runCli('quantize', '--model', MIXTRAL, '--max-memory', '1M', '--out', tight), /--max-memory 1 MiB is too small: .* per expert's Hessian; give at least/);
    expect(fs.existsSync(tight)).toBe(false);
    expectOneLineError(await runCli('quantize', '--model', MIXTRAL, '--bits', '5', '--out', path.join(tmp, 'q5')), /--bits 5 is not supported/);
    const foreign = path.join(tmp, 'foreign');
    fs.mkdirSync(foreign);
    fs.writeFileSync(path.join(foreign, 'keep.txt'), 'x');
    expectOneLineError(await runCli('calibrate', '--model', MIXTRAL, '--out', foreign), /was not written by moe-quant.*--force/);
    expect(fs.readFileSync(path.join(foreign, 'keep.txt'), 'utf8')).toBe('x');
  });

  it('--debug shows the stack', async () => {
    const r = await runCli('--debug', 'inspect', '--model', path.join(tmp, 'does-not-exist'));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/\n\s+at /);
  });
});
