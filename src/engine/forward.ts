/**
 * The forward engine. Sequences of equal length are processed layer by layer ("layer-major"): for each decoder
 * layer, its weights are loaded once and every batch of tokens passes through it before the next layer starts.
 * That bounds memory by one layer's weights plus activations, and it is the order GPTQ-style calibration needs.
 *
 * Per layer and batch: attention graph (→ h, ffn_in, router logits) → routing in JS → dense or MoE graph (one run;
 * streaming models: experts chunk by chunk, then combine).
 * The routing seam: `hooks.selectionBias(layer)` adds a per-expert bias to selection, `hooks.onRouting(event)` sees
 * the FFN input rows, router logits and the routing used (selected experts, combine weights) of every batch.
 */
import * as ort from 'onnxruntime-node';
import { ropeTables } from '../architectures/_rope.js';
import type { LayerSpec, ModelSpec, MoeFfnSpec } from '../architectures/types.js';
import { fail } from '../errors.js';
import {
  buildAttentionGraph,
  buildAttentionInputsGraph,
  canFuseAttention,
  buildCombineGraph,
  buildDenseGraph,
  buildExpertsGraph,
  buildHeadGraph,
  buildMoeGraph,
  buildSharedExpertGraph,
} from '../graph/layer-graphs.js';
import { FLOAT_WEIGHTS, queryBlocks, type WeightForms } from '../graph/blocks.js';
import { tensor, type SessionPool } from '../graph/session.js';
import { dispatch, route, type Routing } from '../routing/router.js';
import { attentionWindow, causalMask, type AttentionOutputs, type ForwardHooks, type LayerStepContext, type RunOptions, type RunResult } from './forward-types.js';
import type { WeightStore } from './weights.js';
import { LayerActivations } from './activations.js';

export * from './forward-types.js';

/** Sequence indices of each batch of run(): whole sequences, at most batchTokens tokens (at least one sequence). */
export function sequenceBatches(N: number, S: number, batchTokens = 4096): number[][] {
  const perBatch = Math.max(1, Math.floor(batchTokens / S));
  const batches: number[][] = [];
  for (let i = 0; i < N; i += perBatch) batches.push(Array.from({ length: Math.min(perBatch, N - i) }, (_, j) => i + j));
  return batches;
}

/** How many units of work run() reports through onProgress: one per layer and batch, plus one per head batch. */
export function progressSteps(numLayers: number, N: number, S: number, opts: Pick<RunOptions, 'head' | 'batchTokens'>): number {
  const batches = sequenceBatches(N, S, opts.batchTokens).length;
  return numLayers * batches + (opts.head === 'none' ? 0 : batches);
}

export class ForwardEngine {
  /** Streaming models: float32 bytes of expert weights loaded at once (see expertChunks). */
  expertChunkBytes = 256 * 2 ** 20;
  /** Expert-major streaming (see expertMajorLayer): activation bytes one expert-chunk run may hold. */
  expertRunBytes = 256 * 2 ** 20;
  /** Expert-major streaming: bytes of FFN inputs held at once — batches beyond them read the experts again. */
  expertMajorBytes = 2 ** 30;
  /** Bytes of logits (and log-probabilities) the output head may materialise per onnxruntime run. */
  headBytes = 256 * 2 ** 20;
  /**
   * Full forwards on the CPU provider run attention (and MHA's RoPE) as onnxruntime's fused GroupQueryAttention
   * kernel; false uses the ONNX-op graph in query blocks (what GPUs, long sequences and KV-cache decoding run).
   */
  fusedAttention = true;
  /** Most bytes of attention scores the fused kernel may hold per run (see attentionSession). */
  fusedScoreBytes = 256 * 2 ** 20;

  constructor(
    readonly spec: ModelSpec,
    readonly pool: SessionPool,
    readonly weights: WeightStore,
  ) {}

  /** Linear weights of a layer by graph role (`q`, `router`, `expert.3.gate`, `shared.up`, `gate`, …). */
  linearRoles(layer: LayerSpec, part: 'attention' | 'ffn'): Map<string, string> {
    const roles = new Map<string, string>();
    if (part === 'attention') {
      for (const r of ['q', 'k', 'v', 'o', 'qA', 'qB', 'kvA', 'kvB']) if (layer.attention[r]) roles.set(r, layer.attention[r]!);
      if (layer.ffn.kind === 'moe') roles.set('router', layer.ffn.router);
      return roles;
    }
    const f = layer.ffn;
    if (f.kind === 'dense') {
      for (const r of ['gate', 'up', 'down'] as const) roles.set(r, f.tensors[r]);
      return roles;
    }
    return new Map([...this.chunkRoles(f, this.expertChunks(f).flat()), ...this.combineRoles(f)]);
  }

