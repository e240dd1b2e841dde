/**
 * GPTQ interop: checkpoints written by another implementation (scripts/interop/make_gptq_interop.py, an independent
 * Python packer following AutoGPTQ's semantics, not moe-quant's writer) must load and reproduce transformers' logits
 * for the dequantized model, on both the MatMulNBits path and the dequantize-to-float32 path.
 *
 * Fixtures (test/fixtures/gptq-interop, see its manifest.json): v1-asym (checkpoint_format "gptq", zeros stored minus
 * one, includes z = 0 groups stored as nibble 15), v2-asym ("gptq_v2", zeros as-is), v1-sym (every qzeros word
 * 0x77777777), v1-sym-no-gidx (same without g_idx tensors). GPTQ_INTEROP_DIR points the test at another set (e.g.
 * one built with `make_gptq_interop.py --full --out DIR`).
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { int32Of } from '../../src/checkpoint/dtypes.js';
import { SafetensorsFile } from '../../src/checkpoint/safetensors.js';
import { createEngine } from '../../src/engine/engine.js';
import { maxAbsDiff, readReference } from './helpers.js';

const ROOT = process.env['GPTQ_INTEROP_DIR'] ?? path.resolve(__dirname, '../fixtures/gptq-interop');
const CASES = ['v1-asym', 'v2-asym', 'v1-sym', 'v1-sym-no-gidx'];
const PROBE = 'model.layers.0.block_sparse_moe.experts.0.w1.weight'; // a stress module: has z = 0 groups in asym

const readI32 = (file: SafetensorsFile, name: string): Int32Array => int32Of(file.readBytes(name));

describe('GPTQ checkpoints from an independent writer', () => {
  it('fixtures exercise the intended cases', () => {
    for (const c of CASES) expect(fs.existsSync(path.join(ROOT, c, 'reference.safetensors')), c).toBe(true);
    const prefix = PROBE.replace(/\.weight$/, '');
    // v1-asym really contains z = 0 groups, stored as nibble 15
    const v1 = SafetensorsFile.open(path.join(ROOT, 'v1-asym', 'model.safetensors'));
    const v2 = SafetensorsFile.open(path.join(ROOT, 'v2-asym', 'model.safetensors'));
    const sym = SafetensorsFile.open(path.join(ROOT, 'v1-sym', 'model.safetensors'));
    const noG = SafetensorsFile.open(path.join(ROOT, 'v1-sym-no-gidx', 'model.safetensors'));
    try {
      const z1 = readI32(v1, `${prefix}.qzeros`);
      const z2 = readI32(v2, `${prefix}.qzeros`);
      let stored15 = 0;
      for (let i = 0; i < z1.length; i++)
        for (let j = 0; j < 8; j++) {
          const a = (z1[i]! >>> (4 * j)) & 0xf;
          const b = (z2[i]! >>> (4 * j)) & 0xf;
          expect(a).toBe((b + 15) & 0xf); // v1 = (v2 - 1) mod 16
          if (b === 0) stored15++;
        }
      expect(stored15).toBeGreaterThan(0);
      expect(readI32(sym, `${prefix}.qzeros`).every((w) => w === 0x77777777)).toBe(true);
      expect(v1.info(`${prefix}.g_idx`).shape).toEqual([128]);
      expect(() => noG.info(`${prefix}.g_idx`)).toThrow();
    } finally {
      v1.close();
      v2.close();
      sym.close();
      noG.close();
    }
  });

  for (const c of CASES) {
    for (const int4Kernels of [true, false]) {
      it(`${c} (${int4Kernels ? 'MatMulNBits' : 'dequantized float32'}): logits within 1e-3 of transformers`, async () => {
        const dir = path.join(ROOT, c);
        const { ids, logits: refLogits } = readReference(dir);
        const engine = await createEngine(dir, { device: 'cpu', int4Kernels });
        try {
          expect(engine.model.gptq).not.toBeNull();
          expect(engine.model.packed.has(PROBE)).toBe(true);
          expect(engine.model.packed.has('model.layers.0.block_sparse_moe.gate.weight')).toBe(false);
          // the kernel under test is the one actually used
          expect(engine.weights.nbitsBlockSize(PROBE)).toBe(int4Kernels ? 64 : null);
          const out = await engine.forward.run([ids], { head: 'logits' });
          expect(out.logits!.length).toBe(refLogits.length);
          const maxErr = maxAbsDiff(out.logits!, refLogits);
          console.log(`gptq-interop ${c} int4Kernels=${int4Kernels}: max|Δlogit| = ${maxErr.toExponential(2)}`);
          expect(maxErr).toBeLessThan(1e-3);
        } finally {
          await engine.close();
        }
      });
    }
  }
});
