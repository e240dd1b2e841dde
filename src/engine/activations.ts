/**
 * The hidden states a layer-by-layer run carries through the decoder, batch by batch: a layer's input x (for
 * quantize: which becomes h = x + attention once the attention is final, then the layer's output) and, for quantize
 * once the attention is final, each batch's attention outputs (h, the FFN input, router logits and scores) so that
 * FFN passes skip the attention.
 *
 * In memory (the default) x is one [tokens × hidden] array and batches are views of it. With a scratch directory
 * (calibrate's activation check, quantize's memory plan) both live in files and batches are read back when a pass
 * needs them: memory then holds a batch (or a group of them), whatever the number of calibration tokens. Raw bytes,
 * so what comes back is bit for bit what went in and results do not change.
 */
import path from 'node:path';
import type * as ort from 'onnxruntime-node';
import type { AttentionOutputs } from './forward-types.js';
import type { ForwardEngine } from './forward.js';
import { tensor } from '../graph/session.js';
import { SpillFile } from './spill.js';

type Reader = (into: Float32Array) => Float32Array;

/** A batch's attention outputs in the scratch file (h: in x's file when the attention is final). */
interface StoredAttention {
  numTokens: number;
  h: Reader | 'x';
  hDims: readonly number[];
  ffnIn: Reader;
  ffnDims: readonly number[];
  routerLogits: { read: Reader; length: number } | null;
  routerScores: { read: Reader; length: number } | null;
}

export class LayerActivations {
  /** In memory: x of every token (null when in a file). */
  readonly all: Float32Array | null;
  private readonly xFile: SpillFile | null;
  private attentionFile: SpillFile | null = null;
  private readonly spillDir: string | null;
  private cached: AttentionOutputs[] | null = null;
  private stored: StoredAttention[] | null = null;
  /** Tokens per window. */
  private readonly S: number;

  /** `spillDir`: keep the activations in scratch files there (removed by close()) instead of in memory. */
  constructor(
    forward: ForwardEngine,
    windows: Int32Array[],
    private readonly batches: number[][],
    private readonly H: number,
    spillDir: string | null,
  ) {
    this.S = windows[0]!.length;
    this.spillDir = spillDir;
    if (!spillDir) {
      this.all = forward.embed(windows);
      this.xFile = null;
      return;
    }
    this.all = null;
    this.xFile = new SpillFile(path.join(spillDir, '.activations.f32'));
    try {
      for (let b = 0; b < batches.length; b++) this.put(b, forward.embed(windows.slice(batches[b]![0]!, batches[b]![0]! + batches[b]!.length)));
    } catch (e) {
      this.close();
      throw e;
    }
  }

  get inFile(): boolean {
    return this.xFile !== null;
  }

  /** Float offsets of batches b … b + count − 1 (consecutive windows). */
  private range(b: number, count = 1): [number, number] {
    const first = this.batches[b]!;
    const last = this.batches[b + count - 1]!;
    return [first[0]! * this.S * this.H, (last[last.length - 1]! + 1) * this.S * this.H];
  }

  /**
   * x of batches b … b + count − 1: a view that writes through (memory) or a copy read back from the file (put()
   * stores it).
   */
  x(b: number, count = 1): Float32Array {
    const [start, end] = this.range(b, count);
    if (this.all) return this.all.subarray(start, end);
    return this.xFile!.readAt(start * 4, new Float32Array(end - start));
  }

  /** A copy of batch b's x that the caller may overwrite without touching the stored one. */
  copy(b: number): Float32Array {
    return this.all ? this.x(b).slice() : this.x(b);
  }

  /** A buffer of batch b's size for a pass that only writes x (its content is not read). */
  scratch(b: number): Float32Array {
    const [start, end] = this.range(b);
    return new Float32Array(end - start);
  }

  /** Store `data` as the x of batches b … b + count − 1 (nothing to do for a view from x()). */
  put(b: number, data: Float32Array, count = 1): void {
    const [start, end] = this.range(b, count);
    if (data.length !== end - start) throw new Error(`LayerActivations: batches ${b}+${count} have ${end - start} values, got ${data.length}`);
    if (this.all) {
      if (data.buffer !== this.all.buffer || data.byteOffset !== this.all.byteOffset + start * 4) this.all.set(data, start);
      return;
    }
    this.xFile!.writeAt(start * 4, data);
  }

  /** Whether attention outputs are kept (pass ffn-only from them). */
  get hasAttention(): boolean {
    return this.cached !== null || this.stored !== null;
  }

  /** Forget the kept attention outputs (the attention or the router changed). */
  clearAttention(): void {
    this.cached = null;
    this.stored = null;
    this.attentionFile?.reset();
  }

  /**
   * Keep batch b's attention outputs (batches in order, from 0). `final`: no pass of this layer runs the attention
   * again, so h replaces the layer's input in x instead of being kept a second time.
   */
  keepAttention(b: number, a: AttentionOutputs, final: boolean): void {
    if (b === 0) this.clearAttention();
    if (Object.keys(a.captured).length > 0 || a.newKey || a.newValue) throw new Error('LayerActivations: attention outputs to keep carry captures or a KV cache');
    if (this.all) {
      if (final) {
        const x = this.x(b);
        x.set(a.h.data as Float32Array);
        a.h = tensor.f32(x, [a.numTokens, this.H]);
      }
      (this.cached ??= []).push(a);
      return;
    }
    const file = (this.attentionFile ??= new SpillFile(path.join(this.spillDir!, '.attention.f32')));
    if (final) this.put(b, a.h.data as Float32Array);
    (this.stored ??= []).push({
      numTokens: a.numTokens,
      h: final ? 'x' : file.write(a.h.data as Float32Array),
      hDims: a.h.dims,
      ffnIn: file.write(a.ffnIn.data as Float32Array),
      ffnDims: a.ffnIn.dims,
      routerLogits: a.routerLogits ? { read: file.write(a.routerLogits), length: a.routerLogits.length } : null,
      routerScores: a.routerScores ? { read: file.write(a.routerScores), length: a.routerScores.length } : null,
    });
  }

  /** Batch b's kept attention outputs. */
  attention(b: number): AttentionOutputs {
    if (this.cached) return this.cached[b]!;
    const s = this.stored![b]!;
    const read = (r: { read: Reader; length: number } | null) => (r ? r.read(new Float32Array(r.length)) : null);
    const f32 = (data: Float32Array, dims: readonly number[]): ort.Tensor => tensor.f32(data, [...dims]);
    const size = (dims: readonly number[]) => dims.reduce((a, d) => a * d, 1);
    const h = s.h === 'x' ? this.x(b) : s.h(new Float32Array(size(s.hDims)));
    return {
      numTokens: s.numTokens,
      h: f32(h, s.hDims),
      ffnIn: f32(s.ffnIn(new Float32Array(size(s.ffnDims))), s.ffnDims),
      routerLogits: read(s.routerLogits),
      routerScores: read(s.routerScores),
      captured: {},
    };
  }

  /** Remove the scratch files. */
  close(): void {
    this.xFile?.close();
    this.attentionFile?.close();
  }
}
