/**
 * `moe-quant quantize`: the layer-sequential driver (GPTQ's "sequential" mode).
 *
 * The calibration windows' hidden states enter layer 0; for each layer, module groups (pipeline/modules.ts) are
 * quantized one after another — each from Hessians collected by a pass over all calibration tokens with every
 * earlier group of the layer already replaced by its quantized weights (so expert Hessians see the routing the
 * quantized attention produces). A final pass with the whole layer quantized gives the next layer's input.
 * Routing in every pass replays the calibration's loss-free biases batch by batch.
 * Weights are swapped through WeightStore overrides (dequantized float32): graphs never change.
 * Memory (opts.memory, from --max-memory): a group's routed experts are taken in runs whose Hessians fit the budget —
 * one capture pass per run, solved and dropped before the next — and dequantized experts, and the calibration
 * activations themselves (activations.ts), can wait in scratch files instead of memory. Every Hessian sums the same
 * rows in the same order whatever the runs, so results do not change.
 */
import path from 'node:path';
import type { ModuleGroupName } from '../architectures/tensors.js';
import type { LayerSpec } from '../architectures/types.js';
import { LayerHessians } from '../calibration/hessian-collector.js';
import type { Engine } from '../engine/engine.js';
import { sequenceBatches, type ActivationsEvent } from '../engine/forward.js';
import { tensor } from '../graph/session.js';
import type { QuantConfig, QuantizedLinear } from '../quantization/quantizer.js';
import type { QuantType } from '../formats/gguf/quants.js';
import type { CalibrationInput } from '../calibration/calibration-dir.js';
import { LayerActivations } from '../engine/activations.js';
import { chunkModules, layerModuleGroups, type LinearModule } from './modules.js';
import { SpillFile } from '../engine/spill.js';
import { runSolveTask, solveRowRanges, type SolvedModule, type SolveSettings, type SolveTask } from './solve.js';
import { runInOrder, type SolvePool } from './solve-pool.js';

export type Method = 'rtn' | 'gptq' | 'agq';

export interface SequentialOptions extends QuantConfig {
  method: Method;
  damp: number;
  blockSize: number;
  actOrder: boolean;
  quantizeRouter: boolean;
  /** Modules to leave unquantized (--skip matches, linears the output format cannot pack). */
  leaveOut: (m: LinearModule) => boolean;
  /**
   * true (default): each module group's Hessians come from a pass with the earlier groups of the layer quantized
   * (GPTQ --true-sequential; expert routing recomputed). false: one pass per layer collects every Hessian from the
   * layer's original weights, then all its modules are quantized (the plain GPTQ/MoEQuant reference protocol).
   */
  trueSequential: boolean;
  /**
   * The GGUF block type module `m` is solved on (its bytes come back in `q.packed`). Default: the min-max grid of
   * bits / groupSize / sym (rtnQuantize / gptqQuantize).
   */
  grid?: (m: LinearModule) => QuantType;
  /**
   * Memory plan (calibration/memory.ts planQuantizeMemory): routed experts whose Hessians one pass collects, for an
   * expert Hessian of `bytes`; and whether a layer's dequantized experts go to a scratch file in `spillDir` instead of
   * memory, and whether the calibration activations do (spillActivations). Default: every expert at once, all in
   * memory. Results are the same either way.
   */
  memory?: { chunkFor(bytes: number): number; spill: boolean; spillActivations?: boolean };
  /** Worker threads for the GPTQ / AGQ solves (solve-pool.ts); default: every solve in this thread. */
  solvers?: SolvePool;
  spillDir?: string;
  /**
   * Each capture pass: its group (null: one-pass mode's shared pass), how many routed experts' Hessians it fills and
   * their bytes.
   */
  onPass?(p: { layer: number; group: ModuleGroupName | null; expertHessians: number; expertHessianBytes: number }): void;
  onProgress?(done: number, total: number): void;
  /** A decoder layer is quantized and handed to the writer. */
  onLayer?(index: number): void;
}

