/**
 * A group size that does not divide K against the PyTorch reference (scripts/quant-reference/gptq_reference.py,
 * IST-DASLab's fasterquant slicing W[:, p:p+g], shorter at the end; G = ⌈K/g⌉). The expected values were generated
 * once by scripts/quant-reference/make_partial_group_fixture.py into test/fixtures/gptq-partial-group (no Python
 * needed here): K = 192 with g = 128 (groups 128, 64) and g = 80 (80, 80, 32), act-order with dynamic and static
 * groups, a dead column inside the last group.
 */
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SafetensorsFile } from '../../src/checkpoint/safetensors.js';
import { SessionPool } from '../../src/graph/session.js';
import { gptqQuantize, type GptqOptions } from '../../src/quantization/gptq.js';
import { levelDiff } from './helpers.js';

const pool = new SessionPool('cpu');
afterAll(() => pool.release());

const FILE = path.resolve(__dirname, '../fixtures/gptq-partial-group/reference.safetensors');
const CASES: Record<string, GptqOptions> = {
  g128_asym: { bits: 4, groupSize: 128, sym: false },
  g128_actorder_dynamic: { bits: 4, groupSize: 128, sym: false, actOrder: true },
  g128_actorder_static_sym: { bits: 4, groupSize: 128, sym: true, actOrder: true, staticGroups: true },
  g80_3bit_block64: { bits: 3, groupSize: 80, sym: false, blockSize: 64 },
};

describe('shorter last group vs the PyTorch GPTQ reference (committed fixture)', () => {
  const st = SafetensorsFile.open(FILE);
  const [N, K] = st.info('W').shape as [number, number];
  const W = st.readFloat32('W');
  const H = st.readFloat32('H');
  const u8 = (name: string) => Uint8Array.from(st.readBytes(name));
  const i32 = (name: string) => {
    const b = st.readBytes(name);
    return new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  };
  const expected = Object.fromEntries(
    Object.keys(CASES).map((c) => {
      const b = st.readBytes(`loss_${c}`);
      const loss = new Float64Array(b.buffer.slice(b.byteOffset, b.byteOffset + 8))[0]!;
      return [c, { q: u8(`q_${c}`), scales: st.readFloat32(`scales_${c}`), zeros: u8(`zeros_${c}`), gIdx: i32(`g_idx_${c}`), loss }];
    }),
  );
  st.close();

  it('the fixture has the intended shapes', () => {
    expect([N, K]).toEqual([32, 192]);
    expect(expected['g128_asym']!.scales.length).toBe(N * 2);
    expect(expected['g80_3bit_block64']!.scales.length).toBe(N * 3);
  });

  for (const [name, opts] of Object.entries(CASES)) {
    it(`${name}: same levels, scales, zero points and g_idx as PyTorch (float32)`, async () => {
      const ref = expected[name]!;
      const res = await gptqQuantize(W, N, K, H, opts, pool);
      expect(Array.from(res.gIdx)).toEqual(Array.from(ref.gIdx));
      expect(levelDiff(res.q, ref.q).count).toBe(0);
      expect(Array.from(res.scales)).toEqual(Array.from(ref.scales));
      expect(Array.from(res.zeros)).toEqual(Array.from(ref.zeros));
      expect(Math.abs(res.loss - ref.loss) / ref.loss).toBeLessThan(1e-4);
    });
  }
});
