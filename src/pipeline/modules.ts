/**
 * The quantizable linears of a decoder layer, in the order GPTQ's "true sequential" mode quantizes them (the
 * groups of architectures/tensors.ts). Each group is quantized from Hessians collected with every earlier group of
 * the layer already quantized:
 *   attention input (q/k/v; MLA q or q_a + kv_a) → MLA q_b / kv_b → o_proj → [router] → gate/up (experts,
 *   shared expert, dense MLP) → down_proj.
 * Routers, embeddings, norms and lm_head stay in the model dtype (as GPTQModel does) unless asked otherwise.
 */
import { layerTensors, MODULE_GROUPS, type ModuleGroupName, type TensorKind } from '../architectures/tensors.js';
import type { LayerSpec, ModelSpec } from '../architectures/types.js';

export interface LinearModule {
  /** Weight tensor name (`….weight`). */
  weight: string;
  /** Module prefix (weight name without `.weight`): GPTQ tensors are `<prefix>.qweight` etc. */
  prefix: string;
  /** Bias tensor name, if the linear has one. */
  bias: string | null;
  N: number;
  K: number;
  /** Hessian key in LayerHessians. */
  hessian: string;
  /** Which accumulated Hessian AGQ uses: plain Σxxᵀ or weighted Σc·xxᵀ (routed experts; Qwen2 gated shared expert). */
  agqWeighted: boolean;
  kind: Exclude<TensorKind, 'embedding' | 'lm_head' | 'norm'>;
  expert?: number;
}

export interface ModuleGroup {
  name: ModuleGroupName;
  modules: LinearModule[];
}

export function layerModuleGroups(spec: ModelSpec, layer: LayerSpec, opts: { quantizeRouter: boolean }): ModuleGroup[] {
  const byGroup = new Map<ModuleGroupName, LinearModule[]>();
  for (const t of layerTensors(spec, layer)) {
    if (!t.linear || (t.linear.group === 'router' && !opts.quantizeRouter)) continue;
    const m: LinearModule = {
      weight: t.name,
      prefix: t.name.replace(/\.weight$/, ''),
      bias: t.linear.bias,
      N: t.shape[0]!,
      K: t.shape[1]!,
      hessian: t.linear.hessian,
      agqWeighted: t.linear.agqWeighted,
      kind: t.kind as LinearModule['kind'],
      ...(t.expert === undefined ? {} : { expert: t.expert }),
    };
    const list = byGroup.get(t.linear.group);
    if (list) list.push(m);
    else byGroup.set(t.linear.group, [m]);
  }
  return MODULE_GROUPS.filter((g) => byGroup.has(g)).map((name) => ({ name, modules: byGroup.get(name)! }));
}

/**
 * A group's modules (in order) cut into consecutive runs with at most `size` routed experts each; other modules
 * (shared expert, dense MLP, attention) stay in the run where they fall. An expert's modules (gate and up) are
 * adjacent, so they share a run and its Hessian. Solving run after run keeps the group's module order.
 */
export function chunkModules(modules: LinearModule[], size: number): LinearModule[][] {
  if (!(Number.isInteger(size) && size >= 1)) throw new Error(`chunkModules: size must be a positive integer (got ${size})`);
  const runs: LinearModule[][] = [];
  let run: LinearModule[] = [];
  const experts = new Set<number>();
  for (const m of modules) {
    if (m.expert !== undefined && !experts.has(m.expert) && experts.size === size) {
      runs.push(run);
      run = [];
      experts.clear();
    }
    if (m.expert !== undefined) experts.add(m.expert);
    run.push(m);
  }
  if (run.length) runs.push(run);
  return runs;
}
