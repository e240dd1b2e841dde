/**
 * The ONNX graphs the engine runs, one per distinct layer *shape* (weights are inputs, so all layers of a model
 * share them):
 *   attention: hidden → h = hidden + Attn(norm(hidden)), ffn_in = norm(h), router_logits (MoE layers), present k/v
 *   dense:     h, ffn_in → h + MLP(ffn_in)
 *   moe:       h, ffn_in, per-expert rows and combine positions/weights → h + Σ w·Expert(ffn_in) (+ shared expert);
 *              streaming models run it in two parts: experts (chunk by chunk) → y, then combine
 *   head:      hidden → logits, per-token NLL of given targets, or the k most likely tokens
 *   head_kl:   two models' hidden states → per-token KL divergence, both NLLs and argmaxes (eval --reference)
 * Input names starting with "w." are weights; the engine feeds them by role.
 */
import type { MhaSpec, MlaSpec, ModelSpec, MoeFfnSpec } from '../architectures/types.js';
import { attr, GraphBuilder, OnnxType } from './builder.js';
import { concatTree, FLOAT_WEIGHTS, linear, type AttentionBlock, mergeHeads, projection, repeatKv, rmsNorm, rope, scaledDotAttention, splitHeads, swiglu, type WeightForms } from './blocks.js';

const F = OnnxType.FLOAT;
const I64 = OnnxType.INT64;

export interface AttentionGraphOptions {
  /**
   * MoE layers: the router's expert count and scoring; the graph then also outputs router_logits and router_scores
   * (softmax or sigmoid of the logits, float32), which spares route() a Math.exp per token and expert.
   */
  router: { experts: number; scoring: 'softmax' | 'sigmoid' } | null;
  /** Take past_key/past_value inputs and emit new_key/new_value (incremental decoding, see cachedAttention). */
  withCache: boolean;
  /** Also output the input of every linear (`in.attn`, `in.o`, MLA `in.qB`, `in.kvB`) for calibration. */
  capture?: boolean;
  /** Weight form per role (default: all float32). */
  forms?: WeightForms;
  /** Without cache: compute attention in these query blocks (the graph is then specific to one sequence length). */
  blocks?: AttentionBlock[];
  /**
   * Without cache (see canFuseAttention): run causal (sliding-window) attention, and MHA's RoPE, as onnxruntime's
   * fused CPU GroupQueryAttention kernel (see fusedAttention). Only for the CPU provider: the CUDA kernel is fp16-only.
   */
  fused?: boolean;
}

/** Whether buildAttentionGraph can use the fused kernel for this attention (MLA, or MHA with RoPE over the whole head). */
export function canFuseAttention(spec: ModelSpec): boolean {
  const a = spec.attention;
  return a.kind === 'mla' || a.rope.dim === a.headDim;
}

/** Common inputs of attention graphs. */
function attentionInputs(g: GraphBuilder, spec: ModelSpec, rotDim: number) {
  const H = spec.hiddenSize;
  return {
    hidden: g.input('hidden', F, ['T', H]),
    bs: g.input('bs', I64, [2]),
    cos: g.input('cos', F, ['S', rotDim]),
    sin: g.input('sin', F, ['S', rotDim]),
    mask: g.input('mask', F, ['S', 'L']),
    inputNorm: g.input('w.inputNorm', F, [H]),
    postNorm: g.input('w.postAttentionNorm', F, [H]),
  };
}