  /** Weight forms of the given roles (role → tensor), and a short key naming them (part of the session key). */
  private formsOf(roles: Map<string, string>): { forms: WeightForms; key: string } {
    const blocks = new Map<string, number>();
    for (const [role, name] of roles) {
      const b = this.weights.nbitsBlockSize(name);
      if (b !== null) blocks.set(role, b);
    }
    if (blocks.size === 0) return { forms: FLOAT_WEIGHTS, key: 'f32' };
    const key = [...blocks].map(([r, b]) => `${r}:${b}`).join(',');
    return { forms: (role) => (blocks.has(role) ? { kind: 'nbits', blockSize: blocks.get(role)! } : { kind: 'float' }), key: `nbits-${key}` };
  }

  /**
   * `seqLen`: tokens per sequence of a full (uncached) forward, `numTokens` of the whole batch. The fused kernel
   * holds [B, heads, S, S] float32 scores, so it runs only while those fit in `fusedScoreBytes`; beyond that (e.g.
   * 32 heads at seq-len 2048: 1 GiB per 4,096 tokens) attention runs in query blocks with [B, heads, rows, S] scores.
   */
  private attentionSession(layer: LayerSpec, withCache: boolean, capture: boolean, seqLen: number, numTokens: number) {
    const router = layer.ffn.kind === 'moe' ? { experts: layer.ffn.routing.numExperts, scoring: layer.ffn.routing.scoring } : null;
    const { forms, key } = this.formsOf(this.linearRoles(layer, 'attention'));
    const scoreBytes = numTokens * this.spec.attention.numHeads * seqLen * 4;
    const fused = this.fusedAttention && !withCache && this.pool.device === 'cpu' && canFuseAttention(this.spec) && scoreBytes <= this.fusedScoreBytes;
    const blocks = withCache || fused ? undefined : queryBlocks(seqLen, attentionWindow(this.spec));
    const shape = fused ? 'fused' : blocks && blocks.length > 1 ? `S${seqLen}` : 'S';
    return this.pool.get(`attn:${router?.experts}:${router?.scoring}:${withCache}:${capture}:${shape}:${key}`, () =>
      buildAttentionGraph(this.spec, { router, withCache, capture, forms, blocks, fused }),
    );
  }

  /**
   * Expert chunks of a MoE layer: all experts at once when the model is resident, otherwise as many as fit in
   * `expertChunkBytes` of float32 weights (at least one), so streaming peak memory does not scale with the expert count.
   */
  expertChunks(f: MoeFfnSpec): number[][] {
    const E = f.routing.numExperts;
    const perExpert = 3 * this.spec.hiddenSize * f.expertIntermediateSize * 4;
    const size = this.weights.resident ? E : Math.max(1, Math.min(E, Math.floor(this.expertChunkBytes / perExpert)));
    const chunks: number[][] = [];
    for (let e = 0; e < E; e += size) chunks.push(Array.from({ length: Math.min(size, E - e) }, (_, j) => e + j));
    return chunks;
  }

  /** Roles of a chunk's experts, named locally (`expert.<j>.gate`) as inside the chunk graph. */
  private chunkRoles(f: MoeFfnSpec, chunk: number[]): Map<string, string> {
    const roles = new Map<string, string>();
    chunk.forEach((e, j) => {
      for (const r of ['gate', 'up', 'down'] as const) roles.set(`expert.${j}.${r}`, f.expert(e)[r]);
    });
    return roles;
  }

  /** Roles of the combine graph (shared expert). */
  private combineRoles(f: MoeFfnSpec): Map<string, string> {
    const roles = new Map<string, string>();
    if (f.shared) {
      for (const r of ['gate', 'up', 'down'] as const) roles.set(`shared.${r}`, f.shared.tensors[r]);
      if (f.shared.gate) roles.set('shared.gateProj', f.shared.gate);
    }
    return roles;
  }

  private denseSession(f: LayerSpec['ffn'] & { kind: 'dense' }, layer: LayerSpec, capture: boolean) {
    const { forms, key } = this.formsOf(this.linearRoles(layer, 'ffn'));
    return this.pool.get(`dense:${f.intermediateSize}:${capture}:${key}`, () => buildDenseGraph(this.spec, f.intermediateSize, capture, forms));
  }

  /** Feed one weight by role: `w.<role>` (float32) or its MatMulNBits blobs. */
  private feedWeight(feeds: Record<string, ort.Tensor>, role: string, name: string): void {
    const block = this.weights.nbitsBlockSize(name);
    if (block === null) {
      feeds[`w.${role}`] = this.weightTensor(name);
      return;
    }
    const t = this.weights.nbits(name);
    feeds[`w.${role}.B`] = new ort.Tensor('uint8', t.B, [t.N, t.kBlocks, t.blockSize / 2]);
    feeds[`w.${role}.scales`] = tensor.f32(t.scales, [t.N, t.kBlocks]);
    feeds[`w.${role}.zp`] = new ort.Tensor('uint8', t.zeroPoints, [t.N, Math.ceil(t.kBlocks / 2)]);
  }

