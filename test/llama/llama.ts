/** The real llama.cpp of tools/llama-cpp, run in a child process per request (test/llama/worker.mjs). */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '../..');
export const LLAMA_PACKAGE = path.join(ROOT, 'tools/llama-cpp/node_modules/node-llama-cpp');

/** Whether `npm run llama:install` has been run. */
export const llamaInstalled = fs.existsSync(path.join(LLAMA_PACKAGE, 'package.json'));

/** Why the suite cannot run, for the skip message; throws in CI, where a silent skip would hide a missing install. */
export function llamaMissing(): string | null {
  if (llamaInstalled) return null;
  const why = 'tools/llama-cpp is not installed (npm run llama:install)';
  if (process.env['CI']) throw new Error(`${why}: .ci/run installs it before npm run test:llama`);
  return why;
}

function run(req: Record<string, unknown>): Record<string, unknown> {
  const r = spawnSync(process.execPath, [path.join(__dirname, 'worker.mjs'), JSON.stringify(req)], { encoding: 'utf8', maxBuffer: 1 << 26, timeout: 600_000 });
  if (r.status !== 0) throw new Error(`llama.cpp ${String(req['cmd'])} on ${String(req['model'])} failed (exit ${r.status}, signal ${r.signal}): ${r.stderr.trim().split('\n').slice(-5).join(' | ')}`);
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]!) as Record<string, unknown>;
}

/** llama.cpp's logits [ids.length, vocab] for `ids` (no BOS added). */
export function llamaLogits(model: string, ids: ArrayLike<number>): { logits: Float32Array; vocab: number } {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'llama-')), 'logits.bin');
  const r = run({ cmd: 'logits', model, ids: Array.from(ids), out });
  const logits = new Float32Array(fs.readFileSync(out).buffer.slice(0));
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
  return { logits, vocab: r['vocab'] as number };
}

/** llama.cpp's perplexity of `text` with the README's protocol (whole file tokenized once, non-overlapping windows). */
export function llamaPerplexity(model: string, text: string, seqLen: number, windows: number): { ppl: number; tokens: number } {
  const r = run({ cmd: 'ppl', model, text, seqLen, windows });
  return { ppl: r['ppl'] as number, tokens: r['tokens'] as number };
}

/** llama.cpp's token ids of `text` (no BOS, special tokens not parsed), from the GGUF file's tokenizer alone. */
export function llamaTokenize(model: string, text: string): Int32Array {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'llama-'));
  try {
    const file = path.join(dir, 'text.txt');
    fs.writeFileSync(file, text);
    run({ cmd: 'tokenize', model, text: file, out: path.join(dir, 'ids.bin'), vocabOnly: true });
    const b = fs.readFileSync(path.join(dir, 'ids.bin'));
    return new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Mean and max |a − b|, and the share of rows (of `vocab`) whose argmax agrees. */
export function agreement(a: Float32Array, b: Float32Array, vocab: number): { mean: number; max: number; top1: number } {
  let sum = 0;
  let max = 0;
  let same = 0;
  const rows = a.length / vocab;
  for (let r = 0; r < rows; r++) {
    let ia = 0;
    let ib = 0;
    for (let v = 0; v < vocab; v++) {
      const i = r * vocab + v;
      const d = Math.abs(a[i]! - b[i]!);
      sum += d;
      if (d > max) max = d;
      if (a[i]! > a[r * vocab + ia]!) ia = v;
      if (b[i]! > b[r * vocab + ib]!) ib = v;
    }
    if (ia === ib) same++;
  }
  return { mean: sum / a.length, max, top1: same / rows };
}
