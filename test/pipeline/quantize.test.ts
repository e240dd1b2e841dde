import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { calibrate } from '../../src/calibration/calibrate.js';
import { SafetensorsFile, writeSafetensors } from '../../src/checkpoint/safetensors.js';
import { createEngine } from '../../src/engine/engine.js';
import { MoeQuantError } from '../../src/errors.js';
import { evaluatePerplexity } from '../../src/eval/perplexity.js';
import { quantizeModel } from '../../src/pipeline/quantize.js';
import { renderQuantMarkdown, type QuantReport } from '../../src/report/quant-report.js';
import { C4, FIXTURES, WIKI } from '../paths.js';

const MIXTRAL = path.join(FIXTURES, 'tiny-mixtral');
const QWEN = path.join(FIXTURES, 'tiny-qwen3-moe');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-q-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const calibSmall = { samples: 8, seqLen: 128, batchTokens: 512, device: 'cpu' as const };
let calibDir = '';

async function calibOnce(): Promise<string> {
  if (!calibDir) calibDir = (await calibrate({ model: MIXTRAL, data: [C4], out: path.join(tmp, 'calib'), ...calibSmall })).out;
  return calibDir;
}

// Default GPTQ on the calibration above: used by the one-pass comparison and the determinism test.
let gptqRun: ReturnType<typeof quantizeModel> | null = null;
const gptqOnce = async () => (gptqRun ??= quantizeModel({ model: MIXTRAL, out: path.join(tmp, 'det-1'), calib: await calibOnce(), method: 'gptq', device: 'cpu' }));

