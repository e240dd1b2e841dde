/**
 * Writes `model.gguf` for llama.cpp: the quantizers solve on the GGUF grid of each tensor's type (gguf/quants.ts),
 * their bytes are spilled to a part file as soon as a linear is final, and `finish` streams every tensor into the
 * GGUF container in the family table's order (gguf/arch.ts). Routers, norms and biases stay F32; the token
 * embedding and output head are Q8_0 (round-to-nearest), or F16/F32 with `keep`.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { LoadedModel } from '../../engine/model.js';
import { fail } from '../../errors.js';
import { ggufPlan, permutedRow, type GgufModelPlan, type GgufTensorPlan } from './arch.js';
import { writeGguf, type GgufTensorToWrite, type GgufValue } from './file.js';
import { floatBytes, isQuantType, rowBytes, rtnGrid, GGML_TYPES, type GgmlType, type QuantType } from './quants.js';
import { tokenizerMetadata } from './tokenizer.js';

/** `--gguf-type` values. */
export const GGUF_TYPES = ['q4_0', 'q4_1', 'q5_0', 'q5_1', 'q8_0', 'q4_k', 'q5_k', 'q6_k', 'f16', 'f32'] as const;
export type GgufTypeName = (typeof GGUF_TYPES)[number];

/** What llama-quantize uses when a tensor's rows do not fit the asked type (`src/llama-quant.cpp`). */
const LLAMA_FALLBACK: Partial<Record<GgmlType, GgmlType>> = { Q4_K: 'Q5_0', Q5_K: 'Q5_1', Q6_K: 'Q8_0' };

export interface GgufOptions {
  type: GgufTypeName;
  /** Type of the token embedding and output head (round-to-nearest): default q8_0, or the float type itself for f32/f16. */
  keep?: GgufTypeName;
  /** A tensor whose rows the type cannot hold: llama-quantize's fallback type (then F16) instead of an error. */
  fallback?: boolean;
  /** The type of individual GGUF tensors by name (e.g. only `token_embd.weight` quantized, to check a layout). */
  override?: (ggufName: string) => GgufTypeName | undefined;
}

export const GGUF_FILE = 'model.gguf';

export class GgufWriter {
  readonly plan: GgufModelPlan;
  readonly file: string;
  private readonly tokenizer: ReturnType<typeof tokenizerMetadata>;
  private readonly linearType: GgmlType;
  private readonly partsFile: string;
  private partsFd: number;
  private partsSize = 0;
  /** Spilled bytes of quantized HF tensors (kv_b: `name#k`, `name#v`), by name. */
  private readonly parts = new Map<string, { offset: number; length: number; type: GgmlType }>();
  /** GGUF tensor name → its type, fixed before any work. */
  readonly types = new Map<string, GgmlType>();
  /** HF tensor name → the GGUF tensors made from it (asked per linear: a map, not a search of the plan). */
  private readonly byHf = new Map<string, GgufTensorPlan[]>();

  constructor(
    readonly dir: string,
    private readonly model: LoadedModel,
    readonly options: GgufOptions,
  ) {
    this.plan = ggufPlan(model.spec, model.config);
    this.tokenizer = tokenizerMetadata(model.dir, model.spec.vocabSize, model.config);
    this.linearType = options.type.toUpperCase() as GgmlType;
    const float = !isQuantType(this.linearType);
    const keep = (options.keep ?? (float ? options.type : 'q8_0')).toUpperCase() as GgmlType;
    for (const t of this.plan.tensors) {
      const role = t.source.kind === 'tensor' ? t.source.role : 'linear';
      const forced = options.override?.(t.name)?.toUpperCase() as GgmlType | undefined;
      // MLA's attn_k_b and attn_v_b stay F32 (kv_b is not quantized): with node-llama-cpp 3.22.1's CPU build, any
      // other attn_k_b type aborts (GGML_ASSERT in the backend scheduler: F16, Q8_0, Q4_0), and a block-quantized
      // attn_v_b gives wrong logits once kv_lora_rank spans more than one block (tiny-deepseek-v3: Δ 10.8 with Q8_0).
      const want = t.source.kind === 'kv_b' ? 'F32' : (forced ?? (role === 'embedding' || role === 'head' ? keep : role === 'linear' ? this.linearType : 'F32'));
      this.types.set(t.name, this.fit(t, want));
      for (const hf of t.source.kind === 'experts' ? t.source.hf : [t.source.hf]) this.byHf.set(hf, [...(this.byHf.get(hf) ?? []), t]);
    }
    this.file = path.join(dir, GGUF_FILE);
    this.partsFile = path.join(dir, '.gguf-parts');
    this.partsFd = fs.openSync(this.partsFile, 'w+');
  }

