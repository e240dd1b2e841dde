/**
 * Float32 weights for the engine, read one tensor at a time from the checkpoint. When the whole model fits in
 * `cacheBytes` the tensors stay resident across batches; otherwise each layer's tensors are released after use, so
 * peak memory is one layer's weights plus activations, whatever the number of layers.
 * `overrides` replace checkpoint tensors (e.g. dequantized 4-bit weights) without touching the files.
 */
import type { ExpectedTensor } from '../architectures/shapes.js';
import type { Checkpoint } from '../checkpoint/checkpoint.js';

export interface WeightSource {
  get(name: string): Float32Array;
  shape(name: string): number[];
  /** Rows [start, start+count) of a 2-D tensor (embedding lookups). */
  rows(name: string, start: number, count: number): Float32Array;
}

export class WeightStore implements WeightSource {
  private readonly cache = new Map<string, Float32Array>();
  readonly resident: boolean;
  readonly overrides = new Map<string, Float32Array>();

  constructor(
    private readonly checkpoint: Checkpoint,
    expected: ExpectedTensor[],
    cacheBytes = 2 ** 31,
  ) {
    const total = expected.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1) * 4, 0);
    this.resident = total <= cacheBytes;
  }

  get(name: string): Float32Array {
    const o = this.overrides.get(name);
    if (o) return o;
    const hit = this.cache.get(name);
    if (hit) return hit;
    const data = this.checkpoint.readFloat32(name);
    if (this.resident) this.cache.set(name, data);
    return data;
  }

  rows(name: string, start: number, count: number): Float32Array {
    const cached = this.overrides.get(name) ?? this.cache.get(name);
    if (cached) {
      const width = cached.length / this.checkpoint.info(name).shape[0]!;
      return cached.subarray(start * width, (start + count) * width);
    }
    return this.checkpoint.readRowsFloat32(name, start, count);
  }

  /** Shape of a tensor as stored in the checkpoint. */
  shape(name: string): number[] {
    return this.checkpoint.info(name).shape;
  }

  /** Drop cached tensors (used between layers when not resident). */
  release(names: Iterable<string>): void {
    if (this.resident) return;
    for (const n of names) this.cache.delete(n);
  }
}