function mhaCore(g: GraphBuilder, spec: ModelSpec, a: MhaSpec, x: string, io: ReturnType<typeof attentionInputs>, withCache: boolean, forms: WeightForms, blocks?: AttentionBlock[], fused = false) {
  const H = spec.hiddenSize;
  const { numHeads, numKvHeads, headDim } = a;
  const w = (role: string, dims: number[]) => g.input(`w.${role}`, F, dims);
  const bias = (role: string, n: number) => (a.qkvBias ? w(role, [n]) : undefined);
  let q = projection(g, x, 'q', numHeads * headDim, H, forms, bias('qBias', numHeads * headDim));
  let k = projection(g, x, 'k', numKvHeads * headDim, H, forms, bias('kBias', numKvHeads * headDim));
  let v = projection(g, x, 'v', numKvHeads * headDim, H, forms, bias('vBias', numKvHeads * headDim));
  if (a.qkNorm === 'full') {
    q = rmsNorm(g, q, w('qNorm', [numHeads * headDim]), spec.rmsNormEps);
    k = rmsNorm(g, k, w('kNorm', [numKvHeads * headDim]), spec.rmsNormEps);
  }
  if (a.clipQkv !== null) {
    const [lo, hi] = [g.f32([-a.clipQkv], []), g.f32([a.clipQkv], [])];
    [q, k, v] = [q, k, v].map((t) => g.op('Clip', [t, lo, hi])) as [string, string, string];
  }
  if (fused && !withCache) {
    if (a.qkNorm === 'per_head') {
      const perHead = (t: string, heads: number, role: string) =>
        g.op('Reshape', [rmsNorm(g, g.op('Reshape', [t, g.i64([-1, headDim])]), w(role, [headDim]), spec.rmsNormEps), g.i64([-1, heads * headDim])]);
      q = perHead(q, numHeads, 'qNorm');
      k = perHead(k, numKvHeads, 'kNorm');
    }
    const bsd = (heads: number) => g.op('Concat', [io.bs, g.i64([heads * headDim])], { axis: attr.i(0) });
    const [q3, k3, v3] = [q, k, v].map((t, i) => g.op('Reshape', [t, bsd(i === 0 ? numHeads : numKvHeads)]));
    const out = fusedAttention(g, q3!, k3!, v3!, io, {
      heads: numHeads,
      kvHeads: numKvHeads,
      headSize: headDim,
      scale: a.softmaxScale,
      window: a.slidingWindow,
      rotary: { interleaved: a.rope.layout === 'interleaved' },
    });
    const oIn = g.op('Reshape', [out, g.i64([-1, numHeads * headDim])]);
    const o = projection(g, oIn, 'o', H, numHeads * headDim, forms, a.oBias ? w('oBias', [H]) : undefined);
    return { o, captured: { 'in.o': [oIn, numHeads * headDim] as [string, number] } };
  }
  let q4 = splitHeads(g, q, io.bs, numHeads, headDim);
  let k4 = splitHeads(g, k, io.bs, numKvHeads, headDim);
  let v4 = splitHeads(g, v, io.bs, numKvHeads, headDim);
  if (a.qkNorm === 'per_head') {
    q4 = rmsNorm(g, q4, w('qNorm', [headDim]), spec.rmsNormEps);
    k4 = rmsNorm(g, k4, w('kNorm', [headDim]), spec.rmsNormEps);
  }
  const rot = a.rope.dim;
  const ropeHeads = (t: string) => {
    if (rot === headDim) return rope(g, t, io.cos, io.sin, rot, a.rope.layout);
    const [r, pass] = g.opN('Split', [t, g.i64([rot, headDim - rot])], 2, { axis: attr.i(-1) });
    return g.op('Concat', [rope(g, r!, io.cos, io.sin, rot, a.rope.layout), pass!], { axis: attr.i(-1) });
  };
  q4 = ropeHeads(q4);
  k4 = ropeHeads(k4);
  const rep = numHeads / numKvHeads;
  const out = withCache
    ? cachedAttention(g, q4, k4, v4, io.mask, numKvHeads, rep, headDim, headDim, a.softmaxScale)
    : scaledDotAttention(g, q4, repeatKv(g, k4, numKvHeads, rep, headDim), repeatKv(g, v4, numKvHeads, rep, headDim), io.mask, a.softmaxScale, blocks);
  const oIn = mergeHeads(g, out, numHeads, headDim);
  const o = projection(g, oIn, 'o', H, numHeads * headDim, forms, a.oBias ? w('oBias', [H]) : undefined);
  return { o, captured: { 'in.o': [oIn, numHeads * headDim] as [string, number] } };
}

/**
 * MLA's low-rank latents of the normed layer input x: the q_b input (normed q_a; null without q_lora_rank), the kv_b
 * input (normed compressed kv) and the shared RoPE key part [T, rot]. HF DeepSeek's inner norms (q_a_layernorm,
 * kv_a_layernorm) use the RMSNorm default eps 1e-6.
 */
function mlaLatents(g: GraphBuilder, H: number, a: MlaSpec, x: string, forms: WeightForms): { qBIn: string | null; kvBIn: string; kPe2d: string } {
  const innerEps = 1e-6;
  const w = (role: string, dims: number[]) => g.input(`w.${role}`, F, dims);
  const qBIn = a.qLoraRank === null ? null : rmsNorm(g, projection(g, x, 'qA', a.qLoraRank, H, forms), w('qANorm', [a.qLoraRank]), innerEps);
  const r = a.kvLoraRank;
  const [c, kPe2d] = g.opN('Split', [projection(g, x, 'kvA', r + a.qkRopeHeadDim, H, forms), g.i64([r, a.qkRopeHeadDim])], 2, { axis: attr.i(-1) });
  return { qBIn, kvBIn: rmsNorm(g, c!, w('kvANorm', [r]), innerEps), kPe2d: kPe2d! };
}

