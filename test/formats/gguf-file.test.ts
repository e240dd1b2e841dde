/** The GGUF container, the per-family table read both ways (write, then eval the file), refusals, determinism. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeByteTokenizer } from '../../src/bench/synth.js';
import { loadTokenizer } from '../../src/checkpoint/tokenizer.js';
import { createEngine } from '../../src/engine/engine.js';
import { inspectModel } from '../../src/engine/inspect.js';
import { MoeQuantError } from '../../src/errors.js';
import { convertToGguf } from '../../src/formats/gguf/convert.js';
import { GgufFile, str, u32, writeGguf } from '../../src/formats/gguf/file.js';
import { quantizeModel } from '../../src/pipeline/quantize.js';
import { maxAbsDiff, readReference } from '../engine/helpers.js';
import { C4, FIXTURES, WIKI } from '../paths.js';

const GENERATED = path.resolve(__dirname, '../fixtures/generated');
let tmp: string;
beforeAll(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-gguf-'))));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function withTokenizer(src: string): string {
  if (fs.existsSync(path.join(src, 'tokenizer.json'))) return src;
  const dir = fs.mkdtempSync(path.join(tmp, `${path.basename(src)}-`));
  for (const f of fs.readdirSync(src)) fs.symlinkSync(path.join(src, f), path.join(dir, f));
  writeByteTokenizer(dir, (JSON.parse(fs.readFileSync(path.join(src, 'config.json'), 'utf8')) as { vocab_size: number }).vocab_size);
  return dir;
}
/** Links to a checkpoint's files with config.json changed by `overrides`. */
function linkedWithConfig(src: string, overrides: Record<string, unknown>): string {
  const dir = fs.mkdtempSync(path.join(tmp, `${path.basename(src)}-cfg-`));
  for (const f of fs.readdirSync(src)) if (f !== 'config.json') fs.symlinkSync(path.join(src, f), path.join(dir, f));
  const cfg = JSON.parse(fs.readFileSync(path.join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, ...overrides }));
  return dir;
}
const outDir = () => fs.mkdtempSync(path.join(tmp, 'out-'));

describe('GGUF container', () => {
  it('writes and reads back metadata, tensor infos and aligned data', () => {
    const file = path.join(tmp, 'a.gguf');
    const data = new Float32Array([1, 2, 3, 4, 5, 6]);
    writeGguf(file, [['general.architecture', str('llama')], ['x.n', u32(7)], ['x.list', { type: 'arr', of: 'str', value: ['a', 'bé'] }]], [
      { name: 't0', type: 'F32', ne: [3, 2], data: () => new Uint8Array(data.buffer) },
      { name: 't1', type: 'F32', ne: [1], data: () => new Uint8Array(new Float32Array([9]).buffer) },
    ]);
    const g = GgufFile.open(file);
    expect(g.get('x.n')).toBe(7);
    expect(g.get('x.list')).toEqual(['a', 'bé']);
    expect(g.tensors.get('t0')!.ne).toEqual([3, 2]);
    expect(g.tensors.get('t1')!.offset % 32).toBe(0);
    expect(Array.from(new Float32Array(g.readBytes('t0').buffer))).toEqual(Array.from(data));
    g.close();
  });

  it('refuses truncated and foreign files with one line naming the file', () => {
    const file = path.join(tmp, 'a.gguf');
    const cut = path.join(tmp, 'cut.gguf');
    fs.writeFileSync(cut, fs.readFileSync(file).subarray(0, 60));
    expect(() => GgufFile.open(cut)).toThrow(/cut\.gguf: truncated header|cut\.gguf: tensor .* runs past/);
    const cut2 = path.join(tmp, 'cut2.gguf');
    fs.writeFileSync(cut2, fs.readFileSync(file).subarray(0, fs.statSync(file).size - 30)); // t1's 4 bytes + 28 of padding
    expect(() => GgufFile.open(cut2)).toThrow(/tensor t1 .* runs past the end of the file/);
    const foreign = path.join(tmp, 'x.gguf');
    fs.writeFileSync(foreign, 'not a gguf file at all, really not');
    expect(() => GgufFile.open(foreign)).toThrow(/not a GGUF file \(bad magic\)/);
  });
});

