/**
 * The GGUF container (version 3): header, metadata key/values, tensor infos, aligned tensor data.
 * Writing streams tensors one at a time into a file (their sizes are known up front); reading parses the header
 * on demand from the file, so the tensor data is never loaded as a whole.
 */
import fs from 'node:fs';
import { fail } from '../../errors.js';
import { GGML_TYPE_BY_ID, GGML_TYPES, rowBytes, type GgmlType } from './quants.js';

const MAGIC = 0x46554747; // "GGUF"
const VERSION = 3;
export const DEFAULT_ALIGNMENT = 32;

/** GGUF value types. */
const T = { u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, str: 8, arr: 9, u64: 10, i64: 11, f64: 12 } as const;
type Scalar = Exclude<keyof typeof T, 'arr'>;
const TYPE_NAME = new Map<number, keyof typeof T>(Object.entries(T).map(([k, v]) => [v, k as keyof typeof T]));

/** One metadata value with its GGUF type. */
export type GgufValue =
  | { type: Exclude<Scalar, 'str' | 'bool'>; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'str'; value: string }
  | { type: 'arr'; of: Exclude<Scalar, 'bool'>; value: Array<number | string> };

export const u32 = (value: number): GgufValue => ({ type: 'u32', value });
export const i32 = (value: number): GgufValue => ({ type: 'i32', value });
export const f32 = (value: number): GgufValue => ({ type: 'f32', value });
export const bool = (value: boolean): GgufValue => ({ type: 'bool', value });
export const str = (value: string): GgufValue => ({ type: 'str', value });

/** A tensor to write: ggml `ne` (ne[0] = the contiguous row length) and its bytes, produced when written. */
export interface GgufTensorToWrite {
  name: string;
  type: GgmlType;
  ne: number[];
  data: () => Uint8Array;
}

/** Bytes of a tensor of type `type` with dimensions `ne`. */
export function tensorByteSize(type: GgmlType, ne: number[]): number {
  return rowBytes(type, ne[0]!) * ne.slice(1).reduce((a, b) => a * b, 1);
}

class ByteSink {
  private chunks: Uint8Array[] = [];
  private cur = new Uint8Array(1 << 16);
  private pos = 0;
  size = 0;
  private ensure(n: number) {
    if (this.pos + n <= this.cur.length) return;
    this.chunks.push(this.cur.subarray(0, this.pos));
    this.cur = new Uint8Array(Math.max(1 << 16, n));
    this.pos = 0;
  }
  bytes(b: Uint8Array) {
    this.ensure(b.length);
    this.cur.set(b, this.pos);
    this.pos += b.length;
    this.size += b.length;
  }
  num(type: Scalar, v: number) {
    const sizes: Record<string, number> = { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, u64: 8, i64: 8, f64: 8, bool: 1 };
    const n = sizes[type]!;
    this.ensure(n);
    const dv = new DataView(this.cur.buffer, this.cur.byteOffset + this.pos, n);
    switch (type) {
      case 'u8': case 'bool': dv.setUint8(0, v); break;
      case 'i8': dv.setInt8(0, v); break;
      case 'u16': dv.setUint16(0, v, true); break;
      case 'i16': dv.setInt16(0, v, true); break;
      case 'u32': dv.setUint32(0, v, true); break;
      case 'i32': dv.setInt32(0, v, true); break;
      case 'f32': dv.setFloat32(0, v, true); break;
      case 'u64': dv.setBigUint64(0, BigInt(v), true); break;
      case 'i64': dv.setBigInt64(0, BigInt(v), true); break;
      case 'f64': dv.setFloat64(0, v, true); break;
    }
    this.pos += n;
    this.size += n;
  }
  str(s: string) {
    const b = Buffer.from(s, 'utf8');
    this.num('u64', b.length);
    this.bytes(b);
  }
  concat(): Uint8Array {
    this.chunks.push(this.cur.subarray(0, this.pos));
    return Buffer.concat(this.chunks);
  }
}

function writeValue(s: ByteSink, v: GgufValue): void {
  s.num('u32', T[v.type]);
  if (v.type === 'str') s.str(v.value);
  else if (v.type === 'bool') s.num('bool', v.value ? 1 : 0);
  else if (v.type === 'arr') {
    s.num('u32', T[v.of]);
    s.num('u64', v.value.length);
    for (const x of v.value) {
      if (v.of === 'str') s.str(String(x));
      else s.num(v.of, Number(x));
    }
  } else s.num(v.type, v.value);
}

