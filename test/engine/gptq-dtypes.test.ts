/**
 * GPTQ tensor dtypes: scales are read as the dtype the header declares (F16 as AutoGPTQ/GPTQModel write them; BF16
 * and F32 from checkpoints re-saved in another dtype), qweight/qzeros/g_idx must be I32, and anything else — or a
 * module stored both as float `.weight` and packed `.qweight` — is refused by name before any work.
 * Checkpoints are modified copies (written into a temp dir) of the interop fixtures and of a quantize output.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { calibrate } from '../../src/calibration/calibrate.js';
import { float32ToBf16, float32ToF16, toFloat32, type DType } from '../../src/checkpoint/dtypes.js';
import { SafetensorsFile, tensorBytes, writeSafetensors, type TensorToWrite } from '../../src/checkpoint/safetensors.js';
import { createEngine } from '../../src/engine/engine.js';
import { openModel } from '../../src/engine/model.js';
import { MoeQuantError } from '../../src/errors.js';
import { evaluatePerplexity } from '../../src/eval/perplexity.js';
import { quantizeModel } from '../../src/pipeline/quantize.js';
import { FIXTURES, WIKI } from '../paths.js';
import { readReference } from './helpers.js';

const INTEROP = path.resolve(__dirname, '../fixtures/gptq-interop');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-gptq-dtypes-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

type Tensor = { name: string; dtype: DType; shape: number[]; bytes: Uint8Array };

/**
 * A copy of checkpoint directory `src` (single model.safetensors) named `name` in the temp dir, each tensor passed
 * through `edit` (return a list: [] drops it, several add tensors), config.json through `config`.
 */
function resave(src: string, name: string, edit: (t: Tensor) => Tensor[], config = (c: Record<string, unknown>) => c): string {
  const dst = path.join(tmp, name);
  fs.mkdirSync(dst);
  for (const f of fs.readdirSync(src)) if (f.endsWith('.json') && f !== 'config.json') fs.copyFileSync(path.join(src, f), path.join(dst, f));
  fs.writeFileSync(path.join(dst, 'config.json'), JSON.stringify(config(JSON.parse(fs.readFileSync(path.join(src, 'config.json'), 'utf8')))));
  const st = SafetensorsFile.open(path.join(src, 'model.safetensors'));
  const out: TensorToWrite[] = [];
  for (const t of st.tensors.values()) {
    for (const e of edit({ name: t.name, dtype: t.dtype, shape: t.shape, bytes: st.readBytes(t.name) })) {
      out.push({ name: e.name, dtype: e.dtype, shape: e.shape, data: e.bytes });
    }
  }
  st.close();
  writeSafetensors(path.join(dst, 'model.safetensors'), out, { format: 'pt' });
  return dst;
}

/** Every `.scales` tensor (F16) converted by `convert` from its float32 values to (dtype, bytes). */
const scalesAs = (convert: (v: Float32Array) => [DType, Uint8Array]) => (t: Tensor): Tensor[] => {
  if (!t.name.endsWith('.scales')) return [t];
  expect(t.dtype).toBe('F16');
  const [dtype, bytes] = convert(toFloat32('F16', t.bytes));
  return [{ ...t, dtype, bytes }];
};
const toF32 = (v: Float32Array): [DType, Uint8Array] => ['F32', tensorBytes(v)];
const toBf16 = (v: Float32Array): [DType, Uint8Array] => ['BF16', tensorBytes(float32ToBf16(v))];
/** The bf16-rounded values stored as F16: the same numbers as toBf16 (checked), in the standard dtype. */
const toBf16AsF16 = (v: Float32Array): [DType, Uint8Array] => {
  const rounded = toFloat32('BF16', tensorBytes(float32ToBf16(v)));
  const f16 = float32ToF16(rounded);
  expect(Buffer.from(tensorBytes(toFloat32('F16', tensorBytes(f16)))).equals(Buffer.from(tensorBytes(rounded)))).toBe(true);
  return ['F16', tensorBytes(f16)];
};