function mlaCore(g: GraphBuilder, spec: ModelSpec, a: MlaSpec, x: string, io: ReturnType<typeof attentionInputs>, withCache: boolean, forms: WeightForms, blocks?: AttentionBlock[], fused = false) {
  const H = spec.hiddenSize;
  const { numHeads: nH, qkNopeHeadDim: nope, qkRopeHeadDim: rot, vHeadDim: dv, kvLoraRank: r } = a;
  const dq = nope + rot;
  const captured: Record<string, [string, number]> = {};
  // Heads layout: [B, heads, S, d] for our attention ops, [B, S, heads, d] (no transposes) for the fused kernel.
  fused = fused && !withCache;
  const heads = (t: string, n: number, d: number) => (fused ? g.op('Reshape', [t, g.op('Concat', [io.bs, g.i64([n, d])], { axis: attr.i(0) })]) : splitHeads(g, t, io.bs, n, d));
  // Fused: onnxruntime's RotaryEmbedding kernel on [B, S, n, rot]; it rotates interleaved pairs in place, where
  // transformers de-interleaves first — q·k is the same, and the Transpose that de-interleaving takes cost more
  // than the attention itself (98 ms of tiny-deepseek-v3's 40 × 256-token forward).
  const ropeHeads = fused ? (t: string, n: number) => rotaryKernel(g, t, io, n, rot, a.rope.layout) : (t: string) => rope(g, t, io.cos, io.sin, rot, a.rope.layout);
  const { qBIn, kvBIn, kPe2d } = mlaLatents(g, H, a, x, forms);
  let q: string;
  if (qBIn === null) q = projection(g, x, 'q', nH * dq, H, forms);
  else {
    captured['in.qB'] = [qBIn, a.qLoraRank!];
    q = projection(g, qBIn, 'qB', nH * dq, a.qLoraRank!, forms);
  }
  const [qNope, qPe] = g.opN('Split', [heads(q, nH, dq), g.i64([nope, rot])], 2, { axis: attr.i(-1) });
  captured['in.kvB'] = [kvBIn, r];
  const kv = projection(g, kvBIn, 'kvB', nH * (nope + dv), r, forms);
  const [kNope, v4] = g.opN('Split', [heads(kv, nH, nope + dv), g.i64([nope, dv])], 2, { axis: attr.i(-1) });
  const kPe = ropeHeads(heads(kPe2d, 1, rot), 1);
  const qFull = g.op('Concat', [qNope!, ropeHeads(qPe!, nH)], { axis: attr.i(-1) });
  const kFull = g.op('Concat', [kNope!, g.op('Expand', [kPe, g.i64(fused ? [1, 1, nH, 1] : [1, nH, 1, 1])])], { axis: attr.i(-1) });
  let oIn: string;
  if (fused) {
    // The kernel has one head size: zero-pad the narrower of q·k (dq) and v (dv); zeros add nothing to q·k, and
    // padded v columns are sliced off the output.
    const d = Math.max(dq, dv);
    const pad = (t: string, from: number) => (from === d ? t : g.op('Pad', [t, g.i64([0, 0, 0, 0, 0, 0, 0, d - from])]));
    const merge = (t: string) => g.op('Reshape', [t, g.i64([0, 0, nH * d])]);
    const out = fusedAttention(g, merge(pad(qFull, dq)), merge(pad(kFull, dq)), merge(pad(v4!, dv)), io, {
      heads: nH,
      kvHeads: nH,
      headSize: d,
      scale: a.softmaxScale,
      window: null,
      rotary: null,
    });
    let perHead = g.op('Reshape', [out, g.i64([-1, nH, d])]);
    if (d !== dv) perHead = g.op('Slice', [perHead, g.i64([0]), g.i64([dv]), g.i64([2])]);
    oIn = g.op('Reshape', [perHead, g.i64([-1, nH * dv])]);
  } else {
    const out = withCache
      ? cachedAttention(g, qFull, kFull, v4!, io.mask, nH, 1, dq, dv, a.softmaxScale)
      : scaledDotAttention(g, qFull, kFull, v4!, io.mask, a.softmaxScale, blocks);
    oIn = mergeHeads(g, out, nH, dv);
  }
  captured['in.o'] = [oIn, nH * dv];
  const o = projection(g, oIn, 'o', H, nH * dv, forms);
  return { o, captured };
}

