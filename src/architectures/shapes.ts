/**
 * The tensors a ModelSpec expects, with their shapes and kinds (from the model's tensor table, tensors.ts). Used to
 * validate a checkpoint against config.json before any long run, and by `inspect` to count parameters by kind.
 */
import { modelTensors, type TensorKind } from './tensors.js';
import type { ModelSpec } from './types.js';

export type { TensorKind } from './tensors.js';

export interface ExpectedTensor {
  name: string;
  shape: number[];
  kind: TensorKind;
  /** Decoder layer index, or null for embeddings/head/final norm. */
  layer: number | null;
}

/** Every tensor the engine will read, in model order. */
export function expectedTensors(spec: ModelSpec): ExpectedTensor[] {
  return modelTensors(spec).map(({ name, shape, kind, layer }) => ({ name, shape, kind, layer }));
}