  /** Weight feeds of a layer's attention graph (norms, biases and linears). */
  private attentionFeeds(layer: LayerSpec): Record<string, ort.Tensor> {
    const feeds: Record<string, ort.Tensor> = {};
    const linears = this.linearRoles(layer, 'attention');
    for (const [role, name] of Object.entries(layer.attention)) if (!linears.has(role)) feeds[`w.${role}`] = this.weightTensor(name);
    for (const [role, name] of linears) this.feedWeight(feeds, role, name);
    return feeds;
  }

  private weightFeeds(roles: Map<string, string>): Record<string, ort.Tensor> {
    const feeds: Record<string, ort.Tensor> = {};
    for (const [role, name] of roles) this.feedWeight(feeds, role, name);
    return feeds;
  }

  private weightTensor(name: string): ort.Tensor {
    const data = this.weights.get(name);
    const shape = this.weights.shape(name);
    return tensor.f32(data, shape);
  }

  /** Run sequences (all of the same length) through the whole model. */
  async run(sequences: Int32Array[], opts: RunOptions): Promise<RunResult> {
    const spec = this.spec;
    const N = sequences.length;
    if (N === 0) throw fail('BAD_DATA', 'no sequences to run');
    const S = sequences[0]!.length;
    if (S === 0 || sequences.some((s) => s.length !== S)) throw fail('BAD_DATA', 'sequences must be non-empty and of equal length');
    for (const s of sequences)
      for (const id of s) if (id < 0 || id >= spec.vocabSize) throw fail('BAD_DATA', `token id ${id} is outside the vocabulary (${spec.vocabSize})`);
    const H = spec.hiddenSize;
    const batches = sequenceBatches(N, S, opts.batchTokens);
    const total = progressSteps(spec.numLayers, N, S, opts);
    let done = 0;
    const tick = () => opts.onProgress?.(++done, total);

    const acts = new LayerActivations(this, sequences, batches, H, opts.spillDir ?? null);
    try {
      return await this.runLayers(sequences, batches, acts, opts, tick);
    } finally {
      acts.close();
    }
  }

  private async runLayers(sequences: Int32Array[], batches: number[][], acts: LayerActivations, opts: RunOptions, tick: () => void): Promise<RunResult> {
    const spec = this.spec;
    const N = sequences.length;
    const S = sequences[0]!.length;
    const H = spec.hiddenSize;
    const common = this.sequenceContext(S);
    for (const layer of spec.layers) {
      if (this.runsExpertMajor(layer, opts.hooks)) {
        // Batches in groups whose FFN inputs fit expertMajorBytes: each group reads the layer's experts once.
        const perGroup = Math.max(1, Math.floor(this.expertMajorBytes / (batches[0]!.length * S * H * 4)));
        for (let b = 0; b < batches.length; b += perGroup) {
          const group = batches.slice(b, b + perGroup);
          const hidden = acts.x(b, group.length);
          await this.expertMajorLayer(layer as LayerSpec & { ffn: MoeFfnSpec }, hidden, group, b, S, common, opts.hooks, tick);
          acts.put(b, hidden, group.length);
        }
        await opts.hooks?.afterLayer?.(layer.index);
        this.releaseLayer(layer);
        continue;
      }
      for (let b = 0; b < batches.length; b++) {
        const rows = batches[b]!;
        const x = acts.x(b);
        await this.layerStep(layer, x, {
          ...common,
          bs: tensor.i64From([rows.length, S]),
          batchIndex: b,
          tokenOffset: rows[0]! * S,
          hooks: opts.hooks,
        });
        acts.put(b, x);
        tick();
      }
      await opts.hooks?.afterLayer?.(layer.index);
      this.releaseLayer(layer);
    }

    const result: RunResult = acts.all ? { hidden: acts.all } : {};
    if (opts.head !== 'none') {
      const head = await this.pool.get(`head:${opts.head}`, () => buildHeadGraph(spec, opts.head as 'logits' | 'nll'));
      const headWeights = { 'w.norm': this.weightTensor(spec.finalNorm), 'w.lmHead': this.weightTensor(spec.lmHead) };
      if (opts.head === 'logits') result.logits = new Float32Array(N * S * spec.vocabSize);
      else result.nll = new Float32Array(N * S);
      // The head materialises [rows × vocab] logits (twice with log-softmax): run it on row chunks of at most
      // headBytes so a 150k-token vocabulary does not need gigabytes per batch.
      const chunkRows = Math.max(1, Math.floor(this.headBytes / (spec.vocabSize * 4 * 2)));
      for (let b = 0; b < batches.length; b++) {
        const rows = batches[b]!;
        const T = rows.length * S;
        const start = rows[0]! * S;
        const hidden = acts.x(b);
        let targets: BigInt64Array | null = null;
        if (opts.head === 'nll') {
          targets = new BigInt64Array(T);
          rows.forEach((n, i) => {
            for (let s = 0; s + 1 < S; s++) targets![i * S + s] = BigInt(sequences[n]![s + 1]!);
          });
        }
        for (let r0 = 0; r0 < T; r0 += chunkRows) {
          const r1 = Math.min(T, r0 + chunkRows);
          const feeds: Record<string, ort.Tensor> = {
            ...headWeights,
            hidden: tensor.f32(hidden.subarray(r0 * H, r1 * H), [r1 - r0, H]),
          };
          if (targets) {
            feeds['targets'] = tensor.i64(targets.subarray(r0, r1), [r1 - r0]);
            result.nll!.set((await this.pool.run(head, feeds))['nll']!.data as Float32Array, start + r0);
          } else {
            result.logits!.set((await this.pool.run(head, feeds))['logits']!.data as Float32Array, (start + r0) * spec.vocabSize);
          }
        }
        if (targets) rows.forEach((_, i) => (result.nll![start + i * S + S - 1] = NaN));
        tick();
      }
      this.weights.release([spec.finalNorm, spec.lmHead]);
    }
    return result;
  }