/** RoPE over x [B, S, n, rot] (positions 0…S−1) with com.microsoft RotaryEmbedding; same shape out. */
function rotaryKernel(g: GraphBuilder, x: string, io: ReturnType<typeof attentionInputs>, n: number, rot: number, layout: 'rotate_half' | 'interleaved'): string {
  const half = (t: string) => g.op('Slice', [t, g.i64([0]), g.i64([rot / 2]), g.i64([1])]);
  const flat = g.op('Reshape', [x, g.i64([0, 0, n * rot])]);
  const out = g.msOp('RotaryEmbedding', [flat, g.i64([0], [1]), half(io.cos), half(io.sin)], {
    interleaved: attr.i(layout === 'interleaved' ? 1 : 0),
    num_heads: attr.i(n),
  });
  return g.op('Reshape', [out, g.i64([0, 0, n, rot])]);
}

/** What the fused kernel needs to know besides q, k, v. */
interface FusedAttentionSpec {
  heads: number;
  kvHeads: number;
  /** Per-head width of q, k and v alike (the kernel has one head size). */
  headSize: number;
  scale: number;
  /** transformers' sliding_window (null: full causal). */
  window: number | null;
  /** Rotate q and k in the kernel (MHA with RoPE over the whole head); null when the graph already did. */
  rotary: { interleaved: boolean } | null;
}

/**
 * (RoPE +) causal, optionally sliding-window, grouped-query attention as one com.microsoft GroupQueryAttention node:
 * q [B, S, heads·d], k/v [B, S, kvHeads·d] → [B, S, heads·d] (heads merged). On CPU it rotates in place, shares K/V
 * across a group without copies and softmaxes only the visible keys of each row (it still multiplies q·k for all
 * S keys): tiny-mixtral's attention graphs take 94 instead of 131 ms per 40 × 256 tokens.
 * Only the output is requested: asking for present_key/present_value too moves the CPU kernel off its flash path
 * and makes it 2.8× slower (B = 4, S = 256). That also rules out chaining causal key blocks per sequence through
 * past/present: 1.5× slower at S = 256, 15% faster at S = 2048 (one thread, measured).
 */
function fusedAttention(g: GraphBuilder, q: string, k: string, v: string, io: ReturnType<typeof attentionInputs>, f: FusedAttentionSpec): string {
  // Every sequence is complete and starts at position 0: total length S, seqlens_k = S − 1 for each of the B rows.
  const total = g.op('Cast', [g.op('Gather', [io.bs, g.i64([1], [])], { axis: attr.i(0) })], { to: attr.i(OnnxType.INT32) });
  const seqlensK = g.op('Expand', [g.op('Sub', [total, g.i32([1], [])]), g.op('Slice', [io.bs, g.i64([0]), g.i64([1])])]);
  // Our cos/sin tables are [S, d] in rotate_half layout (both halves equal); the kernel takes [S, d/2].
  const half = (t: string) => g.op('Slice', [t, g.i64([0]), g.i64([f.headSize / 2]), g.i64([1])]);
  const rotary = f.rotary ? [half(io.cos), half(io.sin)] : [];
  return g.msOp('GroupQueryAttention', [q, k, v, '', '', seqlensK, total, ...rotary], {
    num_heads: attr.i(f.heads),
    kv_num_heads: attr.i(f.kvHeads),
    scale: attr.f(f.scale),
    do_rotary: attr.i(f.rotary ? 1 : 0),
    rotary_interleaved: attr.i(f.rotary?.interleaved ? 1 : 0),
    // Same count as transformers' sliding_window in onnxruntime 1.30 (keys j with i − j < w; checked against
    // transformers in test/engine/sliding-window.test.ts — older kernels counted one more).
    local_window_size: attr.i(f.window ?? -1),
  });
}

