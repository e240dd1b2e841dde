import * as path from 'node:path';
import { describe, it, expect } from 'vitest';
import { Checkpoint } from '../../src/checkpoint/checkpoint.js';
import { SafetensorsFile } from '../../src/checkpoint/safetensors.js';
import { bf16ToNumber, catchMoe, FIXTURES, halfToNumber } from './helpers.js';

const MIXTRAL = path.join(FIXTURES, 'tiny-mixtral');
const QWEN = path.join(FIXTURES, 'tiny-qwen3-moe');
const DEEPSEEK = path.join(FIXTURES, 'tiny-deepseek-v3');
// First 64 tokens of wiki.test.raw, the same for every fixture (shared tokenizer); first 8 checked by hand.
const FIRST_IDS = [425, 334, 1515, 3280, 362, 282, 108, 369];

function u16s(bytes: Uint8Array): Uint16Array {
  return new Uint16Array(bytes.slice().buffer);
}

describe('tiny-mixtral (bf16, one file)', () => {
  it('has the expected header', () => {
    const f = SafetensorsFile.open(path.join(MIXTRAL, 'model.safetensors'));
    expect(f.metadata).toEqual({ format: 'pt' });
    expect(f.tensors.size).toBe(127);
    expect([...f.tensors.values()].every((t) => t.dtype === 'BF16')).toBe(true);
    const lm = f.tensors.get('lm_head.weight')!;
    expect(lm).toEqual({ name: 'lm_head.weight', dtype: 'BF16', shape: [4096, 128], numel: 524288, byteOffset: 8 + 15064, byteLength: 1048576 });
    expect(f.tensors.get('model.layers.0.block_sparse_moe.experts.0.w1.weight')!.shape).toEqual([256, 128]);
    f.close();
  });

  it('converts bf16 exactly (hand-checked first value, arithmetic decode of a whole tensor)', () => {
    const f = SafetensorsFile.open(path.join(MIXTRAL, 'model.safetensors'));
    const raw = u16s(f.readBytes('lm_head.weight'));
    expect(raw[0]).toBe(0x3c0d); // 0 01111000 0001101 → (1 + 13/128) · 2^-7
    const w = f.readFloat32('lm_head.weight');
    expect(w[0]).toBe(141 / 16384);
    expect(w.length).toBe(4096 * 128);
    for (let i = 0; i < raw.length; i += 997) expect(w[i]).toBe(bf16ToNumber(raw[i]!));
    f.close();
  });

  it('reads embedding rows matching the full tensor', () => {
    const ck = Checkpoint.open(MIXTRAL);
    const full = ck.readFloat32('model.embed_tokens.weight');
    const rows = ck.readRowsFloat32('model.embed_tokens.weight', 425, 3);
    expect(rows).toEqual(full.subarray(425 * 128, 428 * 128));
    expect(ck.readRowsFloat32('model.embed_tokens.weight', 4095, 1)).toEqual(full.subarray(4095 * 128));
    ck.close();
  });

  it('opens as a checkpoint with the documented parameter count', () => {
    const ck = Checkpoint.open(MIXTRAL);
    expect(ck.files).toEqual([path.join(MIXTRAL, 'model.safetensors')]);
    expect(ck.names()).toHaveLength(127);
    expect(ck.names()).toEqual([...ck.names()].sort());
    expect(ck.dtypes().BF16).toBe(4396160);
    expect(ck.dtypes().F32).toBe(0);
    expect(ck.totalBytes).toBe(2 * 4396160);
    for (const n of ck.names()) expect(ck.readFloat32(n).length).toBe(ck.info(n).numel);
    ck.close();
  });
});

describe('tiny-qwen3-moe (f16, two shards + index)', () => {
  it('resolves tensors through the index', () => {
    const ck = Checkpoint.open(QWEN);
    expect(ck.files.map((f) => path.basename(f))).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    expect(ck.names()).toHaveLength(231);
    expect(ck.dtypes().F16).toBe(4400512);
    expect(ck.totalBytes).toBe(8801024); // the index's metadata.total_size
    expect(path.basename(ck.info('lm_head.weight').file)).toBe('model-00001-of-00002.safetensors');
    const l2 = ck.info('model.layers.2.input_layernorm.weight');
    expect(path.basename(l2.file)).toBe('model-00002-of-00002.safetensors');
    expect(l2.shape).toEqual([128]);
    expect(l2.dtype).toBe('F16');
    ck.close();
  });

  it('converts f16 like the arithmetic definition in both shards', () => {
    const ck = Checkpoint.open(QWEN);
    for (const name of ['model.embed_tokens.weight', 'model.layers.2.mlp.experts.0.down_proj.weight', 'model.layers.3.input_layernorm.weight']) {
      const raw = u16s(ck.readBytes(name));
      const w = ck.readFloat32(name);
      expect(w.length).toBe(raw.length);
      for (let i = 0; i < raw.length; i += 101) expect(w[i]).toBe(halfToNumber(raw[i]!));
    }
    for (const n of ck.names()) ck.readFloat32(n);
    ck.close();
  });
});