  /**
   * Whether run() takes a layer expert-major (expertMajorLayer): a MoE layer whose experts stream from disk in
   * several chunks, without capture (capture events carry every expert's inputs of one batch at once).
   */
  private runsExpertMajor(layer: LayerSpec, hooks: ForwardHooks | undefined): boolean {
    return layer.ffn.kind === 'moe' && !hooks?.capture && this.expertChunks(layer.ffn).length > 1;
  }

  /**
   * A streaming MoE layer over consecutive batches (`firstBatch`…), expert-major: attention and routing batch by
   * batch (the routing seam sees the same events in the same order as layer steps), then each expert chunk is read
   * once and every token routed to it passes through, in segments of at most `expertRunBytes` of activations.
   * Batch-major order would read the layer's experts once per batch — at real sizes that reading took longer than
   * the expert GEMMs. Each expert's weighted output is added into the hidden rows as it comes (so the routed sum is
   * in expert order, not slot order: float rounding differs from the one-graph path), then the shared expert runs
   * per segment.
   */
  private async expertMajorLayer(
    layer: LayerSpec & { ffn: MoeFfnSpec },
    hidden: Float32Array,
    batches: number[][],
    firstBatch: number,
    S: number,
    common: { cos: ort.Tensor; sin: ort.Tensor; mask: ort.Tensor },
    hooks: ForwardHooks | undefined,
    tick: () => void,
  ): Promise<void> {
    const f = layer.ffn;
    const H = this.spec.hiddenSize;
    const E = f.routing.numExperts;
    // Token indices below are relative to the group's first token (`hidden`: the group's rows).
    const base = batches[0]![0]! * S;
    const ffnIn = new Float32Array(hidden.length);
    // Per expert, per batch: its token rows (global indices, ascending) and combine weights.
    const rowParts: Int32Array[][] = Array.from({ length: E }, () => []);
    const weightParts: Float32Array[][] = Array.from({ length: E }, () => []);
    for (let b = 0; b < batches.length; b++) {
      const rows = batches[b]!;
      const tokenOffset = rows[0]! * S - base;
      const x = hidden.subarray(tokenOffset * H, (tokenOffset + rows.length * S) * H);
      const ctx = { ...common, bs: tensor.i64From([rows.length, S]), batchIndex: firstBatch + b, tokenOffset: base + tokenOffset, hooks };
      const a = await this.attentionStep(layer, x, ctx);
      const ffnInBatch = a.ffnIn.data as Float32Array;
      const d = this.routeBatch(layer, a.routerLogits!, a.routerScores!, ctx.batchIndex, ctx.tokenOffset, ffnInBatch, hooks);
      x.set(a.h.data as Float32Array);
      ffnIn.set(ffnInBatch, tokenOffset * H);
      for (let e = 0; e < E; e++) {
        rowParts[e]!.push(d.rows[e]!.map((t) => t + tokenOffset));
        weightParts[e]!.push(d.rowWeights[e]!);
      }
    }
    const join = <T extends Int32Array | Float32Array>(parts: T[], make: (n: number) => T): T => {
      const out = make(parts.reduce((n, p) => n + p.length, 0));
      let o = 0;
      for (const p of parts) out.set(p, (o += p.length) - p.length);
      return out;
    };
    const expertRows = rowParts.map((p) => join(p, (n) => new Int32Array(n)));
    const expertWeights = weightParts.map((p) => join(p, (n) => new Float32Array(n)));

    // Token segments: activations of one chunk run (gathered inputs, gate/up/hidden, outputs) within expertRunBytes.
    const total = hidden.length / H;
    const chunks = this.expertChunks(f);
    const I = f.expertIntermediateSize;
    const rowsPerToken = (f.routing.numExpertsUsed * Math.max(...chunks.map((c) => c.length))) / E;
    const segment = Math.max(1, Math.floor(this.expertRunBytes / (rowsPerToken * (2 * H + 3 * I) * 4)));
    const segments: Array<[number, number]> = [];
    for (let t0 = 0; t0 < total; t0 += segment) segments.push([t0, Math.min(total, t0 + segment)]);
    // Where each expert's rows of a segment start (rows ascending: one cursor per expert).
    const cursor = new Int32Array(E);

    const batchEnds = batches.map((rows) => (rows[rows.length - 1]! + 1) * S - base);
    let ticked = 0;
    for (let c = 0; c < chunks.length; c++) {
      const chunk = chunks[c]!;
      const roles = this.chunkRoles(f, chunk);
      const { forms, key } = this.formsOf(roles);
      const session = await this.pool.get(`experts:${I}:${chunk.length}:false:${key}`, () => buildExpertsGraph(this.spec, f, chunk.length, false, forms));
      const weightFeeds = this.weightFeeds(roles);
      for (const e of chunk) cursor[e] = 0;
      for (const [t0, t1] of segments) {
        const feeds: Record<string, ort.Tensor> = { ...weightFeeds, ffn_in: tensor.f32(ffnIn.subarray(t0 * H, t1 * H), [t1 - t0, H]) };
        const spans = chunk.map((e, j) => {
          const all = expertRows[e]!;
          const from = cursor[e]!;
          let to = from;
          while (to < all.length && all[to]! < t1) to++;
          cursor[e] = to;
          feeds[`rows.${j}`] = tensor.i64From(all.subarray(from, to).map((t) => t - t0));
          return { e, from, to };
        });
        const y = (await this.pool.run(session, feeds))['y']!.data as Float32Array;
        let r = 0;
        for (const { e, from, to } of spans) {
          const rows = expertRows[e]!;
          const w = expertWeights[e]!;
          for (let n = from; n < to; n++, r++) {
            const wn = w[n]!;
            const dst = rows[n]! * H;
            const src = r * H;
            for (let i = 0; i < H; i++) hidden[dst + i] += wn * y[src + i]!;
          }
        }
        if (c === chunks.length - 1) while (ticked < batches.length && batchEnds[ticked]! <= t1) ticked++, tick();
      }
      this.weights.release(roles.values());
    }
    if (f.shared) {
      const roles = this.combineRoles(f);
      const { forms, key } = this.formsOf(roles);
      const session = await this.pool.get(`shared:${f.shared.intermediateSize}:${!!f.shared.gate}:${key}`, () => buildSharedExpertGraph(this.spec, f, forms));
      const weightFeeds = this.weightFeeds(roles);
      for (const [t0, t1] of segments) {
        const h = hidden.subarray(t0 * H, t1 * H);
        const out = await this.pool.run(session, { ...weightFeeds, h: tensor.f32(h, [t1 - t0, H]), ffn_in: tensor.f32(ffnIn.subarray(t0 * H, t1 * H), [t1 - t0, H]) });
        h.set(out['out']!.data as Float32Array);
      }
    }
    while (ticked < batches.length) ticked++, tick();
  }