/**
 * Attention of S new tokens over a KV cache (incremental decoding). The caller owns the cache: past_key
 * [B, kvHeads, C, dk] and past_value [B, kvHeads, C, dv], preallocated with capacity C ≥ the cached length P, and
 * the mask [S, C + S] hides the unused capacity (columns P…C−1) besides the causal / sliding-window rule. The new
 * tokens' keys and values are returned (new_key, new_value: [B, kvHeads, S, d]) for the caller to write at
 * positions P…P+S−1. The cache itself is never copied: scores against it and against the new keys are computed
 * apart and joined (small: [B, heads, S, C + S]); queries of the heads sharing a kv head are stacked as rows
 * ([B, kvHeads, rep·S, d]) instead of repeating keys and values rep times.
 */
function cachedAttention(g: GraphBuilder, q: string, k: string, v: string, mask: string, kvHeads: number, rep: number, dk: number, dv: number, scale: number): string {
  const pastK = g.input('past_key', F, ['B', kvHeads, 'C', dk]);
  const pastV = g.input('past_value', F, ['B', kvHeads, 'C', dv]);
  g.output('new_key', k, F, ['B', kvHeads, 'S', dk]);
  g.output('new_value', v, F, ['B', kvHeads, 'S', dv]);
  const grouped = g.op('Reshape', [q, g.i64([0, kvHeads, -1, dk])]); // [B, kvHeads, rep·S, dk]; head h = kv·rep + r
  const t = (x: string) => g.op('Transpose', [x], { perm: attr.ints([0, 1, 3, 2]) });
  const scores = g.op('Concat', [g.op('MatMul', [grouped, t(pastK)]), g.op('MatMul', [grouped, t(k)])], { axis: attr.i(-1) });
  const rowsMask = rep === 1 ? mask : g.op('Tile', [mask, g.i64([rep, 1])]);
  const probs = g.op('Softmax', [g.op('Add', [g.op('Mul', [scores, g.f32([scale], [])]), rowsMask])], { axis: attr.i(-1) });
  const C = g.op('Shape', [pastK], { start: attr.i(2), end: attr.i(3) });
  const S = g.op('Shape', [k], { start: attr.i(2), end: attr.i(3) });
  const [pPast, pNew] = g.opN('Split', [probs, g.op('Concat', [C, S], { axis: attr.i(0) })], 2, { axis: attr.i(-1) });
  const out = g.op('Add', [g.op('MatMul', [pPast!, pastV]), g.op('MatMul', [pNew!, v])]); // [B, kvHeads, rep·S, dv]
  return g.op('Reshape', [out, g.i64([0, kvHeads * rep, -1, dv])]);
}

/** Attention half of a decoder layer, plus the FFN input norm and router logits. */
export function buildAttentionGraph(spec: ModelSpec, opts: AttentionGraphOptions): Uint8Array {
  const g = new GraphBuilder('attention');
  const a = spec.attention;
  const io = attentionInputs(g, spec, a.rope.dim);
  const x = rmsNorm(g, io.hidden, io.inputNorm, spec.rmsNormEps);
  const forms = opts.forms ?? FLOAT_WEIGHTS;
  const { o, captured } = a.kind === 'mha' ? mhaCore(g, spec, a, x, io, opts.withCache, forms, opts.blocks, opts.fused) : mlaCore(g, spec, a, x, io, opts.withCache, forms, opts.blocks, opts.fused);
  if (opts.capture) {
    g.output('in.attn', x, F, ['T', spec.hiddenSize]);
    for (const [name, [value, width]] of Object.entries(captured)) g.output(name, value, F, ['T', width]);
  }
  const h = g.op('Add', [io.hidden, o]);
  const ffnIn = rmsNorm(g, h, io.postNorm, spec.rmsNormEps);
  g.output('h', h, F, ['T', spec.hiddenSize]);
  g.output('ffn_in', ffnIn, F, ['T', spec.hiddenSize]);
  if (opts.router !== null) {
    const E = opts.router.experts;
    const logits = projection(g, ffnIn, 'router', E, spec.hiddenSize, forms);
    g.output('router_logits', logits, F, ['T', E]);
    const scores = opts.router.scoring === 'softmax' ? g.op('Softmax', [logits], { axis: attr.i(-1) }) : g.op('Sigmoid', [logits]);
    g.output('router_scores', scores, F, ['T', E]);
  }
  return g.build();
}

/** Dense MLP layer: out = h + MLP(ffn_in). */
export function buildDenseGraph(spec: ModelSpec, intermediate: number, capture = false, forms: WeightForms = FLOAT_WEIGHTS): Uint8Array {
  const g = new GraphBuilder('dense_ffn');
  const H = spec.hiddenSize;
  const h = g.input('h', F, ['T', H]);
  const x = g.input('ffn_in', F, ['T', H]);
  const mlp = swiglu(g, x, '', H, intermediate, forms);
  g.output('out', g.op('Add', [h, mlp.out]), F, ['T', H]);
  if (capture) g.output('in.down', mlp.hidden, F, ['T', intermediate]);
  return g.build();
}

