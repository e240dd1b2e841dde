/**
 * No Concat node wider than CONCAT_FAN_IN inputs: onnxruntime's WebGPU Concat runs wider nodes in several passes and
 * throws when the last pass gets only empty inputs (experts with no tokens). The WebGPU run itself is in test/gpu.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { specFromConfig } from '../../src/architectures/registry.js';
import { moeLayers } from '../../src/architectures/types.js';
import { concatTree, CONCAT_FAN_IN } from '../../src/graph/blocks.js';
import { attr, GraphBuilder, OnnxType } from '../../src/graph/builder.js';
import { buildExpertsGraph, buildMoeGraph } from '../../src/graph/layer-graphs.js';
import { FIXTURES } from '../paths.js';

/** Input counts of the Concat nodes a builder call adds. */
function concatWidths(build: () => void): number[] {
  const widths: number[] = [];
  const opN = GraphBuilder.prototype.opN;
  vi.spyOn(GraphBuilder.prototype, 'opN').mockImplementation(function (this: GraphBuilder, opType, inputs, ...rest) {
    if (opType === 'Concat') widths.push(inputs.length);
    return opN.call(this, opType, inputs, ...rest);
  });
  build();
  return widths;
}

afterEach(() => vi.restoreAllMocks());

describe('routed-experts Concat', () => {
  for (const experts of [16, 64, 256]) {
    it(`${experts} experts: every Concat node has at most ${CONCAT_FAN_IN} inputs`, () => {
      const cfg = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'tiny-qwen3-moe', 'config.json'), 'utf8')) as Record<string, unknown>;
      const spec = specFromConfig({ ...cfg, num_experts: experts });
      const ffn = moeLayers(spec)[0]!.ffn;
      const widths = concatWidths(() => {
        buildMoeGraph(spec, ffn);
        buildExpertsGraph(spec, ffn, experts);
      });
      expect(widths.length).toBeGreaterThan(0);
      expect(Math.max(...widths)).toBeLessThanOrEqual(CONCAT_FAN_IN);
    });
  }
});

describe('concatTree', () => {
  it('equals one flat Concat bit for bit, with empty inputs anywhere (also a whole group, also all)', async () => {
    const n = 20;
    const flat = new GraphBuilder('flat');
    const tree = new GraphBuilder('tree');
    for (const g of [flat, tree]) {
      const xs = Array.from({ length: n }, (_, j) => g.input(`x${j}`, OnnxType.FLOAT, [`n${j}`, 3]));
      const y = g === flat ? g.op('Concat', xs, { axis: attr.i(0) }) : concatTree(g, xs, 0);
      g.output('y', y, OnnxType.FLOAT, ['R', 3]);
    }
    const [a, b] = await Promise.all([flat, tree].map((g) => ort.InferenceSession.create(g.build(), { executionProviders: ['cpu'] })));
    try {
      for (const rows of [
        Array.from({ length: n }, (_, j) => (j >= 14 ? 0 : (j % 3) + 1)), // the last group (14…19) empty
        Array.from({ length: n }, (_, j) => (j % 4 === 0 ? 2 : 0)),
        Array.from({ length: n }, () => 0),
      ]) {
        const feeds: Record<string, ort.Tensor> = {};
        rows.forEach((r, j) => (feeds[`x${j}`] = new ort.Tensor('float32', Float32Array.from({ length: r * 3 }, (_, i) => j + i / 7), [r, 3])));
        const [ya, yb] = [(await a.run(feeds)).y!, (await b.run(feeds)).y!];
        expect(yb.dims).toEqual(ya.dims);
        expect(Array.from(yb.data as Float32Array)).toEqual(Array.from(ya.data as Float32Array));
      }
    } finally {
      await Promise.all([a.release(), b.release()]);
    }
  });
});
