import { describe, it, expect } from 'vitest';
import * as ort from 'onnxruntime-node';
import { GraphBuilder, OnnxType, attr } from '../../src/graph/builder.js';

const F = OnnxType.FLOAT;

async function run(bytes: Uint8Array, feeds: Record<string, ort.Tensor>) {
  const s = await ort.InferenceSession.create(bytes, { executionProviders: ['cpu'] });
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

describe('ONNX encoder', () => {
  it('encodes Gemm(transB) with weight inputs, attributes of every kind, and negative ints', async () => {
    const g = new GraphBuilder('t');
    const x = g.input('x', F, ['T', 3]);
    const w = g.input('w', F, [2, 3]);
    const y = g.op('Gemm', [x, w], { transB: attr.i(1), alpha: attr.f(2) });
    const s = g.op('Softmax', [y], { axis: attr.i(-1) });
    g.output('y', y, F, ['T', 2]);
    g.output('s', s, F, ['T', 2]);
    const out = await run(g.build(), {
      x: new ort.Tensor('float32', Float32Array.from([1, 2, 3, 4, 5, 6]), [2, 3]),
      w: new ort.Tensor('float32', Float32Array.from([1, 0, 0, 0, 1, 1]), [2, 3]),
    });
    expect(Array.from(out.y!.data as Float32Array)).toEqual([2, 10, 8, 22]);
    const sm = out.s!.data as Float32Array;
    expect(sm[0]! + sm[1]!).toBeCloseTo(1, 6);
  });

  it('runs RMSNorm contrib op and zero-row Gather + Gemm', async () => {
    const g = new GraphBuilder('t');
    const x = g.input('x', F, ['T', 4]);
    const nw = g.input('nw', F, [4]);
    const idx = g.input('idx', OnnxType.INT64, ['n']);
    const w = g.input('w', F, [2, 4]);
    const n = g.op('SimplifiedLayerNormalization', [x, nw], { axis: attr.i(-1), epsilon: attr.f(1e-6) });
    const rows = g.op('Gather', [n, idx], { axis: attr.i(0) });
    const y = g.op('Gemm', [rows, w], { transB: attr.i(1) });
    g.output('n', n, F, ['T', 4]);
    g.output('y', y, F, ['n', 2]);
    const xs = Float32Array.from([1, 2, 3, 4, -1, 0, 1, 0]);
    const feeds = (ids: number[]) => ({
      x: new ort.Tensor('float32', xs, [2, 4]),
      nw: new ort.Tensor('float32', Float32Array.from([1, 1, 2, 2]), [4]),
      idx: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [ids.length]),
      w: new ort.Tensor('float32', Float32Array.from([1, 0, 0, 0, 0, 0, 0, 1]), [2, 4]),
    });
    const out = await run(g.build(), feeds([1]));
    const rms = Math.sqrt((1 + 4 + 9 + 16) / 4 + 1e-6);
    expect((out.n!.data as Float32Array)[3]).toBeCloseTo((4 / rms) * 2, 5);
    expect(out.y!.dims).toEqual([1, 2]);
    const empty = await run(g.build(), feeds([]));
    expect(empty.y!.dims).toEqual([0, 2]);
  });
});