async function logitsOf(dir: string, ids: Int32Array, int4Kernels: boolean): Promise<Float32Array> {
  const engine = await createEngine(dir, { device: 'cpu', int4Kernels });
  try {
    return (await engine.forward.run([ids], { head: 'logits' })).logits!;
  } finally {
    await engine.close();
  }
}

const same = (a: Float32Array, b: Float32Array) => Buffer.from(tensorBytes(a)).equals(Buffer.from(tensorBytes(b)));

describe('GPTQ scales in F16, BF16 and F32', () => {
  it('interop checkpoint: F32 scales give bit-identical logits, BF16 scales exactly those of their values in F16 (both kernels)', async () => {
    const src = path.join(INTEROP, 'v1-asym');
    const { ids } = readReference(src);
    const f32 = resave(src, 'interop-f32', scalesAs(toF32));
    const bf16 = resave(src, 'interop-bf16', scalesAs(toBf16));
    const bf16AsF16 = resave(src, 'interop-bf16-as-f16', scalesAs(toBf16AsF16));
    for (const int4Kernels of [true, false]) {
      const original = await logitsOf(src, ids, int4Kernels);
      expect(same(await logitsOf(f32, ids, int4Kernels), original), `F32, int4Kernels=${int4Kernels}`).toBe(true);
      const b = await logitsOf(bf16, ids, int4Kernels);
      expect(same(b, await logitsOf(bf16AsF16, ids, int4Kernels)), `BF16, int4Kernels=${int4Kernels}`).toBe(true);
      expect(same(b, original)).toBe(false); // the rounding to bf16 is real, so the comparison above means something
    }
  });

  it('quantize output re-saved with BF16 or F32 scales evaluates to the F16 perplexity (up to the bf16 rounding)', async () => {
    const text = path.join(tmp, 'calib.txt');
    fs.writeFileSync(text, fs.readFileSync(WIKI, 'utf8').slice(0, 20000));
    const model = path.join(FIXTURES, 'tiny-mixtral');
    const calib = await calibrate({ model, data: [text], out: path.join(tmp, 'calib'), samples: 4, seqLen: 64, device: 'cpu' });
    const q = await quantizeModel({ model, calib: calib.out, out: path.join(tmp, 'q'), method: 'rtn', device: 'cpu' });
    const ppl = async (dir: string) => (await evaluatePerplexity({ model: dir, data: text, seqLen: 128, maxWindows: 8, device: 'cpu' })).ppl;
    const f16 = await ppl(q.out);
    expect(await ppl(resave(q.out, 'q-f32', scalesAs(toF32)))).toBe(f16);
    const bf16 = await ppl(resave(q.out, 'q-bf16', scalesAs(toBf16)));
    expect(bf16).toBe(await ppl(resave(q.out, 'q-bf16-as-f16', scalesAs(toBf16AsF16))));
    console.log(`perplexity with F16 scales ${f16}, BF16 ${bf16}`);
    expect(Math.abs(bf16 - f16) / f16).toBeLessThan(1e-3); // bf16 keeps 8 bits of mantissa: scales within 0.2%
  });
});

describe('GPTQ scales are checked for NaN/Inf like every float tensor', () => {
  it('a NaN in one scales tensor fails NUMERIC naming it, on the MatMulNBits and the dequantized path', async () => {
    const src = path.join(INTEROP, 'v1-asym');
    const P = 'model.layers.1.self_attn.o_proj';
    const dir = resave(src, 'nan-scales', (t) => {
      if (t.name === `${P}.scales`) new Uint16Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.length / 2)[3] = 0x7e00; // fp16 NaN
      return [t];
    });
    const { ids } = readReference(src);
    for (const int4Kernels of [true, false]) {
      const e = await logitsOf(dir, ids, int4Kernels).then(() => null, (x: unknown) => x);
      expect(e, `int4Kernels=${int4Kernels}`).toBeInstanceOf(MoeQuantError);
      expect((e as MoeQuantError).code).toBe('NUMERIC');
      expect((e as Error).message).toMatch(new RegExp(`^tensor ${P.replace(/\./g, '\\.')}\\.scales \\(F16 \\[2, 128\\]\\) in \\S+ holds 1 NaN, the first at index \\[0, 3\\]`));
    }
  });
});