describe('tiny-deepseek-v3 (bf16 with f32 bias)', () => {
  it('reads the f32 correction biases and bf16 weights', () => {
    const ck = Checkpoint.open(DEEPSEEK);
    expect(ck.dtypes().F32).toBe(48);
    expect(ck.dtypes().BF16).toBe(3980672); // reference.json "params"; the f32 biases are buffers, not parameters
    const name = 'model.layers.1.mlp.gate.e_score_correction_bias';
    const info = ck.info(name);
    expect(info.dtype).toBe('F32');
    expect(info.shape).toEqual([16]);
    const raw = ck.readBytes(name);
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const bias = ck.readFloat32(name);
    for (let i = 0; i < 16; i++) expect(bias[i]).toBe(dv.getFloat32(4 * i, true));
    expect(ck.info('model.layers.0.mlp.down_proj.weight').shape).toEqual([128, 384]);
    for (const n of ck.names()) ck.readFloat32(n);
    ck.close();
  });
});

describe('reference.safetensors', () => {
  const cases: Array<[string, number, number, number]> = [
    // dir, first MoE layer, k, experts
    [MIXTRAL, 0, 2, 8],
    [QWEN, 0, 4, 16],
    [DEEPSEEK, 1, 4, 16],
  ];
  for (const [dir, firstMoe, k, experts] of cases) {
    it(`${path.basename(dir)}: input_ids, logits, topk indices`, () => {
      const f = SafetensorsFile.open(path.join(dir, 'reference.safetensors'));
      expect(f.metadata).toEqual({});
      const ids = f.tensors.get('input_ids')!;
      expect(ids.dtype).toBe('I32');
      expect(ids.shape).toEqual([64]);
      const raw = f.readBytes('input_ids');
      const asInt = new Int32Array(raw.buffer, raw.byteOffset, 64);
      expect(Array.from(asInt.subarray(0, 8))).toEqual(FIRST_IDS);
      expect(Array.from(f.readFloat32('input_ids'))).toEqual(Array.from(asInt));
      expect(f.tensors.get('logits')!.shape).toEqual([64, 4096]);
      const logits = f.readFloat32('logits');
      expect(logits.length).toBe(64 * 4096);
      expect(f.readRowsFloat32('logits', 63, 1)).toEqual(logits.subarray(63 * 4096));
      for (let layer = firstMoe; layer < 4; layer++) {
        const t = f.tensors.get(`layers.${layer}.topk_indices`)!;
        expect(t.dtype).toBe('I32');
        expect(t.shape).toEqual([64, k]);
        const top = f.readFloat32(t.name);
        for (let r = 0; r < 64; r++) {
          for (let j = 0; j < k; j++) {
            expect(top[r * k + j]).toBeGreaterThanOrEqual(0);
            expect(top[r * k + j]).toBeLessThan(experts);
            if (j > 0) expect(top[r * k + j]).toBeGreaterThan(top[r * k + j - 1]!);
          }
        }
      }
      f.close();
    });
  }

  it('names the missing tensor', () => {
    const f = SafetensorsFile.open(path.join(MIXTRAL, 'reference.safetensors'));
    expect(catchMoe(() => f.readBytes('nope.weight'), 'BAD_CHECKPOINT').message).toMatch(/nope\.weight.*reference\.safetensors/);
    f.close();
    const ck = Checkpoint.open(MIXTRAL);
    expect(ck.has('lm_head.weight')).toBe(true);
    expect(ck.has('nope')).toBe(false);
    expect(catchMoe(() => ck.readFloat32('nope'), 'BAD_CHECKPOINT').message).toContain('nope');
    expect(catchMoe(() => ck.info('nope'), 'BAD_CHECKPOINT').message).toContain('tiny-mixtral');
    ck.close();
  });
});

describe('readFloat32Into', () => {
  it('reads bf16, f16 and f32 tensors into caller buffers exactly like readFloat32, writing nothing outside them', () => {
    for (const [dir, name] of [
      [MIXTRAL, 'model.layers.1.block_sparse_moe.experts.2.w2.weight'],
      [QWEN, 'model.layers.3.mlp.experts.5.up_proj.weight'],
      [DEEPSEEK, 'model.layers.2.mlp.gate.e_score_correction_bias'],
    ] as const) {
      const ck = Checkpoint.open(dir);
      const want = ck.readFloat32(name);
      const parent = new Float32Array(want.length + 2).fill(7);
      const buf = parent.subarray(1, want.length + 1);
      ck.readFloat32Into(name, buf);
      expect(Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).equals(Buffer.from(want.buffer, want.byteOffset, want.byteLength))).toBe(true);
      expect([parent[0], parent[want.length + 1]]).toEqual([7, 7]);
      ck.close();
    }
  });
});