describe('quantize', () => {
  it('writes a GPTQ checkpoint whose packed weights unpack exactly to the quantizer output, and evaluates it', async () => {
    const calib = await calibOnce();
    const gptq = await quantizeModel({ model: MIXTRAL, out: path.join(tmp, 'agq'), calib, method: 'agq', device: 'cpu' });
    const fake = await quantizeModel({ model: MIXTRAL, out: path.join(tmp, 'agq-deq'), calib, method: 'agq', format: 'dequantized', device: 'cpu' });
    const cfg = JSON.parse(fs.readFileSync(path.join(gptq.out, 'config.json'), 'utf8'));
    expect(cfg.quantization_config).toMatchObject({ quant_method: 'gptq', bits: 4, group_size: 128, sym: false, checkpoint_format: 'gptq', desc_act: false });
    for (const f of ['quant-report.json', 'quant-report.md', 'balance-report.json', 'balance-report.md', 'balance-report.html', 'tokenizer.json'])
      expect(fs.existsSync(path.join(gptq.out, f)), f).toBe(true);
    const st = SafetensorsFile.open(path.join(gptq.out, 'model.safetensors'));
    const p = 'model.layers.1.block_sparse_moe.experts.3.w2';
    expect(st.tensors.get(`${p}.qweight`)!.shape).toEqual([256 / 8, 128]);
    expect(st.tensors.get(`${p}.qzeros`)!.shape).toEqual([2, 128 / 8]);
    expect(st.tensors.get(`${p}.scales`)!.dtype).toBe('F16');
    expect(st.tensors.has(`${p}.weight`)).toBe(false);
    expect(st.tensors.get('model.layers.1.block_sparse_moe.gate.weight')!.dtype).toBe('BF16'); // router kept
    st.close();
    // Unpacking what the writer packed gives exactly the weights the quantizer produced.
    const a = await createEngine(gptq.out, { device: 'cpu' });
    const b = await createEngine(fake.out, { device: 'cpu' });
    for (const name of [`${p}.weight`, 'model.layers.0.self_attn.q_proj.weight', 'model.layers.3.block_sparse_moe.experts.0.w1.weight']) {
      const x = a.weights.get(name);
      const y = b.weights.get(name);
      expect(x.length).toBe(y.length);
      expect(Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(y.buffer, y.byteOffset, y.byteLength)), name).toBe(true);
    }
    // Held as MatMulNBits inputs, the 4-bit linears count at their packed size against the resident budget.
    expect(a.weights.residentBytes).toBeLessThan(b.weights.residentBytes / 2);
    await a.close();
    await b.close();
    const fp = await evaluatePerplexity({ model: MIXTRAL, data: WIKI, seqLen: 128, maxWindows: 8, device: 'cpu' });
    const q = await evaluatePerplexity({ model: gptq.out, data: WIKI, seqLen: 128, maxWindows: 8, device: 'cpu' });
    expect(q.quantization).toMatchObject({ quant_method: 'gptq', bits: 4, kernel: 'MatMulNBits' });
    // onnxruntime's 4-bit kernels and the dequantized float32 path agree.
    const deq = await evaluatePerplexity({ model: gptq.out, data: WIKI, seqLen: 128, maxWindows: 8, device: 'cpu', int4Kernels: false });
    expect(deq.quantization).toMatchObject({ kernel: 'dequantized-float32' });
    expect(Math.abs(deq.ppl - q.ppl) / deq.ppl).toBeLessThan(1e-4);
    expect(q.ppl / fp.ppl).toBeGreaterThan(0.97);
    expect(q.ppl / fp.ppl).toBeLessThan(1.05);
    // Expert weights at least 3× smaller than bf16.
    expect(gptq.report.totals.expert_bytes_source / gptq.report.totals.expert_bytes_quantized).toBeGreaterThan(3);
  });

  it('gptq_v2 checkpoints (zeros stored as-is) load to the same weights as v1', async () => {
    const calib = await calibOnce();
    const v1 = await quantizeModel({ model: MIXTRAL, out: path.join(tmp, 'v1'), calib, method: 'rtn', device: 'cpu' });
    const v2 = await quantizeModel({ model: MIXTRAL, out: path.join(tmp, 'v2'), calib, method: 'rtn', format: 'gptq_v2', device: 'cpu' });
    expect(JSON.parse(fs.readFileSync(path.join(v2.out, 'config.json'), 'utf8')).quantization_config.checkpoint_format).toBe('gptq_v2');
    const [a, b] = [await createEngine(v1.out, { device: 'cpu' }), await createEngine(v2.out, { device: 'cpu' })];
    const name = 'model.layers.2.block_sparse_moe.experts.6.w3.weight';
    expect(Buffer.from(a.weights.get(name).buffer).equals(Buffer.from(b.weights.get(name).buffer))).toBe(true);
    const st1 = SafetensorsFile.open(path.join(v1.out, 'model.safetensors'));
    const st2 = SafetensorsFile.open(path.join(v2.out, 'model.safetensors'));
    expect(Buffer.from(st1.readBytes(name.replace('.weight', '.qzeros'))).equals(Buffer.from(st2.readBytes(name.replace('.weight', '.qzeros'))))).toBe(false);
    st1.close();
    st2.close();
    await a.close();
    await b.close();
  });

  it('one pass per layer (--no-true-sequential) quantizes the same modules from the unquantized layer', async () => {
    const calib = await calibOnce();
    const seq = await gptqOnce();
    const one = await quantizeModel({ model: MIXTRAL, out: path.join(tmp, 'one'), calib, method: 'gptq', trueSequential: false, device: 'cpu' });
    expect(one.report.modules.map((m) => m.module)).toEqual(seq.report.modules.map((m) => m.module));
    const cfg = JSON.parse(fs.readFileSync(path.join(one.out, 'config.json'), 'utf8'));
    expect(cfg.quantization_config.true_sequential).toBe(false);
    // Attention inputs are identical in both modes for layer 0's q/k/v; expert Hessians differ (o_proj quantized or not).
    const first = (r: typeof seq) => r.report.modules.find((m) => m.module === 'model.layers.0.self_attn.q_proj')!.rel_error;
    expect(first(one)).toBeCloseTo(first(seq), 6);
    const expert = (r: typeof seq) => r.report.modules.find((m) => m.module === 'model.layers.0.block_sparse_moe.experts.0.w2')!.rel_error;
    expect(expert(one)).not.toBe(expert(seq));
  });

  it('--skip leaves matching modules unquantized', async () => {
    const calib = await calibOnce();
    const r = await quantizeModel({ model: MIXTRAL, out: path.join(tmp, 'skip'), calib, method: 'rtn', skip: 'layers\\.0\\.self_attn', device: 'cpu' });
    const st = SafetensorsFile.open(path.join(r.out, 'model.safetensors'));
    expect(st.tensors.get('model.layers.0.self_attn.q_proj.weight')!.dtype).toBe('BF16');
    expect(st.tensors.has('model.layers.0.self_attn.q_proj.qweight')).toBe(false);
    expect(st.tensors.has('model.layers.1.self_attn.q_proj.qweight')).toBe(true);
    st.close();
    expect(r.report.modules.some((m) => m.module.startsWith('model.layers.0.self_attn'))).toBe(false);
    const qc = JSON.parse(fs.readFileSync(path.join(r.out, 'config.json'), 'utf8')).quantization_config;
    expect(qc.dynamic).toHaveProperty(['-:^model\\.layers\\.0\\.self_attn\\.q_proj$']);
    const e = await createEngine(r.out, { device: 'cpu' }); // mixed checkpoint loads
    await e.close();
  });

  it('--quantize-router packs the routers and keeps linears GPTQ cannot pack (N = 1 shared_expert_gate) in float', async () => {
    // The generated Qwen2-MoE fixture (shared_expert_gate, 8 experts) has no tokenizer: give it a character-level one.
    const model = path.join(tmp, 'qwen2-moe');
    fs.cpSync(path.resolve(__dirname, '../fixtures/generated/qwen2-moe'), model, { recursive: true });
    const vocab: Record<string, number> = { '[UNK]': 0 };
    for (let c = 32; c < 127; c++) vocab[String.fromCharCode(c)] = c - 31;
    const tokenizer = { version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null, post_processor: null, decoder: null, pre_tokenizer: { type: 'Split', pattern: { Regex: '.' }, behavior: 'Isolated', invert: false }, model: { type: 'WordLevel', vocab, unk_token: '[UNK]' } };
    fs.writeFileSync(path.join(model, 'tokenizer.json'), JSON.stringify(tokenizer));
    const r = await quantizeModel({ model, out: path.join(tmp, 'router'), data: [C4], ...calibSmall, method: 'rtn', quantizeRouter: true });
    const st = SafetensorsFile.open(path.join(r.out, 'model.safetensors'));
    expect(st.tensors.has('model.layers.0.mlp.gate.qweight')).toBe(true);
    expect(st.tensors.has('model.layers.0.mlp.shared_expert_gate.weight')).toBe(true);
    expect(st.tensors.has('model.layers.0.mlp.shared_expert_gate.qweight')).toBe(false);
    st.close();
    expect(r.report.modules.some((m) => m.module.endsWith('shared_expert_gate'))).toBe(false);
    const e = await createEngine(r.out, { device: 'cpu' });
    await e.close();
  });

  it('shards a large output with an index, and 8-bit checkpoints load (dequantized path)', async () => {
    const calib = await calibOnce();
    const r = await quantizeModel({ model: MIXTRAL, out: path.join(tmp, 'sharded'), calib, method: 'rtn', bits: 8, maxShardBytes: 1_000_000, device: 'cpu' });
    expect(r.files.model.length).toBeGreaterThan(2);
    const index = JSON.parse(fs.readFileSync(path.join(r.out, 'model.safetensors.index.json'), 'utf8'));
    expect(Object.keys(index.weight_map)).toContain('model.layers.3.block_sparse_moe.experts.7.w2.qweight');
    const e = await createEngine(r.out, { device: 'cpu' });
    expect(e.weights.nbitsBlockSize('model.layers.0.self_attn.q_proj.weight')).toBeNull(); // MatMulNBits path is 4-bit only
    const w = e.weights.get('model.layers.0.self_attn.q_proj.weight');
    const fp = await createEngine(MIXTRAL, { device: 'cpu' });
    const orig = fp.weights.get('model.layers.0.self_attn.q_proj.weight');
    let err = 0;
    for (let i = 0; i < w.length; i++) err = Math.max(err, Math.abs(w[i]! - orig[i]!));
    expect(err).toBeLessThan(0.01); // 8-bit RTN is close
    await e.close();
    await fp.close();
  });

  it('is deterministic: the whole output directory is byte-identical (timings only on request)', async () => {
    const calib = await calibOnce();
    const run = (name: string, timings: boolean) =>
      quantizeModel({ model: MIXTRAL, out: path.join(tmp, name), calib, method: 'gptq', device: 'cpu', timings });
    const [x, y] = [await gptqOnce(), await run('det-2', false)];
    const files = fs.readdirSync(x.out).sort();
    expect(fs.readdirSync(y.out).sort()).toEqual(files);
    for (const f of files) expect(fs.readFileSync(path.join(x.out, f)).equals(fs.readFileSync(path.join(y.out, f))), f).toBe(true);
    expect(x.report.totals.seconds).toBeNull();
    // With timings the report carries per-module seconds, and they are the only difference.
    const z = await run('det-3', true);
    const untimed = (r: QuantReport): QuantReport => ({ ...r, modules: r.modules.map((m) => ({ ...m, seconds: null })), totals: { ...r.totals, seconds: null } });
    expect(z.report.modules.every((m) => typeof m.seconds === 'number')).toBe(true);
    for (const f of files) {
      const enc = f.endsWith('.md') ? 'utf8' : 'latin1'; // latin1 keeps binary files byte for byte
      const u = fs.readFileSync(path.join(x.out, f)).toString(enc);
      let v = fs.readFileSync(path.join(z.out, f)).toString(enc);
      if (f === 'quant-report.json') v = `${JSON.stringify(untimed(JSON.parse(v) as QuantReport), null, 2)}\n`;
      if (f === 'quant-report.md') v = renderQuantMarkdown(untimed(z.report));
      expect(u === v, f).toBe(true);
    }
  });

  it('falls back to RTN for experts that received no calibration tokens, and names them', async () => {
    const few = await calibrate({ model: QWEN, data: [C4], out: path.join(tmp, 'calib-few'), samples: 1, seqLen: 8, batchTokens: 8, routingBias: 'none', device: 'cpu' });
    const r = await quantizeModel({ model: QWEN, out: path.join(tmp, 'fallback'), calib: few.out, method: 'agq', device: 'cpu' });
    expect(r.report.fallbacks.length).toBeGreaterThan(0);
    const md = fs.readFileSync(r.files.quant_report_md, 'utf8');
    expect(md).toContain(r.report.fallbacks[0]!.module);
    expect(r.report.modules.find((m) => m.module === r.report.fallbacks[0]!.module)!.method).toBe('rtn');
  });

  it('rejects bad input clearly and leaves nothing behind', async () => {
    const calib = await calibOnce();
    const bad = async (p: Promise<unknown>, re: RegExp) => {
      const e = await p.then(() => null, (x) => x);
      expect(e, String(re)).toBeInstanceOf(MoeQuantError);
      expect((e as Error).message).toMatch(re);
    };
    const out = path.join(tmp, 'bad-out');
    await bad(quantizeModel({ model: QWEN, out, calib, device: 'cpu' }), /made for another model/);
    await bad(quantizeModel({ model: MIXTRAL, out, calib, bits: 5, device: 'cpu' }), /--bits 5/);
    await bad(quantizeModel({ model: MIXTRAL, out, calib, format: 'gguf', gguf: { type: 'q4_k' }, device: 'cpu' }), /--gguf-type q4_k: tensor blk\.0\.attn_q\.weight has rows of 128 values.*K-quants need K % 256 == 0.*--gguf-fallback/);
    await bad(quantizeModel({ model: MIXTRAL, out, calib, format: 'gguf', gguf: { type: 'q3_k' as never }, device: 'cpu' }), /--gguf-type must be one of/);
    // (a group size that does not divide K is fine: a shorter last group; an invalid one is refused)
    await bad(quantizeModel({ model: MIXTRAL, out, calib, groupSize: 0, device: 'cpu' }), /--group-size must be a positive integer or -1 \(got 0\)/);
    await bad(quantizeModel({ model: MIXTRAL, out, device: 'cpu' }), /--calib CALIB_DIR or --data/);
    await bad(quantizeModel({ model: MIXTRAL, out: MIXTRAL, calib, device: 'cpu' }), /would replace the input model/);
    const noHess = path.join(tmp, 'not-calib');
    fs.mkdirSync(noHess);
    await bad(quantizeModel({ model: MIXTRAL, out, calib: noHess, device: 'cpu' }), /not a calibration directory/);
    // NaN weights
    const nanDir = path.join(tmp, 'nan-model');
    fs.cpSync(MIXTRAL, nanDir, { recursive: true });
    for (const f of fs.readdirSync(nanDir)) fs.chmodSync(path.join(nanDir, f), 0o644);
    const src = SafetensorsFile.open(path.join(MIXTRAL, 'model.safetensors'));
    writeSafetensors(
      path.join(nanDir, 'model.safetensors'),
      [...src.tensors.values()].map((t) => ({
        name: t.name,
        dtype: t.dtype,
        shape: t.shape,
        data: () => {
          const b = src.readBytes(t.name);
          if (t.name === 'model.layers.0.self_attn.k_proj.weight') new Uint16Array(b.buffer, b.byteOffset, 4).fill(0x7fc0);
          return b;
        },
      })),
    );
    src.close();
    await bad(quantizeModel({ model: nanDir, out, data: [C4], ...calibSmall, device: 'cpu' } as never), /NaN|Inf|finite/i);
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });
});