/** Expert j gets the rows `rows.j` of x: their outputs, concatenated in expert order [R, H]. */
function routedExperts(g: GraphBuilder, x: string, H: number, I: number, count: number, capture: boolean, forms: WeightForms): string {
  const outs: string[] = [];
  for (let j = 0; j < count; j++) {
    const rows = g.input(`rows.${j}`, I64, [`n${j}`]);
    const mlp = swiglu(g, g.op('Gather', [x, rows], { axis: attr.i(0) }), `expert.${j}`, H, I, forms);
    outs.push(mlp.out);
    if (capture) g.output(`in.expert.${j}.down`, mlp.hidden, F, [`n${j}`, I]);
  }
  return concatTree(g, outs, 0);
}

/**
 * h + Σ_slots combine_w · y[combine_pos] (+ the optionally gated shared expert of x): the expert outputs `y` (all
 * experts, in expert order) are gathered back per (token, slot) with `combine_pos` [T, k].
 */
function combineExperts(g: GraphBuilder, spec: ModelSpec, ffn: MoeFfnSpec, h: string, x: string, y: string, capture: boolean, forms: WeightForms): string {
  const k = ffn.routing.numExpertsUsed;
  const pos = g.input('combine_pos', I64, ['T', k]);
  const cw = g.input('combine_w', F, ['T', k]);
  const picked = g.op('Gather', [y, pos], { axis: attr.i(0) }); // [T, k, H]
  const weighted = g.op('Mul', [picked, g.op('Unsqueeze', [cw, g.i64([2])])]);
  const out = g.op('Add', [h, g.op('ReduceSum', [weighted, g.i64([1])], { keepdims: attr.i(0) })]);
  return ffn.shared ? g.op('Add', [out, sharedExpert(g, spec, ffn, x, capture, forms)]) : out;
}

/** The shared expert's output for x (Qwen2-MoE: scaled by its sigmoid gate), roles `shared.*`. */
function sharedExpert(g: GraphBuilder, spec: ModelSpec, ffn: MoeFfnSpec, x: string, capture: boolean, forms: WeightForms): string {
  const H = spec.hiddenSize;
  const S = ffn.shared!.intermediateSize;
  const mlp = swiglu(g, x, 'shared', H, S, forms);
  if (capture) g.output('in.shared.down', mlp.hidden, F, ['T', S]);
  if (!ffn.shared!.gate) return mlp.out;
  const gate = g.op('Sigmoid', [projection(g, x, 'shared.gateProj', 1, H, forms)]);
  if (capture) g.output('shared_gate', gate, F, ['T', 1]);
  return g.op('Mul', [mlp.out, gate]);
}

/** h + the shared expert of ffn_in: the last step of the expert-major path, whose routed sum is already in h. */
export function buildSharedExpertGraph(spec: ModelSpec, ffn: MoeFfnSpec, forms: WeightForms = FLOAT_WEIGHTS): Uint8Array {
  const g = new GraphBuilder('moe_shared');
  const H = spec.hiddenSize;
  const h = g.input('h', F, ['T', H]);
  const x = g.input('ffn_in', F, ['T', H]);
  g.output('out', g.op('Add', [h, sharedExpert(g, spec, ffn, x, false, forms)]), F, ['T', H]);
  return g.build();
}

/**
 * The whole MoE FFN in one run (all experts' weights at hand, i.e. a resident model): routed experts, combine and
 * shared expert. Saves the chunked path's second run and the round trip of every expert output through JavaScript.
 */
export function buildMoeGraph(spec: ModelSpec, ffn: MoeFfnSpec, capture = false, forms: WeightForms = FLOAT_WEIGHTS): Uint8Array {
  const g = new GraphBuilder('moe');
  const H = spec.hiddenSize;
  const h = g.input('h', F, ['T', H]);
  const x = g.input('ffn_in', F, ['T', H]);
  const y = routedExperts(g, x, H, ffn.expertIntermediateSize, ffn.routing.numExperts, capture, forms);
  g.output('out', combineExperts(g, spec, ffn, h, x, y, capture, forms), F, ['T', H]);
  return g.build();
}