  /**
   * One decoder layer for one batch: x [T × hidden] is replaced by the layer's output. With `past` (a position-major
   * KV cache), attention also sees the cached keys and the new tokens' keys/values are returned for the caller to append.
   */
  async layerStep(layer: LayerSpec, x: Float32Array, ctx: LayerStepContext): Promise<{ newKey?: ort.Tensor; newValue?: ort.Tensor }> {
    const a = await this.attentionStep(layer, x, ctx);
    if (ctx.attentionOnly) {
      if (ctx.hooks?.capture && ctx.hooks.onActivations) {
        const inputs: Record<string, Float32Array> = { ffn: a.ffnIn.data as Float32Array, ...a.captured };
        await ctx.hooks.onActivations({ layerIndex: layer.index, batchIndex: ctx.batchIndex, tokenOffset: ctx.tokenOffset, numTokens: a.numTokens, inputs });
      }
      return {};
    }
    await this.ffnStep(layer, x, a, ctx);
    return ctx.past ? { newKey: a.newKey, newValue: a.newValue } : {};
  }

  /** Inputs of the attention's first linears only (`attn`, MLA `qB`, `kvB`), without computing attention. */
  async attentionInputs(layer: LayerSpec, x: Float32Array): Promise<Record<string, Float32Array>> {
    const H = this.spec.hiddenSize;
    const session = await this.pool.get('attn_inputs', () => buildAttentionInputsGraph(this.spec));
    const feeds: Record<string, ort.Tensor> = { hidden: tensor.f32(x, [x.length / H, H]) };
    for (const role of ['inputNorm', 'qA', 'qANorm', 'kvA', 'kvANorm']) {
      const name = layer.attention[role];
      if (name && (role === 'inputNorm' || this.spec.attention.kind === 'mla')) feeds[`w.${role}`] = this.weightTensor(name);
    }
    const out = await this.pool.run(session, feeds);
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k.slice(3), v.data as Float32Array]));
  }

  /** The attention half of a layer: h = x + Attn(norm(x)), ffn_in = norm(h), router logits, captured inputs. */
  async attentionStep(layer: LayerSpec, x: Float32Array, ctx: LayerStepContext): Promise<AttentionOutputs> {
    const H = this.spec.hiddenSize;
    const T = x.length / H;
    const capture = Boolean(ctx.hooks?.capture);
    const attn = await this.attentionSession(layer, ctx.past !== undefined, capture, ctx.mask.dims[0]!, T);
    const attnFeeds: Record<string, ort.Tensor> = {
      ...this.attentionFeeds(layer),
      cos: ctx.cos,
      sin: ctx.sin,
      mask: ctx.mask,
      bs: ctx.bs,
      hidden: tensor.f32(x, [T, H]),
    };
    if (ctx.past) Object.assign(attnFeeds, { past_key: ctx.past.key, past_value: ctx.past.value });
    const a = await this.pool.run(attn, attnFeeds);
    const captured: Record<string, Float32Array> = {};
    for (const [key, value] of Object.entries(a)) if (key.startsWith('in.')) captured[key.slice(3)] = value.data as Float32Array;
    return {
      numTokens: T,
      h: a['h']!,
      ffnIn: a['ffn_in']!,
      routerLogits: a['router_logits'] ? (a['router_logits'].data as Float32Array) : null,
      routerScores: a['router_scores'] ? (a['router_scores'].data as Float32Array) : null,
      captured,
      newKey: a['new_key'],
      newValue: a['new_value'],
    };
  }

  /**
   * The FFN half: routes (MoE), runs experts (chunk by chunk) or the dense MLP, writes the layer output into x.
   * With ctx.ffnInputsOnly it routes and reports the FFN input (and routing) to the hooks, runs nothing else and
   * leaves x unchanged.
   */
  async ffnStep(layer: LayerSpec, x: Float32Array, a: AttentionOutputs, ctx: LayerStepContext): Promise<void> {
    const capture = Boolean(ctx.hooks?.capture);
    const ffnIn = a.ffnIn.data as Float32Array;
    const inputs: Record<string, Float32Array> = { ffn: ffnIn, ...a.captured };
    const f = layer.ffn;
    let out: ort.InferenceSession.ReturnType | null = null;
    let moe: ReturnType<ForwardEngine['moeFeeds']> | undefined;
    if (f.kind === 'dense') {
      ctx.hooks?.onDenseFfn?.({ layerIndex: layer.index, batchIndex: ctx.batchIndex, tokenOffset: ctx.tokenOffset, ffnIn });
      if (!ctx.ffnInputsOnly) {
        const session = await this.denseSession(f, layer, capture);
        out = await this.pool.run(session, { ...this.weightFeeds(this.linearRoles(layer, 'ffn')), h: a.h, ffn_in: a.ffnIn });
        if (capture) inputs['dense.down'] = out['in.down']!.data as Float32Array;
      }
    } else {
      moe = this.moeFeeds(layer as LayerSpec & { ffn: MoeFfnSpec }, a.routerLogits!, a.routerScores!, ctx.batchIndex, ctx.tokenOffset, ffnIn, ctx.hooks);
      if (ctx.onlyExperts) {
        // Each expert's subgraph is the same in every experts/MoE graph: its inputs and outputs do not depend on
        // which other experts run with it.
        const size = this.expertChunks(f)[0]!.length;
        for (let i = 0; i < ctx.onlyExperts.length; i += size) {
          const piece = ctx.onlyExperts.slice(i, i + size);
          const roles = this.chunkRoles(f, piece);
          const { forms, key } = this.formsOf(roles);
          const session = await this.pool.get(`experts:${f.expertIntermediateSize}:${piece.length}:${capture}:${key}`, () =>
            buildExpertsGraph(this.spec, f, piece.length, capture, forms),
          );
          const feeds: Record<string, ort.Tensor> = { ...this.weightFeeds(roles), ffn_in: a.ffnIn };
          piece.forEach((e, j) => (feeds[`rows.${j}`] = moe!.rowFeeds[e]!));
          const y = await this.pool.run(session, feeds);
          if (capture) piece.forEach((e, j) => (inputs[`expert.${e}.down`] = y[`in.expert.${j}.down`]!.data as Float32Array));
          this.weights.release(roles.values());
        }
      } else if (!ctx.ffnInputsOnly) {
        const chunks = this.expertChunks(f);
        const croles = this.combineRoles(f);
        const capturedExperts = (y: ort.InferenceSession.ReturnType, chunk: number[]) => {
          if (capture) chunk.forEach((e, j) => (inputs[`expert.${e}.down`] = y[`in.expert.${j}.down`]!.data as Float32Array));
        };
        if (chunks.length === 1) {
          // All experts at hand: experts, combine and shared expert in one run.
          const roles = this.linearRoles(layer, 'ffn');
          const { forms, key } = this.formsOf(roles);
          const session = await this.pool.get(
            `moe:${f.routing.numExperts}:${f.expertIntermediateSize}:${f.routing.numExpertsUsed}:${f.shared?.intermediateSize}:${!!f.shared?.gate}:${capture}:${key}`,
            () => buildMoeGraph(this.spec, f, capture, forms),
          );
          const feeds: Record<string, ort.Tensor> = { ...this.weightFeeds(roles), ...moe.feeds, h: a.h, ffn_in: a.ffnIn };
          chunks[0]!.forEach((e, j) => (feeds[`rows.${j}`] = moe!.rowFeeds[e]!));
          out = await this.pool.run(session, feeds);
          capturedExperts(out, chunks[0]!);
        } else {
          const H = this.spec.hiddenSize;
          const parts: Float32Array[] = [];
          for (const chunk of chunks) {
            const roles = this.chunkRoles(f, chunk);
            const { forms, key } = this.formsOf(roles);
            const session = await this.pool.get(`experts:${f.expertIntermediateSize}:${chunk.length}:${capture}:${key}`, () =>
              buildExpertsGraph(this.spec, f, chunk.length, capture, forms),
            );
            const feeds: Record<string, ort.Tensor> = { ...this.weightFeeds(roles), ffn_in: a.ffnIn };
            chunk.forEach((e, j) => (feeds[`rows.${j}`] = moe!.rowFeeds[e]!));
            const y = await this.pool.run(session, feeds);
            parts.push(y['y']!.data as Float32Array);
            capturedExperts(y, chunk);
            this.weights.release(roles.values());
          }
          const all = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
          let o = 0;
          for (const p of parts) all.set(p, (o += p.length) - p.length);
          const { forms, key } = this.formsOf(croles);
          const combine = await this.pool.get(
            `combine:${f.routing.numExpertsUsed}:${f.shared?.intermediateSize}:${!!f.shared?.gate}:${capture}:${key}`,
            () => buildCombineGraph(this.spec, f, capture, forms),
          );
          out = await this.pool.run(combine, {
            ...this.weightFeeds(croles),
            ...moe.feeds,
            h: a.h,
            ffn_in: a.ffnIn,
            y: tensor.f32(all, [all.length / H, H]),
          });
        }
        if (capture && out['in.shared.down']) inputs['shared.down'] = out['in.shared.down'].data as Float32Array;
        if (capture && out['shared_gate']) inputs['shared_gate'] = out['shared_gate'].data as Float32Array;
      }
    }
    if (capture && ctx.hooks?.onActivations) {
      await ctx.hooks.onActivations({
        layerIndex: layer.index,
        batchIndex: ctx.batchIndex,
        tokenOffset: ctx.tokenOffset,
        numTokens: a.numTokens,
        inputs,
        routing: moe?.routing,
        rows: moe?.rows,
        rowWeights: moe?.rowWeights,
      });
    }
    if (out) x.set(out['out']!.data as Float32Array);
  }

  /** Embedding rows of every token of every sequence [N·S × hidden] (row reads; never the whole table unless resident). */
  embed(sequences: Int32Array[]): Float32Array {
    const { spec } = this;
    const H = spec.hiddenSize;
    const S = sequences[0]!.length;
    const hidden = new Float32Array(sequences.length * S * H);
    sequences.forEach((seq, n) => seq.forEach((id, s) => hidden.set(this.weights.rows(spec.embedTokens, id, 1), (n * S + s) * H)));
    return hidden;
  }

  /** RoPE tables and causal mask for full sequences of length S starting at position 0. */
  sequenceContext(S: number): { cos: ort.Tensor; sin: ort.Tensor; mask: ort.Tensor } {
    const { cos, sin } = ropeTables(this.spec.attention.rope, 0, S);
    const d = this.spec.attention.rope.dim;
    return { cos: tensor.f32(cos, [S, d]), sin: tensor.f32(sin, [S, d]), mask: tensor.f32(causalMask(S, 0, attentionWindow(this.spec)), [S, S]) };
  }

  /** Let go of a layer's weights (no-op when the model is resident). */
  releaseLayer(layer: LayerSpec): void {
    this.weights.release([...Object.values(layer.attention), ...this.ffnTensorNames(layer)]);
  }

  /** Final norm + lm_head for hidden rows [T × hidden] → logits [T × vocab]. */
  async logits(hidden: Float32Array): Promise<Float32Array> {
    const H = this.spec.hiddenSize;
    const head = await this.pool.get('head:logits', () => buildHeadGraph(this.spec, 'logits'));
    const out = await this.pool.run(head, {
      'w.norm': this.weightTensor(this.spec.finalNorm),
      'w.lmHead': this.weightTensor(this.spec.lmHead),
      hidden: tensor.f32(hidden, [hidden.length / H, H]),
    });
    return out['logits']!.data as Float32Array;
  }

  /** Final norm + lm_head + log-softmax for hidden rows [T × hidden] → each row's k most likely tokens, descending. */
  async topLogProbs(hidden: Float32Array, k: number): Promise<{ logp: Float32Array; ids: Int32Array; k: number }> {
    const H = this.spec.hiddenSize;
    const kk = Math.min(k, this.spec.vocabSize);
    const head = await this.pool.get('head:top', () => buildHeadGraph(this.spec, 'top'));
    const out = await this.pool.run(head, {
      'w.norm': this.weightTensor(this.spec.finalNorm),
      'w.lmHead': this.weightTensor(this.spec.lmHead),
      hidden: tensor.f32(hidden, [hidden.length / H, H]),
      k: tensor.i64From([kk]),
    });
    return { logp: out['logp']!.data as Float32Array, ids: Int32Array.from(out['ids']!.data as BigInt64Array, Number), k: kk };
  }

  private ffnTensorNames(layer: LayerSpec): string[] {
    const f = layer.ffn;
    if (f.kind === 'dense') return Object.values(f.tensors);
    const names = [f.router];
    if (f.correctionBias) names.push(f.correctionBias);
    for (let e = 0; e < f.routing.numExperts; e++) names.push(...Object.values(f.expert(e)));
    if (f.shared) names.push(...Object.values(f.shared.tensors), ...(f.shared.gate ? [f.shared.gate] : []));
    return names;
  }

  /** Route a batch (with the hooks' selection bias, reporting to onRouting) and group its tokens by expert. */
  private routeBatch(
    layer: LayerSpec & { ffn: MoeFfnSpec },
    logits: Float32Array,
    scores: Float32Array,
    batchIndex: number,
    tokenOffset: number,
    ffnIn: Float32Array,
    hooks: ForwardHooks | undefined,
  ): { routing: Routing } & ReturnType<typeof dispatch> {
    const f = layer.ffn;
    const routing = route(f.routing, logits, {
      scores,
      correctionBias: f.correctionBias ? this.weights.get(f.correctionBias) : null,
      selectionBias: hooks?.selectionBias?.(layer.index) ?? null,
    });
    hooks?.onRouting?.({ layerIndex: layer.index, batchIndex, tokenOffset, ffnIn, routerLogits: logits, routing });
    return { routing, ...dispatch(routing) };
  }

  /** Route a batch and build the MoE graph's routing feeds. */
  private moeFeeds(
    layer: LayerSpec & { ffn: MoeFfnSpec },
    logits: Float32Array,
    scores: Float32Array,
    batchIndex: number,
    tokenOffset: number,
    ffnIn: Float32Array,
    hooks: ForwardHooks | undefined,
  ): { feeds: Record<string, ort.Tensor>; rowFeeds: ort.Tensor[]; routing: Routing; rows: Int32Array[]; rowWeights: Float32Array[] } {
    const { routing, rows, rowWeights, combinePos } = this.routeBatch(layer, logits, scores, batchIndex, tokenOffset, ffnIn, hooks);
    const feeds: Record<string, ort.Tensor> = {
      combine_pos: tensor.i64From(combinePos, [routing.numTokens, routing.k]),
      combine_w: tensor.f32(routing.weights, [routing.numTokens, routing.k]),
    };
    return { feeds, rowFeeds: rows.map((r) => tensor.i64From(r)), routing, rows, rowWeights };
  }
}