  /** The type `want`, or its fallback when the tensor's rows do not fit it. */
  private fit(t: GgufTensorPlan, want: GgmlType): GgmlType {
    const fits = (ty: GgmlType) => t.ne[0]! % GGML_TYPES[ty].blockLen === 0;
    if (fits(want)) return want;
    const chain = [LLAMA_FALLBACK[want], 'F16' as GgmlType].filter((x): x is GgmlType => x !== undefined && fits(x));
    if (!this.options.fallback || !chain.length) {
      throw fail(
        'BAD_OPTION',
        `--gguf-type ${want.toLowerCase()}: tensor ${t.name} has rows of ${t.ne[0]} values, not a multiple of ${GGML_TYPES[want].blockLen}` +
          (want.endsWith('_K') ? ' (K-quants need K % 256 == 0)' : '') +
          `; choose another --gguf-type or add --gguf-fallback (${want.endsWith('_K') ? `${LLAMA_FALLBACK[want]?.toLowerCase()}, ` : ''}else f16 for such tensors, as llama-quantize does)`,
      );
    }
    return chain[0]!;
  }

  /** Whether the linear weight `hf` is stored block-quantized (its solve happens in {@link solve}). */
  quantizes(hf: string): boolean {
    return this.tensorsOf(hf).some((t) => isQuantType(this.types.get(t.name)!));
  }

  private tensorsOf(hf: string): GgufTensorPlan[] {
    return this.byHf.get(hf) ?? [];
  }

  /** The block type linear `hf` is solved on (one it {@link quantizes}). */
  gridType(hf: string): QuantType {
    const plans = this.tensorsOf(hf);
    if (plans.some((t) => t.source.kind === 'kv_b')) throw new Error(`${hf}: MLA kv_b is written in F32, not solved`);
    const type = this.types.get(plans[0]!.name)!;
    if (!isQuantType(type)) throw new Error(`${hf} is stored ${type}, not solved on a block grid`);
    return type;
  }

  /** Keeps the bytes of linear `hf` solved on its {@link gridType} (spilled to the part file); returns their size. */
  add(hf: string, packed: Uint8Array | undefined): number {
    if (!packed) throw new Error(`${hf}: no GGUF bytes (not solved on its block grid)`);
    this.spill(hf, packed, this.gridType(hf));
    return packed.length;
  }

  private spill(key: string, bytes: Uint8Array, type: GgmlType): void {
    let done = 0;
    while (done < bytes.length) done += fs.writeSync(this.partsFd, bytes, done, bytes.length - done, this.partsSize + done);
    this.parts.set(key, { offset: this.partsSize, length: bytes.length, type });
    this.partsSize += bytes.length;
  }

  private readPart(key: string): Uint8Array {
    const p = this.parts.get(key)!;
    const out = new Uint8Array(p.length);
    let done = 0;
    while (done < p.length) done += fs.readSync(this.partsFd, out, done, p.length - done, p.offset + done);
    return out;
  }

  /** Bytes of a float or RTN-quantized tensor from the source model (floats in the source's values). */
  private fromSource(hf: string, type: GgmlType, rows: number, rowLen: number): Uint8Array {
    const W = this.model.checkpoint.readFloat32(hf);
    if (!isQuantType(type)) return floatBytes(type === 'F16' ? 'F16' : 'F32', W);
    const r = rtnGrid(W, rows, rowLen, type);
    return r.grid.pack(r.levels);
  }