/**
 * Routed experts of one chunk (count experts, named 0..count−1 inside the graph so equal-size chunks share a
 * session): expert j gets the rows `rows.j` of ffn_in; output `y` is their outputs concatenated in expert order.
 * Chunks bound how many experts' weights are in memory at once when a model streams from disk.
 */
export function buildExpertsGraph(spec: ModelSpec, ffn: MoeFfnSpec, count: number, capture = false, forms: WeightForms = FLOAT_WEIGHTS): Uint8Array {
  const g = new GraphBuilder('moe_experts');
  const x = g.input('ffn_in', F, ['T', spec.hiddenSize]);
  g.output('y', routedExperts(g, x, spec.hiddenSize, ffn.expertIntermediateSize, count, capture, forms), F, ['R', spec.hiddenSize]);
  return g.build();
}

/** Combine of the chunked path: the concatenated outputs `y` of all chunks, gathered back and summed (+ shared expert). */
export function buildCombineGraph(spec: ModelSpec, ffn: MoeFfnSpec, capture = false, forms: WeightForms = FLOAT_WEIGHTS): Uint8Array {
  const g = new GraphBuilder('moe_combine');
  const H = spec.hiddenSize;
  const h = g.input('h', F, ['T', H]);
  const x = g.input('ffn_in', F, ['T', H]);
  const y = g.input('y', F, ['R', H]);
  g.output('out', combineExperts(g, spec, ffn, h, x, y, capture, forms), F, ['T', H]);
  return g.build();
}

/** Final norm + lm_head; mode 'logits' returns [T, V], mode 'nll' returns −log p(target) per token [T]. */
export function buildHeadGraph(spec: ModelSpec, mode: 'logits' | 'nll' | 'top'): Uint8Array {
  const g = new GraphBuilder(`head_${mode}`);
  const H = spec.hiddenSize;
  const V = spec.vocabSize;
  const x = g.input('hidden', F, ['T', H]);
  const logits = linear(g, rmsNorm(g, x, g.input('w.norm', F, [H]), spec.rmsNormEps), g.input('w.lmHead', F, [V, H]));
  if (mode === 'logits') {
    g.output('logits', logits, F, ['T', V]);
  } else if (mode === 'top') {
    // The k most likely next tokens with their log-probabilities, descending (generation, beam search).
    const logp = g.op('LogSoftmax', [logits], { axis: attr.i(-1) });
    const [values, indices] = g.opN('TopK', [logp, g.input('k', I64, [1])], 2, { axis: attr.i(-1), largest: attr.i(1), sorted: attr.i(1) });
    g.output('logp', values!, F, ['T', 'K']);
    g.output('ids', indices!, I64, ['T', 'K']);
  } else {
    const targets = g.input('targets', I64, ['T']);
    const logp = g.op('LogSoftmax', [logits], { axis: attr.i(-1) });
    const picked = g.op('GatherElements', [logp, g.op('Unsqueeze', [targets, g.i64([1])])], { axis: attr.i(1) });
    g.output('nll', g.op('Neg', [g.op('Squeeze', [picked, g.i64([1])])]), F, ['T']);
  }
  return g.build();
}

/** What the comparison head needs of each model: its hidden size and final norm's epsilon. */
export interface HeadShape {
  hiddenSize: number;
  rmsNormEps: number;
}

/**
 * Two models' heads on the same positions (KL evaluation): final hidden states of a reference (`hidden.ref`, weights
 * `w.ref.*`) and of the evaluated model (`hidden`, `w.*`) → per row, kl = Σ_v p(v)·(log p(v) − log q(v)) with p the
 * reference's next-token distribution and q the model's (float64), both NLLs of `targets`, and both argmax tokens.
 *
 * The vocabulary-wide work is float32 (float64 ops run ~15× slower in onnxruntime), arranged so that what rounds is
 * small. With logits a, b and D = (b − max b) − (a − max a) (exact where a ≈ b), log q − log p = D − log Σ p·e^D, so
 *   kl = −Σ p·D + log(1 + Σ p·(e^D − 1)),        (sums over p normalised by Σ p)
 * which holds for any constant added to D: neither log-sum-exp (~10, rounded by ~1e-6) appears, and both sums are of
 * terms as small as D, so they round relative to D, not to 1. e^D − 1 must be accurate relative to D too (exp(D) − 1
 * in float32 is off by up to 6e-8 and biased a KL of 3e-8 by 20%): e^D − 1 = 2t·e^max(D,0) / (1 + |t|), t = tanh(D/2),
 * which never divides by a small number. The last steps, per row, are float64.
 * NLL_ref = max a − a(target) − log(max p) (max p ≥ 1/V cannot underflow); NLL = NLL_ref + (log p − log q)(target).
 */