/**
 * Whether weighted Hessian keys keep Σ c x xᵀ alone: AGQ solves and scores routed (and gated shared) experts with it,
 * RTN only scores them with it; GPTQ solves with the plain sum and scores with the weighted one.
 */
export function weightedSumsOnly(method: Method): boolean {
  return method === 'agq' || method === 'rtn';
}

/** Routed experts with a Hessian in `h`, and the bytes of those Hessians. */
function expertHessians(h: LayerHessians): { expertHessians: number; expertHessianBytes: number } {
  const slots = [...h.slots.values()].filter((s) => s.expert !== undefined);
  const bytes = slots.reduce((n, { acc }) => n + acc.dim * acc.dim * 4 * ((acc.plain ? 1 : 0) + (acc.weighted ? 1 : 0)), 0);
  return { expertHessians: new Set(slots.map((s) => s.expert)).size, expertHessianBytes: bytes };
}

export interface ModuleRecord {
  module: string;
  layer: number;
  kind: LinearModule['kind'];
  expert: number | null;
  method: Method;
  bits: number;
  group_size: number;
  /** Only when group_size does not divide the module's K: the columns of its shorter last group (K mod group_size). */
  last_group?: number;
  tokens: number;
  /** ‖WX − ŴX‖ / ‖WX‖ on the calibration inputs (affinity-weighted for routed experts). */
  rel_error: number;
  /** Wall time of this module's solve; null in written reports unless `timings` was asked for. */
  seconds: number | null;
  /** Why a calibrated method fell back to RTN (e.g. no calibration tokens). */
  fallback: string | null;
}

