/**
 * Which Hessians a layer needs, fed from the engine's captured activations. Names (safetensors layout of
 * `calibrate --save-hessians`, one file per decoder layer, float32, sums not averages):
 *   layers.L.attn_input.{xtx}                     q/k/v (MLA: q_proj or q_a_proj, kv_a_proj_with_mqa) input  [H × H]
 *   layers.L.o_proj_input.{xtx}                   o_proj input                                               [heads·dv]²
 *   layers.L.q_b_proj_input / kv_b_proj_input     MLA inner projections' inputs                             [rank]²
 *   layers.L.ffn_input.{xtx}                      router, shared expert / dense MLP gate+up input           [H × H]
 *   layers.L.mlp.down_proj_input.{xtx}            dense MLP down_proj input                                 [I × I]
 *   layers.L.experts.E.gate_up_input.{xtx,xtcx}   routed expert E gate/up input: plain and affinity-weighted [H × H]
 *   layers.L.experts.E.down_input.{xtx,xtcx}      routed expert E down_proj input                           [I × I]
 *   layers.L.shared_expert.down_input.{xtx[,xtcx]}  shared expert down_proj input                           [S × S]
 *   layers.L.shared_expert.gate_up_input.{xtcx}   Qwen2-MoE: ffn input weighted by sigmoid(shared_expert_gate·x)
 * Each key also has `.tokens` (rows accumulated) and, when weighted, `.weight_sum` (Σ c).
 * The affinity c of a token for an expert is exactly its combine weight (after renormalisation and scaling).
 */
import { layerTensors } from '../architectures/tensors.js';
import type { LayerSpec, ModelSpec } from '../architectures/types.js';
import type { TensorToWrite } from '../checkpoint/safetensors.js';
import { tensorBytes } from '../checkpoint/safetensors.js';
import type { ActivationsEvent } from '../engine/forward.js';
import type { SessionPool } from '../graph/session.js';
import { gatherRows, HessianAccumulator } from './hessian.js';

interface Slot {
  acc: HessianAccumulator;
  /** Which captured input feeds it, and how rows/weights are chosen. */
  source: string;
  expert?: number;
  weightBy?: 'affinity' | 'shared_gate';
}

/** Hessian accumulators for one decoder layer. */
export class LayerHessians {
  readonly slots = new Map<string, Slot>();

  /**
   * `only`: keep just these Hessian keys (quantize collects one group of modules per pass). `weightedOnly`: weighted
   * keys keep only Σ c x xᵀ (AGQ never reads their plain sums).
   */
  constructor(
    pool: SessionPool,
    spec: ModelSpec,
    readonly layer: LayerSpec,
    only?: ReadonlySet<string>,
    weightedOnly = false,
  ) {
    // One slot per Hessian key of the layer's linears (architectures/tensors.ts), in table order; the router's FFN
    // input has its slot even when only the router reads it.
    const byKey = new Map<string, Slot & { dim: number }>();
    for (const t of layerTensors(spec, layer)) {
      const l = t.linear;
      if (!l || byKey.has(l.hessian)) continue;
      byKey.set(l.hessian, { dim: t.shape[1]!, source: l.source, ...(t.expert === undefined ? {} : { expert: t.expert }), ...(l.weightBy ? { weightBy: l.weightBy } : {}) } as Slot & { dim: number });
    }
    for (const [key, { dim, ...slot }] of byKey) {
      const weighted = Boolean(slot.weightBy);
      if (!only || only.has(key)) this.slots.set(key, { ...slot, acc: new HessianAccumulator(pool, dim, weighted, !(weighted && weightedOnly)) } as Slot);
    }
  }

  /** Accumulate one batch. */
  async add(ev: ActivationsEvent): Promise<void> {
    for (const slot of this.slots.values()) {
      const x = ev.inputs[slot.source];
      if (!x) continue;
      if (slot.expert !== undefined) {
        const rows = ev.rows![slot.expert]!;
        const c = ev.rowWeights![slot.expert]!;
        // Down inputs already arrive as this expert's rows, in `rows` order; gate/up inputs are gathered here.
        const input = slot.source === 'ffn' ? gatherRows(x, slot.acc.dim, rows) : x;
        await slot.acc.add(input, c);
      } else if (slot.weightBy === 'shared_gate') {
        await slot.acc.add(x, ev.inputs['shared_gate']!);
      } else {
        await slot.acc.add(x);
      }
    }
  }

  /** Entries for writeSafetensors (keys as in the header comment). */
  tensors(): TensorToWrite[] {
    const out: TensorToWrite[] = [];
    for (const [key, { acc }] of this.slots) {
      const d = acc.dim;
      out.push({ name: `${key}.xtx`, dtype: 'F32', shape: [d, d], data: tensorBytes(acc.xtx) });
      if (acc.weighted) {
        out.push({ name: `${key}.xtcx`, dtype: 'F32', shape: [d, d], data: tensorBytes(acc.xtcx!) });
        out.push({ name: `${key}.weight_sum`, dtype: 'F64', shape: [], data: tensorBytes(Float64Array.of(acc.weightSum)) });
      }
      out.push({ name: `${key}.tokens`, dtype: 'I64', shape: [], data: tensorBytes(BigInt64Array.of(BigInt(acc.tokens))) });
    }
    return out;
  }
}

/** Bytes `--save-hessians` will write for a model (all layers): Σxxᵀ per Hessian key, and Σc·xxᵀ for weighted ones. */
export function hessianBytes(spec: ModelSpec): number {
  let floats = 0;
  for (const layer of spec.layers) {
    const seen = new Set<string>();
    for (const t of layerTensors(spec, layer)) {
      if (!t.linear || seen.has(t.linear.hessian)) continue;
      seen.add(t.linear.hessian);
      floats += t.shape[1]! ** 2 * (t.linear.weightBy ? 2 : 1);
    }
  }
  return floats * 4;
}