export function buildKlHeadGraph(ref: HeadShape, model: HeadShape, vocabSize: number): Uint8Array {
  const g = new GraphBuilder('head_kl');
  const V = vocabSize;
  const DOUBLE = attr.i(OnnxType.DOUBLE);
  const targets = g.op('Unsqueeze', [g.input('targets', I64, ['T']), g.i64([1])]);
  const gather = (x: string, at: string) => g.op('GatherElements', [x, at], { axis: attr.i(1) });
  const toDouble = (x: string) => g.op('Cast', [x], { to: DOUBLE });
  const sum = (x: string) => toDouble(g.op('ReduceSum', [x, g.i64([1])], { keepdims: attr.i(0) }));
  const squeeze = (x: string) => g.op('Squeeze', [x, g.i64([1])]);
  const side = (prefix: string, s: HeadShape, suffix: string) => {
    const x = g.input(`hidden${prefix}`, F, ['T', s.hiddenSize]);
    const logits = linear(g, rmsNorm(g, x, g.input(`w${prefix}.norm`, F, [s.hiddenSize]), s.rmsNormEps), g.input(`w${prefix}.lmHead`, F, [V, s.hiddenSize]));
    const top = g.op('ArgMax', [logits], { axis: attr.i(1), keepdims: attr.i(1) });
    g.output(`top${suffix}`, squeeze(top), I64, ['T']);
    return { logits, top, max: gather(logits, top) };
  };
  const a = side('.ref', ref, '_ref');
  const b = side('', model, '');
  const p = g.op('Softmax', [a.logits], { axis: attr.i(-1) });
  const nllRef = g.op('Sub', [g.op('Sub', [a.max, gather(a.logits, targets)]), g.op('Log', [gather(p, a.top)])]);
  const D = g.op('Sub', [g.op('Sub', [b.logits, a.logits]), g.op('Sub', [b.max, a.max])]);
  const t = g.op('Tanh', [g.op('Mul', [D, g.f32([0.5], [])])]);
  const halfExpm1 = g.op('Div', [g.op('Mul', [t, g.op('Exp', [g.op('Relu', [D])])]), g.op('Add', [g.op('Abs', [t]), g.f32([1], [])])]);
  const mass = sum(p);
  const meanD = g.op('Div', [sum(g.op('Mul', [p, D])), mass]);
  const two = g.op('Cast', [g.f32([2], [])], { to: DOUBLE });
  const one = g.op('Cast', [g.f32([1], [])], { to: DOUBLE });
  const logZ = g.op('Log', [g.op('Add', [one, g.op('Div', [g.op('Mul', [two, sum(g.op('Mul', [p, halfExpm1]))]), mass])])]);
  g.output('kl', g.op('Sub', [logZ, meanD]), OnnxType.DOUBLE, ['T']);
  // (log p − log q)(target) = −D(target) + log Σ p·e^D
  const nll = g.op('Add', [toDouble(squeeze(nllRef)), g.op('Sub', [logZ, toDouble(squeeze(gather(D, targets)))])]);
  g.output('nll_ref', squeeze(nllRef), F, ['T']);
  g.output('nll', nll, OnnxType.DOUBLE, ['T']);
  return g.build();
}

/**
 * Only the inputs of the attention's first linears (calibration of q/k/v, q_a/kv_a and MLA q_b/kv_b): the normed
 * hidden states, and for MLA the normed q_a and kv_a latents. No attention is computed.
 */
export function buildAttentionInputsGraph(spec: ModelSpec): Uint8Array {
  const g = new GraphBuilder('attention_inputs');
  const H = spec.hiddenSize;
  const hidden = g.input('hidden', F, ['T', H]);
  const x = rmsNorm(g, hidden, g.input('w.inputNorm', F, [H]), spec.rmsNormEps);
  g.output('in.attn', x, F, ['T', H]);
  const a = spec.attention;
  if (a.kind === 'mla') {
    const { qBIn, kvBIn } = mlaLatents(g, H, a, x, FLOAT_WEIGHTS);
    if (qBIn !== null) g.output('in.qB', qBIn, F, ['T', a.qLoraRank!]);
    g.output('in.kvB', kvBIn, F, ['T', a.kvLoraRank]);
  }
  return g.build();
}
