/**
 * Streaming MoE layers run expert-major (ForwardEngine.expertMajorLayer): every expert chunk is read once per layer
 * and all batches' tokens pass through it in segments. Same results as the resident one-graph path, same routing
 * events in the same order, selection bias honoured, progress counted as before.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { moeLayers, type MoeFfnSpec } from '../../src/architectures/types.js';
import { createEngine, type Engine } from '../../src/engine/engine.js';
import { progressSteps, type MoeRoutingEvent } from '../../src/engine/forward.js';
import { FIXTURES } from '../paths.js';
import { maxAbsDiff, readReference } from './helpers.js';

const GENERATED = path.resolve(__dirname, '../fixtures/generated');

/** Streaming engine with 3-expert chunks and segments of a few tokens (several per batch). */
async function streaming(dir: string): Promise<Engine> {
  const engine = await createEngine(dir, { device: 'cpu', cacheBytes: 0 });
  const f = moeLayers(engine.model.spec)[0]!.ffn as MoeFfnSpec;
  const H = engine.model.spec.hiddenSize;
  engine.forward.expertChunkBytes = 3 * 3 * H * f.expertIntermediateSize * 4;
  engine.forward.expertRunBytes = 12 * ((3 * f.routing.numExpertsUsed) / f.routing.numExperts) * (2 * H + 3 * f.expertIntermediateSize) * 4; // ~12 tokens
  return engine;
}

// A bias that changes the routing of every layer (expert 1 always wins a slot), read before each batch.
const bias = (E: number) => Float32Array.from({ length: E }, (_, e) => (e === 1 ? 10 : 0));

describe('expert-major streaming', () => {
  for (const dir of [path.join(FIXTURES, 'tiny-deepseek-v3'), path.join(GENERATED, 'qwen2-moe'), path.join(FIXTURES, 'tiny-mixtral')]) {
    it(`${path.basename(dir)}: reads each expert once per layer over 4 batches (once per 2 when FFN inputs are bounded to 2); logits and routing as the resident path`, async () => {
      const { ids } = readReference(dir);
      const seqs = [ids.subarray(0, 16), ids.subarray(16, 32), ids.subarray(32, 48), ids.subarray(48, 64)];
      const resident = await createEngine(dir, { device: 'cpu' });
      const engine = await streaming(dir);
      try {
        expect(resident.weights.resident).toBe(true);
        const f = moeLayers(engine.model.spec)[0]!.ffn as MoeFfnSpec;
        expect(engine.forward.expertChunks(f).length).toBeGreaterThan(1);
        const reads = new Map<string, number>();
        const get = engine.weights.get.bind(engine.weights);
        engine.weights.get = (name: string) => (reads.set(name, (reads.get(name) ?? 0) + 1), get(name));

        const run = async (e: Engine, spillDir?: string) => {
          const events: MoeRoutingEvent[] = [];
          const ticks: number[] = [];
          const out = await e.forward.run(seqs, {
            ...(spillDir ? { spillDir } : {}),
            head: 'logits',
            batchTokens: 24, // batches of one sequence (16 tokens): 4 batches
            onProgress: (d) => ticks.push(d),
            hooks: { selectionBias: (l) => bias(e.model.spec.layers[l]!.ffn.kind === 'moe' ? f.routing.numExperts : 0), onRouting: (ev) => events.push(ev) },
          });
          return { logits: out.logits!, hidden: out.hidden, events, ticks };
        };
        const want = await run(resident);
        const got = await run(engine);

        expect(maxAbsDiff(got.logits, want.logits)).toBeLessThan(1e-4);
        expect(got.events.map((e) => [e.layerIndex, e.batchIndex, e.tokenOffset])).toEqual(want.events.map((e) => [e.layerIndex, e.batchIndex, e.tokenOffset]));
        got.events.forEach((e, i) => expect(Array.from(e.routing.experts)).toEqual(Array.from(want.events[i]!.routing.experts)));
        expect(got.events.every((e) => Array.from(e.routing.experts).filter((x) => x === 1).length === e.routing.numTokens)).toBe(true);
        const total = progressSteps(engine.model.spec.numLayers, seqs.length, 16, { head: 'logits', batchTokens: 24 });
        expect(got.ticks).toEqual(Array.from({ length: total }, (_, i) => i + 1));

        const expertReads = () =>
          moeLayers(engine.model.spec).flatMap((layer) => {
            const ffn = layer.ffn as MoeFfnSpec;
            return Array.from({ length: ffn.routing.numExperts }, (_, e) => Object.values(ffn.expert(e)).map((name) => reads.get(name))).flat();
          });
        expect(new Set(expertReads())).toEqual(new Set([1]));

        // FFN inputs bounded to two batches at a time: the experts are read once per two batches, same results.
        reads.clear();
        engine.forward.expertMajorBytes = 2 * 16 * engine.model.spec.hiddenSize * 4;
        const grouped = await run(engine);
        expect(new Set(expertReads())).toEqual(new Set([2]));
        expect(maxAbsDiff(grouped.logits, want.logits)).toBeLessThan(1e-4); // other GEMM row blocks: float rounding
        expect(grouped.events.map((e) => [e.batchIndex, e.tokenOffset])).toEqual(got.events.map((e) => [e.batchIndex, e.tokenOffset]));
        expect(grouped.ticks).toEqual(got.ticks);

        // Hidden states in a scratch file (calibrate with more tokens than memory holds): bit for bit the same, on
        // both paths; the file is gone afterwards.
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-spill-'));
        try {
          for (const [e, plain] of [[engine, grouped], [resident, want]] as const) {
            const spilled = await run(e, dir);
            expect(spilled.hidden).toBeUndefined();
            expect(Buffer.from(spilled.logits.buffer).equals(Buffer.from(plain.logits.buffer))).toBe(true);
            expect(spilled.events.map((ev) => [ev.batchIndex, ev.tokenOffset, ...ev.routing.experts])).toEqual(plain.events.map((ev) => [ev.batchIndex, ev.tokenOffset, ...ev.routing.experts]));
            expect(spilled.ticks).toEqual(plain.ticks);
            expect(fs.readdirSync(dir)).toEqual([]);
          }
        } finally {
          fs.rmSync(dir, { recursive: true, force: true });
        }
      } finally {
        await resident.close();
        await engine.close();
      }
    });
  }
});