/**
 * Writes a GGUF file: metadata in the given order, tensors in the given order, each at an offset aligned to
 * `alignment`. `data()` of each tensor is called once, in order, and must return exactly its byte size.
 */
export function writeGguf(file: string, metadata: Array<[string, GgufValue]>, tensors: GgufTensorToWrite[], alignment = DEFAULT_ALIGNMENT): void {
  const s = new ByteSink();
  s.num('u32', MAGIC);
  s.num('u32', VERSION);
  s.num('u64', tensors.length);
  s.num('u64', metadata.length);
  for (const [k, v] of metadata) {
    s.str(k);
    writeValue(s, v);
  }
  const align = (x: number) => Math.ceil(x / alignment) * alignment;
  let offset = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    s.str(t.name);
    s.num('u32', t.ne.length);
    for (const d of t.ne) s.num('u64', d);
    s.num('u32', GGML_TYPES[t.type].id);
    s.num('u64', offset);
    const size = tensorByteSize(t.type, t.ne);
    sizes.push(size);
    offset = align(offset + size);
  }
  const header = s.concat();
  const fd = fs.openSync(file, 'w');
  try {
    let pos = 0;
    const put = (b: Uint8Array) => {
      let done = 0;
      while (done < b.length) done += fs.writeSync(fd, b, done, b.length - done, pos + done);
      pos += b.length;
    };
    put(header);
    put(new Uint8Array(align(pos) - pos));
    tensors.forEach((t, i) => {
      const b = t.data();
      if (b.length !== sizes[i]) throw new Error(`GGUF tensor ${t.name}: ${b.length} bytes produced, ${sizes[i]} expected`);
      put(b);
      put(new Uint8Array(align(b.length) - b.length));
    });
  } finally {
    fs.closeSync(fd);
  }
}

/** A tensor's entry in a GGUF file. */
export interface GgufTensorInfo {
  name: string;
  type: GgmlType;
  ne: number[];
  /** Absolute byte offset in the file. */
  offset: number;
  byteLength: number;
}

/** A parsed GGUF file: metadata and tensor infos; tensor bytes are read on demand. */
export class GgufFile {
  readonly metadata = new Map<string, GgufValue>();
  readonly tensors = new Map<string, GgufTensorInfo>();
  private fd: number | null = null;

  private constructor(readonly path: string) {}

  static open(file: string): GgufFile {
    const g = new GgufFile(file);
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (e) {
      throw fail('BAD_CHECKPOINT', `cannot open GGUF file ${file}: ${(e as Error).message.split('\n')[0]}`, e);
    }
    g.fd = fd;
    try {
      g.parse(fd, fs.fstatSync(fd).size);
    } catch (e) {
      fs.closeSync(fd);
      g.fd = null;
      throw e;
    }
    return g;
  }