  private bytesOf(t: GgufTensorPlan): Uint8Array {
    const type = this.types.get(t.name)!;
    const src = t.source;
    const rowLen = t.ne[0]!;
    const rows = t.ne.slice(1).reduce((a, b) => a * b, 1);
    if (src.kind === 'experts') {
      const per = rowBytes(type, rowLen) * (rows / src.hf.length);
      const out = new Uint8Array(per * src.hf.length);
      src.hf.forEach((hf, e) => out.set(this.parts.has(hf) ? this.readPart(hf) : this.fromSource(hf, type, rows / src.hf.length, rowLen), e * per));
      return out;
    }
    if (src.kind === 'kv_b') {
      const W = this.model.checkpoint.readFloat32(src.hf);
      const per = src.nope + src.v;
      const M = new Float32Array(rows * rowLen);
      for (let h = 0; h < src.heads; h++) {
        if (src.part === 'v') M.set(W.subarray((h * per + src.nope) * src.rank, (h * per + per) * src.rank), h * src.v * src.rank);
        else for (let i = 0; i < src.nope; i++) for (let c = 0; c < src.rank; c++) M[(h * src.rank + c) * src.nope + i] = W[(h * per + i) * src.rank + c]!;
      }
      if (!isQuantType(type)) return floatBytes(type === 'F16' ? 'F16' : 'F32', M);
      const r = rtnGrid(M, rows, rowLen, type);
      return r.grid.pack(r.levels);
    }
    const bytes = this.parts.has(src.hf) ? this.readPart(src.hf) : this.fromSource(src.hf, type, rows, rowLen);
    if (!src.permuteHeads) return bytes;
    // 1-D (bias): each value is a "row" of one element.
    const n = rows === 1 ? rowLen : rows;
    const unit = rows === 1 ? GGML_TYPES[type].blockBytes : rowBytes(type, rowLen);
    const out = new Uint8Array(bytes.length);
    for (let p = 0; p < n; p++) {
      const s = permutedRow(p, n, src.permuteHeads);
      out.set(bytes.subarray(s * unit, (s + 1) * unit), p * unit);
    }
    return out;
  }

  /**
   * Linears left in floating point by the run (--skip) are written F32 instead of their type. A stack of routed
   * experts is one tensor of one type: skipping some of its experts but not all is refused.
   */
  keepFloat(leftOut: (hf: string) => boolean): void {
    for (const t of this.plan.tensors) {
      const s = t.source;
      const names = s.kind === 'experts' ? s.hf : s.kind === 'tensor' && s.role === 'linear' ? [s.hf] : [];
      const out = names.filter(leftOut);
      if (out.length === 0) continue;
      if (out.length < names.length)
        throw fail('BAD_OPTION', `--skip leaves ${out.length} of the ${names.length} experts of ${t.name} unquantized; GGUF stores them as one tensor of one type: skip all or none`);
      this.types.set(t.name, 'F32');
    }
  }

  /** Writes model.gguf (general.file_type, quantization metadata, tokenizer) and removes the part file. */
  finish(extra: Array<[string, GgufValue]> = []): string[] {
    const tensors: GgufTensorToWrite[] = this.plan.tensors.map((t) => ({ name: t.name, type: this.types.get(t.name)!, ne: t.ne, data: () => this.bytesOf(t) }));
    const [arch, ...rest] = this.plan.metadata;
    writeGguf(this.file, [arch!, ...rest, ...extra, ...this.tokenizer], tensors);
    fs.closeSync(this.partsFd);
    fs.rmSync(this.partsFile, { force: true });
    return [this.file];
  }

  /** Removes the part file (failed run). */
  abort(): void {
    try {
      fs.closeSync(this.partsFd);
    } catch {
      /* closed */
    }
    fs.rmSync(this.partsFile, { force: true });
  }
}
