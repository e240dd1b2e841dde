/**
 * quantize's memory budget (--max-memory): the plan (calibration/memory.ts), and that chunking experts' Hessians and
 * spilling dequantized experts and calibration activations to scratch files change nothing in the output — byte for
 * byte.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { specFromConfig } from '../../src/architectures/registry.js';
import { QWEN3_30B_A3B_LAYER } from '../../src/bench/synth.js';
import { calibrate } from '../../src/calibration/calibrate.js';
import { autoMemoryBudget, parseSize, planQuantizeMemory, type QuantizeMemoryInput } from '../../src/calibration/memory.js';
import { MoeQuantError } from '../../src/errors.js';
import { chunkModules, type LinearModule } from '../../src/pipeline/modules.js';
import { quantizeModel, type QuantizeOptions } from '../../src/pipeline/quantize.js';
import { SolvePool } from '../../src/pipeline/solve-pool.js';
import { C4, FIXTURES } from '../paths.js';

const MIXTRAL = path.join(FIXTURES, 'tiny-mixtral');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-mem-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('memory plan', () => {
  it('parses sizes in binary units', () => {
    expect(parseSize('4G')).toBe(4 * 2 ** 30);
    expect(parseSize('4096M')).toBe(4 * 2 ** 30);
    expect(parseSize('4GiB')).toBe(4 * 2 ** 30);
    expect(parseSize('1.5g')).toBe(1.5 * 2 ** 30);
    expect(parseSize('123456')).toBe(123456);
    for (const bad of ['', 'G', '-1G', '4X', '4 GBs', '0']) expect(parseSize(bad), bad).toBeNull();
    expect(autoMemoryBudget(8e9, 0)).toBe(6e9);
    expect(autoMemoryBudget(8e9, 4e9)).toBe(3e9); // a cgroup limit below free memory wins
    // The default limit is the process's cgroup limit (Node has it on process, not on os).
    const spy = vi.spyOn(process, 'constrainedMemory').mockReturnValue(1e6);
    try {
      expect(autoMemoryBudget()).toBe(750_000);
    } finally {
      spy.mockRestore();
    }
  });

  it('cuts a group into runs of at most n experts, keeping order and an expert’s gate/up together', () => {
    const mod = (name: string, expert?: number) => ({ weight: name, prefix: name, bias: null, N: 4, K: 4, hessian: expert === undefined ? 'ffn' : `e${expert}`, agqWeighted: true, kind: 'routed_expert', ...(expert === undefined ? {} : { expert }) }) as LinearModule;
    const mods = [0, 1, 2].flatMap((e) => [mod(`g${e}`, e), mod(`u${e}`, e)]).concat([mod('shared.g'), mod('shared.u')]);
    const names = (r: LinearModule[][]) => r.map((c) => c.map((m) => m.weight).join(' '));
    expect(names(chunkModules(mods, 2))).toEqual(['g0 u0 g1 u1', 'g2 u2 shared.g shared.u']);
    expect(names(chunkModules(mods, 1))).toEqual(['g0 u0', 'g1 u1', 'g2 u2 shared.g shared.u']);
    expect(chunkModules(mods, 3)).toEqual([mods]);
  });

  it('Qwen3-30B-A3B layer: a 4 GiB budget spills and chunks; too small a budget is one clear error', () => {
    const spec = specFromConfig(QWEN3_30B_A3B_LAYER as Record<string, unknown>);
    const input: QuantizeMemoryInput = { spec, tokens: 128 * 512, batchTokens: 4096, weightedOnly: true, residentBytes: null, expertChunkBytes: 256 * 2 ** 20, outputBytesPerWeight: 0.6 };
    const big = planQuantizeMemory(64 * 2 ** 30, input);
    expect(big).toMatchObject({ experts: 128, chunk: 128, spill: false });
    expect(big.perExpert).toBe(2048 * 2048 * 4); // AGQ: Σc·xxᵀ only
    const p = planQuantizeMemory(4 * 2 ** 30, input);
    expect(p.spill).toBe(true);
    expect(p.chunk).toBeGreaterThanOrEqual(1);
    expect(p.chunk).toBeLessThan(128);
    expect(p.peak).toBeLessThanOrEqual(4 * 2 ** 30);
    expect(p.chunkFor(768 * 768 * 4)).toBeGreaterThan(p.chunk); // down inputs are smaller: more per pass
    expect(planQuantizeMemory(6 * 2 ** 30, input).chunk).toBeGreaterThan(p.chunk);
    // Parallel solves cost memory: granted when the budget has it, given up before a pass holds no expert at all.
    expect(big.solveThreads).toBe(1);
    const two = planQuantizeMemory(64 * 2 ** 30, { ...input, solveThreads: 2 });
    expect(two.solveThreads).toBe(2);
    expect(two.fixed).toBeGreaterThan(big.fixed);
    // Short of memory, the activations go to a file before a solve thread is given up.
    const spilledTwo = planQuantizeMemory(p.fixed + p.perExpert, { ...input, solveThreads: 2 });
    expect(spilledTwo).toMatchObject({ solveThreads: 2, spillActivations: true });

    // GPTQ keeps Σxxᵀ too: twice the bytes per expert.
    expect(planQuantizeMemory(4 * 2 ** 30, { ...input, weightedOnly: false }).perExpert).toBe(2 * p.perExpert);
    expect(p.spillActivations).toBe(false); // 16 experts' Hessians fit beside 65,536 tokens of activations
    // Below the fixed part plus one expert, the activations go to a file: calibration tokens no longer count.
    const spilled = planQuantizeMemory(p.fixed + p.perExpert - 1, input);
    expect(spilled).toMatchObject({ spillActivations: true, fixed: p.fixed - p.activationBytes });
    expect(spilled.chunk).toBeGreaterThan(p.chunk); // the gigabyte of activations makes room for more experts
    // Then solve threads, down to one.
    expect(planQuantizeMemory(spilled.fixed + p.perExpert, { ...input, solveThreads: 2 })).toMatchObject({ solveThreads: 1, spillActivations: true, chunk: 1 });
    expect(p.activationBytes).toBeGreaterThan(128 * 512 * 2048 * 4 * 2 * 0.9); // x and the FFN input, less one batch
    const moreTokens = planQuantizeMemory(p.fixed + p.perExpert - 1, { ...input, tokens: 1024 * 2048 });
    expect(moreTokens).toMatchObject({ spillActivations: true, fixed: spilled.fixed });
    expect(() => planQuantizeMemory(spilled.fixed + p.perExpert - 1, input)).toThrow(
      /--max-memory .* is too small: .* calibration tokens in a scratch file .* per expert's Hessian; give at least [\d.]+ GiB or calibrate with a smaller --batch-tokens$/,
    );
    try {
      planQuantizeMemory(2 ** 30, input);
    } catch (e) {
      expect(e).toBeInstanceOf(MoeQuantError);
      expect((e as MoeQuantError).code).toBe('BAD_OPTION');
    }
  });
});

describe('quantize under a memory budget', () => {
  let calibDir = '';
  const calib = async () =>
    (calibDir ||= (await calibrate({ model: MIXTRAL, data: [C4], out: path.join(tmp, 'calib'), samples: 8, seqLen: 128, batchTokens: 512, device: 'cpu' })).out);
  const run = async (name: string, o: Partial<QuantizeOptions>) => quantizeModel({ model: MIXTRAL, out: path.join(tmp, name), calib: await calib(), device: 'cpu', ...o });
  const same = (a: string, b: string) => {
    const files = fs.readdirSync(a).sort();
    expect(fs.readdirSync(b).sort()).toEqual(files);
    for (const f of files) expect(fs.readFileSync(path.join(a, f)).equals(fs.readFileSync(path.join(b, f))), f).toBe(true);
  };

  for (const [method, trueSequential] of [['agq', true], ['gptq', false]] as const) {
    it(`${method}${trueSequential ? '' : ' one-pass'}: experts' Hessians one at a time and dequantized experts in a file give byte-identical output`, async () => {
      const whole = await run(`${method}-${trueSequential}-whole`, { method, trueSequential, maxMemory: 2 ** 40 });
      const m = whole.memory!;
      expect(m).toMatchObject({ budget_source: 'max-memory', experts: 8, expert_chunk: 8, spill_dequantized: false });
      expect(m.max_expert_hessian_bytes).toBeGreaterThanOrEqual(8 * m.per_expert_hessian_bytes); // the old way: every expert at once
      // Solves in two worker threads: the same bytes.
      const workers = await run(`${method}-${trueSequential}-workers`, { method, trueSequential, maxMemory: 2 ** 40, solveThreads: 2 });
      expect(workers.memory!.solve_threads).toBe(2);
      expect(m.solve_threads).toBe(1); // tiny linears: in the main thread by default
      same(whole.out, workers.out);
      const maxMemory = m.fixed_bytes + Math.floor(1.5 * m.per_expert_hessian_bytes);
      const layers: number[] = [];
      const small = await run(`${method}-${trueSequential}-chunk1`, { method, trueSequential, maxMemory, onLayer: (i) => layers.push(i) });
      expect(small.memory).toMatchObject({ expert_chunk: 1, spill_dequantized: true });
      expect(layers).toEqual(Array.from({ length: JSON.parse(fs.readFileSync(path.join(MIXTRAL, 'config.json'), 'utf8')).num_hidden_layers }, (_, i) => i));
      // No pass held more expert Hessians than the budget leaves (one gate/up input's; down inputs are smaller: a few).
      expect(small.memory!.max_expert_hessian_bytes).toBeLessThanOrEqual(maxMemory - m.fixed_bytes);
      same(whole.out, small.out);
      // No scratch file left behind.
      expect(fs.readdirSync(small.out)).not.toContain('.dequantized-experts.f32');
      // A budget that one expert's Hessian fits only with the activations out of memory: they go to scratch files
      // (read back batch by batch: 2 batches of 4 windows here), the same bytes again.
      expect(m.activation_bytes).toBeGreaterThan(0);
      const tight = m.fixed_bytes - m.activation_bytes + Math.floor(1.5 * m.per_expert_hessian_bytes);
      const spilled = await run(`${method}-${trueSequential}-activations`, { method, trueSequential, maxMemory: tight });
      expect(spilled.memory).toMatchObject({ expert_chunk: 1, spill_dequantized: true, spill_activations: true });
      expect(spilled.memory!.fixed_bytes).toBe(m.fixed_bytes - m.activation_bytes);
      same(whole.out, spilled.out);
      expect(fs.readdirSync(spilled.out).filter((f) => f.endsWith('.f32'))).toEqual([]);
      expect(small.memory!.spill_activations).toBe(false); // chunks alone were enough there
      if (trueSequential) {
        // Streaming weights (as real sizes do): expert chunks read, released and re-read from the checkpoint and the file.
        const probe = (await run(`${method}-streamed-whole`, { method, trueSequential, maxMemory: 2 ** 40, cacheBytes: 0 })).memory!;
        const budget = probe.fixed_bytes + Math.floor(1.5 * probe.per_expert_hessian_bytes);
        const streamed = await run(`${method}-streamed-chunk1`, { method, trueSequential, maxMemory: budget, cacheBytes: 0 });
        expect(streamed.memory).toMatchObject({ expert_chunk: 1, spill_dequantized: true });
        same(whole.out, streamed.out);
      }
    }, 300_000);
  }

  // GGUF: solves on the block grids run in the workers too — round-to-nearest included (the K-quants' scale searches
  // are the costly part there) — and the file is the same.
  for (const method of ['agq', 'rtn'] as const) {
    it(`GGUF ${method}: grid solves in two worker threads give a byte-identical file`, async () => {
      const o = { method, format: 'gguf', gguf: { type: 'q4_1' as const }, maxMemory: 2 ** 40 };
      const main = await run(`gguf-${method}-main`, o);
      const sent = vi.spyOn(SolvePool.prototype, 'solve');
      try {
        const workers = await run(`gguf-${method}-workers`, { ...o, solveThreads: 2 });
        expect(main.memory!.solve_threads).toBe(1);
        expect(workers.memory!.solve_threads).toBe(2);
        // Every expert's tasks went to the workers (routed experts: 4 layers × 8 experts × gate/up and down).
        expect(sent.mock.calls.length).toBeGreaterThanOrEqual(32);
        same(main.out, workers.out);
      } finally {
        sent.mockRestore();
      }
    }, 120_000);
  }

  // MLA with dense layers and shared experts; Qwen3-MoE sharded: activations in files give the same bytes too.
  for (const fixture of ['tiny-deepseek-v3', 'tiny-qwen3-moe']) {
    it(`${fixture}: calibration activations in scratch files give byte-identical output`, async () => {
      const model = path.join(FIXTURES, fixture);
      const c = await calibrate({ model, data: [C4], out: path.join(tmp, `calib-${fixture}`), samples: 6, seqLen: 64, batchTokens: 128, device: 'cpu' });
      const go = (name: string, maxMemory: number) => quantizeModel({ model, out: path.join(tmp, name), calib: c.out, device: 'cpu', method: 'agq', maxMemory });
      const whole = await go(`${fixture}-whole`, 2 ** 40);
      const m = whole.memory!;
      const spilled = await go(`${fixture}-spilled`, m.fixed_bytes - m.activation_bytes + m.per_expert_hessian_bytes);
      expect(spilled.memory).toMatchObject({ spill_activations: true, expert_chunk: 1 });
      same(whole.out, spilled.out);
    }, 300_000);
  }

  it('a budget below one expert fails before any work, and writes nothing', async () => {
    const whole = await run('probe', { method: 'agq', maxMemory: 2 ** 40 });
    const out = path.join(tmp, 'too-small');
    await expect(run('too-small', { method: 'agq', maxMemory: whole.memory!.fixed_bytes - whole.memory!.activation_bytes })).rejects.toThrow(/--max-memory .* is too small/);
    expect(fs.existsSync(out)).toBe(false);
  });
});