describe('GPTQ tensors with other dtypes, or both .weight and .qweight, are refused by name', () => {
  const src = path.join(INTEROP, 'v1-sym');
  const P = 'model.layers.0.block_sparse_moe.experts.0.w1'; // K = 128, N = 256
  const err = (dir: string): MoeQuantError => {
    let e: unknown = null;
    try {
      openModel(dir).checkpoint.close();
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(MoeQuantError);
    expect((e as Error).message).not.toContain('\n');
    return e as MoeQuantError;
  };
  /** `suffix` of module P re-typed as `dtype` (bytes widened or narrowed per element, so the shape still fits). */
  const retype = (suffix: string, dtype: DType) => (t: Tensor): Tensor[] => {
    if (t.name !== `${P}.${suffix}`) return [t];
    const v = t.dtype === 'I32' ? Float64Array.from(new Int32Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.length / 4)) : Float64Array.from(toFloat32(t.dtype, t.bytes));
    const bytes: Record<string, () => Uint8Array> = {
      I64: () => tensorBytes(BigInt64Array.from(v, (x) => BigInt(x))),
      U32: () => tensorBytes(Uint32Array.from(v, (x) => x >>> 0)),
      I16: () => tensorBytes(Int16Array.from(v)),
      F32: () => tensorBytes(Float32Array.from(v)),
      F64: () => tensorBytes(v),
    };
    return [{ ...t, dtype, bytes: bytes[dtype]!() }];
  };

  it('qweight, qzeros, g_idx other than I32 and scales other than F16/BF16/F32: UNSUPPORTED naming tensor and dtype', () => {
    const cases: Array<[string, DType]> = [['qweight', 'I64'], ['qweight', 'F32'], ['qzeros', 'U32'], ['qzeros', 'I16'], ['g_idx', 'I64'], ['scales', 'F64']];
    for (const [suffix, dtype] of cases) {
      const e = err(resave(src, `bad-${suffix}-${dtype}`, retype(suffix, dtype)));
      expect(e.code, `${suffix} ${dtype}`).toBe('UNSUPPORTED');
      const allowed = suffix === 'scales' ? 'F16, BF16, F32' : 'I32';
      expect(e.message).toBe(`tensor ${P}.${suffix} has dtype ${dtype}; GPTQ ${suffix} must be ${allowed} (model.safetensors)`);
    }
    // GPTQModel's other pack dtypes change the packing itself
    const e = err(resave(src, 'pack-int64', (t) => [t], (c) => ({ ...c, quantization_config: { ...(c['quantization_config'] as object), pack_dtype: 'int64' } })));
    expect(e.code).toBe('UNSUPPORTED');
    expect(e.message).toMatch(/config\.json: GPTQ pack_dtype "int64" is not supported \(int32\)$/);
  });

  it('a module with both a float .weight and a .qweight: BAD_CHECKPOINT naming the module; qweight without quantization_config: BAD_CONFIG', () => {
    const both = resave(src, 'both', (t) =>
      t.name === `${P}.qweight` ? [t, { name: `${P}.weight`, dtype: 'F32', shape: [256, 128], bytes: new Uint8Array(256 * 128 * 4) }] : [t],
    );
    const e = err(both);
    expect(e.code).toBe('BAD_CHECKPOINT');
    expect(e.message).toBe(`module ${P} has both a float ${P}.weight and GPTQ ${P}.qweight in ${both}; which one to use is ambiguous`);
    const noConfig = resave(src, 'no-qconfig', (t) => [t], (c) => ({ ...c, quantization_config: undefined }));
    const e2 = err(noConfig);
    expect(e2.code).toBe('BAD_CONFIG');
    expect(e2.message).toMatch(/^module model\.layers\.0\.\S+ is GPTQ-packed \(\S+\.qweight\) but .*config\.json has no quantization_config$/);
  });
});