describe('GGUF written and read back (eval / inspect of a .gguf)', () => {
  const fixtures = [
    path.join(FIXTURES, 'tiny-mixtral'),
    path.join(FIXTURES, 'tiny-qwen3-moe'),
    path.join(FIXTURES, 'tiny-deepseek-v3'),
    path.join(GENERATED, 'olmoe'),
    path.join(GENERATED, 'deepseek-v1'),
    path.join(GENERATED, 'deepseek-v2-lite'),
    path.join(GENERATED, 'deepseek-v3-qlora'),
  ];
  for (const dir of fixtures) {
    it(`${path.basename(dir)}: F32 GGUF evaluates to the transformers logits (1e-3) and the same expert choices`, async () => {
      const file = await convertToGguf(withTokenizer(dir), outDir(), { type: 'f32' });
      const ref = readReference(dir);
      const engine = await createEngine(file, { device: 'cpu' });
      try {
        expect(engine.model.spec.family).toBe(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).model_type);
        const out = await engine.forward.run([ref.ids], { head: 'logits' });
        expect(maxAbsDiff(out.logits!, ref.logits)).toBeLessThan(1e-3);
      } finally {
        await engine.close();
      }
    });
  }

  it('the tokenizer in the file tokenizes text exactly as tokenizer.json does; inspect names the GGUF types', async () => {
    const model = path.join(FIXTURES, 'tiny-qwen3-moe');
    const file = await convertToGguf(model, outDir(), { type: 'q4_0' });
    const text = fs.readFileSync(WIKI, 'utf8').slice(0, 200_000);
    expect(Array.from(loadTokenizer(file).encode(text))).toEqual(Array.from(loadTokenizer(model).encode(text)));
    const r = inspectModel(file);
    expect(r.family).toBe('qwen3_moe');
    expect(Object.keys(r.dtypes).sort()).toEqual(['GGUF F32', 'GGUF Q4_0', 'GGUF Q8_0']);
    expect(r.dtypes['GGUF F32']).toBe(r.parameters.by_kind.norm! + r.parameters.by_kind.router!);
  });

  it('is deterministic: the same inputs give byte-identical files', async () => {
    const model = path.join(FIXTURES, 'tiny-deepseek-v3');
    const a = await convertToGguf(model, outDir(), { type: 'q4_1' });
    const b = await convertToGguf(model, outDir(), { type: 'q4_1' });
    expect(fs.readFileSync(a).equals(fs.readFileSync(b))).toBe(true);
    const run = (out: string) => quantizeModel({ model: path.join(FIXTURES, 'tiny-mixtral'), out, data: [C4], format: 'gguf', gguf: { type: 'q4_0' }, method: 'agq', calibration: { samples: 8, seqLen: 128 }, device: 'cpu' });
    const x = await run(path.join(tmp, 'agq-a'));
    const y = await run(path.join(tmp, 'agq-b'));
    expect(fs.readFileSync(x.files.model[0]!).equals(fs.readFileSync(y.files.model[0]!))).toBe(true);
    expect(x.report.modules.length).toBeGreaterThan(0);
    expect(x.report.output_format).toBe('gguf q4_0');
    expect(fs.readdirSync(path.join(tmp, 'agq-a')).sort()).toEqual(['.moe-quant-manifest.json', 'balance-report.html', 'balance-report.json', 'balance-report.md', 'model.gguf', 'quant-report.json', 'quant-report.md']);
  });

  it('solving on the Q4_0 grid with AGQ reconstructs the calibration outputs better than round-to-nearest Q4_0', async () => {
    const run = (method: 'rtn' | 'agq', out: string) =>
      quantizeModel({ model: path.join(FIXTURES, 'tiny-mixtral'), out, data: [C4], format: 'gguf', gguf: { type: 'q4_0' }, method, calibration: { samples: 8, seqLen: 128 }, device: 'cpu' });
    const rtn = await run('rtn', path.join(tmp, 'rtn-q4'));
    const agq = JSON.parse(fs.readFileSync(path.join(tmp, 'agq-a', 'quant-report.json'), 'utf8')) as typeof rtn.report;
    for (const kind of ['attention', 'routed_expert'])
      expect(agq.totals.mean_rel_error[kind]!).toBeLessThan(0.9 * rtn.report.totals.mean_rel_error[kind]!);
  });
});

describe('--skip with GGUF', () => {
  it('writes skipped linears in F32 (their source weights), and refuses to split a layer\'s expert stack', async () => {
    const model = path.join(FIXTURES, 'tiny-mixtral');
    const run = (skip: string, out: string) =>
      quantizeModel({ model, out, data: [C4], format: 'gguf', gguf: { type: 'q4_0' }, method: 'rtn', skip, calibration: { samples: 4, seqLen: 64 }, device: 'cpu' });
    const r = await run('layers\\.1\\.', path.join(tmp, 'skip-1'));
    const g = GgufFile.open(r.files.model[0]!);
    expect(g.tensors.get('blk.1.attn_v.weight')!.type).toBe('F32');
    expect(g.tensors.get('blk.1.ffn_down_exps.weight')!.type).toBe('F32');
    expect(g.tensors.get('blk.0.attn_v.weight')!.type).toBe('Q4_0');
    g.close();
    const e = await createEngine(r.files.model[0]!, { device: 'cpu' });
    const src = await createEngine(model, { device: 'cpu' });
    const w = 'model.layers.1.block_sparse_moe.experts.3.w2.weight';
    expect(maxAbsDiff(e.weights.get(w), src.weights.get(w))).toBe(0);
    await e.close();
    await src.close();
    await expect(run('experts\\.3\\.', path.join(tmp, 'skip-2'))).rejects.toThrow(/--skip leaves 1 of the 8 experts of blk\.0\.ffn_gate_exps\.weight unquantized/);
    expect(fs.existsSync(path.join(tmp, 'skip-2'))).toBe(false);
  });
});

describe('GGUF refuses what llama.cpp cannot represent, before any work', () => {
  const cases: Array<[string, () => string, RegExp]> = [
    ['qwen2-moe (dense layer)', () => path.join(GENERATED, 'qwen2-moe'), /qwen2moe has experts in every layer; dense layer\(s\) 1/],
    ['olmoe-clip', () => path.join(GENERATED, 'olmoe-clip'), /clip_qkv \(0\.5\)/],
    ['deepseek-v2-group', () => path.join(GENERATED, 'deepseek-v2-group'), /group_limited_greedy/],
    ['qwen3 without norm_topk_prob', () => linkedWithConfig(path.join(FIXTURES, 'tiny-qwen3-moe'), { norm_topk_prob: false }), /qwen3moe always renormalises the top-k weights \(norm_topk_prob false\)/],
  ];
  for (const [name, dir, re] of cases) {
    it(name, async () => {
      const model = withTokenizer(dir());
      const out = path.join(tmp, `refused-${name.replace(/\W/g, '')}`);
      let err: unknown = null;
      try {
        await quantizeModel({ model, out, data: [C4], format: 'gguf', gguf: { type: 'q4_0' }, device: 'cpu' });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(MoeQuantError);
      expect((err as Error).message).toMatch(/^--format gguf: llama\.cpp cannot run this/);
      expect((err as Error).message).toMatch(re);
      expect(fs.existsSync(out)).toBe(false);
    });
  }
});