  private parse(fd: number, fileSize: number): void {
    let pos = 0;
    let buf = Buffer.alloc(0);
    let bufStart = 0;
    const bad = (msg: string) => fail('BAD_CHECKPOINT', `GGUF file ${this.path}: ${msg}`);
    const need = (n: number) => {
      if (pos + n > fileSize) throw bad(`truncated header (needs byte ${pos + n}, file has ${fileSize})`);
      if (pos + n <= bufStart + buf.length) return;
      const len = Math.min(fileSize - pos, Math.max(n, 1 << 20));
      buf = Buffer.alloc(len);
      fs.readSync(fd, buf, 0, len, pos);
      bufStart = pos;
    };
    const at = () => pos - bufStart;
    const u32r = () => (need(4), (pos += 4), buf.readUInt32LE(at() - 4));
    const u64r = () => {
      need(8);
      pos += 8;
      const v = buf.readBigUInt64LE(at() - 8);
      if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`a 64-bit count/size ${v} is too large`);
      return Number(v);
    };
    const strr = () => {
      const n = u64r();
      if (n > 1 << 24) throw bad(`a string of ${n} bytes in the header`);
      need(n);
      pos += n;
      return buf.toString('utf8', at() - n, at());
    };
    const scalar = (t: number): number | string | boolean => {
      const name = TYPE_NAME.get(t);
      const sizes: Record<string, number> = { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, u64: 8, i64: 8, f64: 8, bool: 1 };
      if (name === 'str') return strr();
      if (!name || name === 'arr') throw bad(`unknown metadata value type ${t}`);
      const n = sizes[name]!;
      need(n);
      pos += n;
      const o = at() - n;
      switch (name) {
        case 'u8': return buf.readUInt8(o);
        case 'i8': return buf.readInt8(o);
        case 'u16': return buf.readUInt16LE(o);
        case 'i16': return buf.readInt16LE(o);
        case 'u32': return buf.readUInt32LE(o);
        case 'i32': return buf.readInt32LE(o);
        case 'f32': return buf.readFloatLE(o);
        case 'f64': return buf.readDoubleLE(o);
        case 'u64': return Number(buf.readBigUInt64LE(o));
        case 'i64': return Number(buf.readBigInt64LE(o));
        case 'bool': return buf.readUInt8(o) !== 0;
      }
      throw bad(`unknown metadata value type ${t}`);
    };
    if (fileSize < 24) throw bad('too short to be a GGUF file');
    if (u32r() !== MAGIC) throw bad('not a GGUF file (bad magic)');
    const version = u32r();
    if (version !== 2 && version !== 3) throw bad(`GGUF version ${version} is not supported (2 or 3)`);
    const nTensors = u64r();
    const nKv = u64r();
    for (let i = 0; i < nKv; i++) {
      const key = strr();
      const t = u32r();
      let value: GgufValue;
      if (t === T.arr) {
        const of = u32r();
        const n = u64r();
        const ofName = TYPE_NAME.get(of);
        if (!ofName || ofName === 'arr' || ofName === 'bool') throw bad(`metadata ${key}: unsupported array element type ${of}`);
        const arr: Array<number | string> = new Array(n);
        for (let j = 0; j < n; j++) arr[j] = scalar(of) as number | string;
        value = { type: 'arr', of: ofName, value: arr };
      } else {
        const name = TYPE_NAME.get(t);
        const v = scalar(t);
        value = { type: name, value: v } as GgufValue;
      }
      this.metadata.set(key, value);
    }
    const infos: Array<Omit<GgufTensorInfo, 'offset' | 'byteLength'> & { rel: number }> = [];
    for (let i = 0; i < nTensors; i++) {
      const name = strr();
      const nd = u32r();
      if (nd > 4) throw bad(`tensor ${name} has ${nd} dimensions`);
      const ne = Array.from({ length: nd }, u64r);
      const tid = u32r();
      const type = GGML_TYPE_BY_ID.get(tid);
      if (!type) throw bad(`tensor ${name} has ggml type ${tid}, which moe-quant cannot read (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)`);
      infos.push({ name, ne, type, rel: u64r() });
    }
    const alignment = Number(this.metadata.get('general.alignment')?.value ?? DEFAULT_ALIGNMENT);
    const dataStart = Math.ceil(pos / alignment) * alignment;
    for (const t of infos) {
      let byteLength: number;
      try {
        byteLength = tensorByteSize(t.type, t.ne);
      } catch {
        throw bad(`tensor ${t.name}: row length ${t.ne[0]} is not a multiple of ${t.type}'s block of ${GGML_TYPES[t.type].blockLen}`);
      }
      const offset = dataStart + t.rel;
      if (offset + byteLength > fileSize) throw bad(`tensor ${t.name} (${byteLength} bytes at ${offset}) runs past the end of the file (${fileSize} bytes)`);
      if (this.tensors.has(t.name)) throw bad(`tensor ${t.name} appears twice`);
      this.tensors.set(t.name, { name: t.name, type: t.type, ne: t.ne, offset, byteLength });
    }
  }

  /** A metadata value (its plain JavaScript value), or undefined. */
  get(key: string): number | string | boolean | Array<number | string> | undefined {
    return this.metadata.get(key)?.value;
  }

  readBytes(name: string): Uint8Array {
    const t = this.tensors.get(name);
    if (!t) throw fail('BAD_CHECKPOINT', `tensor ${name} is not in GGUF file ${this.path}`);
    return this.readRange(name, 0, t.byteLength);
  }

  /** Bytes [offset, offset+length) of tensor `name`'s data. */
  readRange(name: string, offset: number, length: number): Uint8Array {
    const t = this.tensors.get(name);
    if (!t) throw fail('BAD_CHECKPOINT', `tensor ${name} is not in GGUF file ${this.path}`);
    if (offset < 0 || offset + length > t.byteLength) throw new Error(`readRange ${name}: [${offset}, ${offset + length}) outside ${t.byteLength} bytes`);
    if (this.fd === null) this.fd = fs.openSync(this.path, 'r');
    const out = new Uint8Array(length);
    let done = 0;
    while (done < out.length) {
      const got = fs.readSync(this.fd, out, done, Math.min(1 << 30, out.length - done), t.offset + offset + done);
      if (got <= 0) throw fail('BAD_CHECKPOINT', `GGUF file ${this.path}: unexpected end of file in tensor ${name}`);
      done += got;
    }
    return out;
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}