/** Quantize every layer; `onQuantized` receives each module's result as soon as it is final. */
export async function quantizeSequential(
  engine: Engine,
  calib: CalibrationInput,
  opts: SequentialOptions,
  onQuantized: (m: LinearModule, q: QuantizedLinear, record: ModuleRecord) => void,
  onLayerDone: (layer: LayerSpec) => Promise<void> | void,
): Promise<ModuleRecord[]> {
  const { forward, weights, pool } = engine;
  const spec = engine.model.spec;
  const H = spec.hiddenSize;
  const S = calib.windows[0]!.length;
  const batches = sequenceBatches(calib.windows.length, S, calib.batchTokens);
  const ctx = forward.sequenceContext(S);
  const records: ModuleRecord[] = [];
  const plans = spec.layers.map((l) => layerModuleGroups(spec, l, { quantizeRouter: opts.quantizeRouter }));
  let done = 0;

  /**
   * One pass of `layer` over all batches; capture passes work on copies, the final pass updates x.
   * Once the attention modules of the layer are final, its attention outputs are computed once per batch and
   * kept (`acts.keepAttention`) for the FFN passes: only the FFN half runs again.
   */
  const pass = async (layer: LayerSpec, hessians: LayerHessians | null, mode: 'layer' | 'attention' | 'inputs' | 'ffn-inputs' = 'layer', onlyExperts?: number[]) => {
    for (let b = 0; b < batches.length; b++) {
      const rows = batches[b]!;
      if (mode === 'inputs') {
        const slice = acts.x(b);
        const inputs = await forward.attentionInputs(layer, slice);
        await hessians!.add({ layerIndex: layer.index, batchIndex: b, tokenOffset: rows[0]! * S, numTokens: rows.length * S, inputs });
        opts.onProgress?.(++done, totalPasses);
        continue;
      }
      const attentionOnly = mode === 'attention';
      const stepCtx = {
        ...ctx,
        bs: tensor.i64From([rows.length, S]),
        batchIndex: b,
        tokenOffset: rows[0]! * S,
        attentionOnly,
        ffnInputsOnly: mode === 'ffn-inputs',
        ...(onlyExperts ? { onlyExperts } : {}),
        hooks: {
          capture: hessians !== null,
          selectionBias: (l: number) => calib.biasFor(l, b),
          onActivations: hessians ? (ev: ActivationsEvent) => hessians.add(ev) : undefined,
        },
      };
      // Capture passes work on a copy, except those that leave x unchanged anyway; from kept attention outputs
      // the FFN only writes x.
      const cached = acts.hasAttention;
      const capture = hessians !== null && mode === 'layer';
      const target = capture ? (cached ? acts.scratch(b) : acts.copy(b)) : acts.x(b);
      if (cached) await forward.ffnStep(layer, target, acts.attention(b), stepCtx);
      else await forward.layerStep(layer, target, stepCtx);
      if (!capture && mode === 'layer') acts.put(b, target);
      opts.onProgress?.(++done, totalPasses);
    }
  };

  /**
   * Compute and keep the attention outputs of every batch (no capture). `final`: no pass of this layer will run the
   * attention again, so x no longer needs the layer's input — h (= x + attention) replaces it there and the cache
   * refers to x instead of holding a third [tokens × hidden] copy (the final pass then writes the layer output over h).
   */
  const cacheAttention = async (layer: LayerSpec, final: boolean) => {
    for (let b = 0; b < batches.length; b++) {
      const rows = batches[b]!;
      const a = await forward.attentionStep(layer, acts.x(b), {
        ...ctx,
        bs: tensor.i64From([rows.length, S]),
        batchIndex: b,
        tokenOffset: rows[0]! * S,
      });
      acts.keepAttention(b, a, final);
    }
  };

  /**
   * Solve the modules of one run from its Hessians; `keep` puts each result where later passes see it. Modules of
   * one Hessian form a task (they share its factorization); tasks run in the solve workers when there are any, and
   * their results are handed on in module order either way.
   */
  const settings: SolveSettings = { bits: opts.bits, groupSize: opts.groupSize, sym: opts.sym, damp: opts.damp, blockSize: opts.blockSize, actOrder: opts.actOrder };
  const solver = opts.solvers ?? null;
  const solveRun = async (layer: LayerSpec, todo: LinearModule[], hessians: LayerHessians, keep: (m: LinearModule, data: Float32Array) => void) => {
    type Task = { modules: LinearModule[]; method: Method; fallback: string | null; tokens: number; H: Float32Array | null; errorH: SolveTask['errorH'] };
    const tasks: Task[] = [];
    for (const m of todo) {
      // Modules read from one Hessian (an expert's gate and up, q/k/v) make one task.
      const last = tasks[tasks.length - 1]?.modules[0];
      if (last && last.hessian === m.hessian && last.agqWeighted === m.agqWeighted) {
        tasks[tasks.length - 1]!.modules.push(m);
        continue;
      }
      const acc = hessians.slots.get(m.hessian)!.acc;
      const weightedH = acc.weighted ? acc.xtcx! : acc.xtx;
      let method: Method = opts.method;
      let fallback: string | null = null;
      if (method !== 'rtn' && acc.tokens === 0) {
        method = 'rtn';
        fallback = 'no calibration tokens reached this expert';
      }
      const H = method === 'rtn' ? null : method === 'agq' && m.agqWeighted ? weightedH : acc.xtx;
      // rel_error: on the inputs the module sees in the model (affinity-weighted for routed experts).
      const errorH = !acc.tokens ? null : m.agqWeighted ? weightedH : acc.xtx;
      tasks.push({ modules: [m], method, fallback, tokens: acc.tokens, H, errorH: errorH && errorH === H ? 'solve' : errorH });
    }
    // Workers pay off with at least as many tasks as workers: fewer (attention's q/k/v, a dense FFN's gate/up) are cut
    // into a task per module (each factorizes H itself); a lone module (o_proj, a dense down_proj) is factorized here
    // and its rows are cut between the workers.
    const workers = solver ? solver.size : 1;
    if (workers > 1 && tasks.length < workers) tasks.splice(0, tasks.length, ...tasks.flatMap((t) => t.modules.map((m) => ({ ...t, modules: [m] }))));
    const parallel = workers > 1 && tasks.length > 1;
    // (Row ranges share one factorization on the min-max grid; a lone module on a GGUF grid is solved here whole.)
    const byRows = workers > 1 && tasks.length === 1 && tasks[0]!.H !== null && !opts.grid;
    const solveOne = async (t: Task): Promise<SolvedModule[]> => {
      // The originals are read per task and given back once solved (streaming stores): a layer's experts never all sit in memory.
      const W = t.modules.map((m) => weights.get(m.weight));
      const task: SolveTask = { H: t.H, errorH: t.errorH, modules: t.modules.map((m, i) => ({ W: W[i]!, N: m.N, K: m.K, ...(opts.grid ? { grid: opts.grid(m) } : {}) })), settings };
      // Round-to-nearest on the min-max grid (cheap) and lone tasks run here.
      const results = parallel && (task.H || opts.grid) ? await solver!.solve(task) : byRows ? [await solveRowRanges(task, pool, solver!)] : await runSolveTask(task, pool);
      // (A format may keep a module as it is: its result is then the original buffer, which must not be reused.)
      weights.release(t.modules.filter((m, i) => results[i]!.q.dequantized !== W[i]).map((m) => m.weight));
      return results;
    };
    await runInOrder(tasks, parallel ? workers : 1, solveOne, (results, t) => {
      for (let i = 0; i < results.length; i++) {
        const m = t.modules[i]!;
        const { q, relError, seconds } = results[i]!;
        const record: ModuleRecord = {
          module: m.prefix,
          layer: layer.index,
          kind: m.kind,
          expert: m.expert ?? null,
          method: t.method,
          bits: opts.bits,
          group_size: q.groupSize,
          ...(q.K % q.groupSize !== 0 ? { last_group: q.K % q.groupSize } : {}),
          tokens: t.tokens,
          rel_error: relError,
          seconds,
          fallback: t.fallback,
        };
        keep(m, q.dequantized);
        records.push(record);
        onQuantized(m, q, record);
      }
    });
  };

  const weightedOnly = weightedSumsOnly(opts.method);
  // Each group's modules in runs of at most `chunkFor` routed experts: a run's Hessians are collected, solved and
  // dropped before the next run's pass, so a layer never holds every expert's Hessian at once.
  const runsOf = (modules: LinearModule[]) => {
    const todo = modules.filter((m) => !opts.leaveOut(m));
    const expert = todo.find((m) => m.expert !== undefined);
    const size = expert && opts.memory ? opts.memory.chunkFor(expert.K * expert.K * 4 * (weightedOnly ? 1 : 2)) : todo.length || 1;
    return chunkModules(todo, size);
  };
  const runs = plans.map((p) => p.map((g) => runsOf(g.modules)));
  // One-pass mode: groups in one run share the layer's single capture pass; the others get a pass per run.
  const totalPasses = runs.reduce((s, r) => s + r.reduce((n, g) => n + Math.max(1, g.length), 0) + (opts.trueSequential ? 1 : 2), 0) * batches.length;
  const spill = opts.memory?.spill && opts.spillDir ? new SpillFile(path.join(opts.spillDir, '.dequantized-experts.f32')) : null;
  const applySpilled = (weight: string, read: (into: Float32Array) => Float32Array) => () => weights.setSpilledOverride(weight, read);
  let acts!: LayerActivations;
  try {
    acts = new LayerActivations(forward, calib.windows, batches, H, opts.memory?.spillActivations && opts.spillDir ? opts.spillDir : null);
    for (const layer of spec.layers) {
      acts.clearAttention();
      const layerRuns = runs[layer.index]!;
      // One-pass mode: every Hessian comes from the unquantized layer, so results wait (`staged`) until the final pass.
      const staged: Array<() => void> = [];
      const keep = (m: LinearModule, data: Float32Array) => {
        // A spilled expert's apply must not close over `data`: staged closures would keep every dequantized expert
        // of the layer in memory (a closure made next to one that reads `data` shares its scope).
        const apply = spill && m.kind === 'routed_expert' ? applySpilled(m.weight, spill.write(data)) : () => weights.overrides.set(m.weight, data);
        if (opts.trueSequential) apply();
        else staged.push(apply);
      };
      // One-pass mode: a single capture pass over the unquantized layer serves every group cut in one run.
      let shared: LayerHessians | null = null;
      if (!opts.trueSequential) {
        const keys = layerRuns.flatMap((g) => (g.length === 1 ? g[0]!.map((m) => m.hessian) : []));
        shared = new LayerHessians(pool, spec, layer, new Set(keys), weightedOnly);
        opts.onPass?.({ layer: layer.index, group: null, ...expertHessians(shared) });
        await pass(layer, shared, 'layer');
      }
      const groups = plans[layer.index]!;
      for (let gi = 0; gi < groups.length; gi++) {
        const group = groups[gi]!;
        // Attention is final once every attention group is done (the router group changes the logits: recompute after).
        if (opts.trueSequential && !acts.hasAttention && group.modules.every((m) => m.kind !== 'attention'))
          await cacheAttention(layer, !groups.some((g, j) => j >= gi && g.name === 'router' && layerRuns[j]!.length > 0));
        const groupRuns = layerRuns[gi]!;
        if (groupRuns.length === 0) {
          done += batches.length;
          continue;
        }
        const all = groupRuns.flat();
        // q/k/v (MLA q_a/kv_a, q_b/kv_b) need only the attention's input projections; o_proj needs the attention.
        // Router and gate/up need only the FFN input and the routing (Qwen2-MoE's gated shared expert also needs its
        // gate, which the MoE graph computes); down needs the experts' hidden states, so the whole FFN runs.
        // One-pass runs see the unquantized layer (results are staged), whole.
        const ffnInputs = (group.name === 'router' || group.name === 'gate_up') && !(layer.ffn.kind === 'moe' && layer.ffn.shared?.gate);
        const mode = !opts.trueSequential ? 'layer' : group.name === 'o' ? 'attention' : all.every((m) => m.kind === 'attention') ? 'inputs' : ffnInputs ? 'ffn-inputs' : 'layer';
        for (const todo of groupRuns) {
          let hessians: LayerHessians;
          if (shared && groupRuns.length === 1) {
            hessians = shared;
            done += batches.length;
          } else {
            hessians = new LayerHessians(pool, spec, layer, new Set(todo.map((m) => m.hessian)), weightedOnly);
            opts.onPass?.({ layer: layer.index, group: group.name, ...expertHessians(hessians) });
            // A run of routed experts alone whose pass runs the FFN (down inputs) needs only those experts.
            const experts = [...new Set(todo.map((m) => m.expert))];
            const only = mode === 'layer' && layer.ffn.kind === 'moe' && experts.every((e) => e !== undefined) ? (experts as number[]) : undefined;
            await pass(layer, hessians, mode, only);
          }
          await solveRun(layer, todo, hessians, keep);
        }
        if (group.name === 'router') acts.clearAttention(); // router logits come from the attention graph
      }
      shared = null;
      for (const apply of staged) apply();
      if (!acts.hasAttention) await cacheAttention(layer, true);
      await pass(layer, null);
      acts.clearAttention();
      await onLayerDone(layer);
      opts.onLayer?.(layer.index);
      for (const group of groups) for (const m of group.modules) weights.deleteOverride(m.weight);
      forward.releaseLayer(layer);
      spill?.reset();
    }
  } finally {
    spill?.close();
    acts?.close();
  }
  return records;
}
