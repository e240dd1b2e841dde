/**
 * Reader for one safetensors file. Node has no mmap, so tensors are read one at a time with positioned
 * `fs.readSync` calls; the whole file is never loaded.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail, MoeQuantError } from '../errors.js';
import { DTYPE_BYTES, expand16InPlace, findNonFinite, toFloat32 } from './dtypes.js';
import { MAX_HEADER_BYTES, parseHeader, PREFIX_BYTES, type TensorInfo } from './header.js';

export type { TensorInfo } from './header.js';
export { tensorBytes, writeSafetensors, type TensorToWrite } from './writer.js';

/** Largest single `readSync` request: Node rejects lengths above 2 GiB, and 1 GiB keeps syscalls reasonable. */
const MAX_CHUNK = 1 << 30;

/** Turns a Node fs error into a one-line MoeQuantError (keeping the original as `cause`). */
function fsFail(what: string, file: string, e: unknown): MoeQuantError {
  if (e instanceof MoeQuantError) return e;
  const why = (e instanceof Error ? e.message : String(e)).split('\n')[0];
  return fail('BAD_CHECKPOINT', `cannot ${what} safetensors file ${file}: ${why}`, e);
}

/** Fills `buf` from `fd` at `position`, in chunks, failing (never spinning) if the file is shorter than expected. */
function readFully(fd: number, buf: Uint8Array, position: number, label: string): void {
  let done = 0;
  while (done < buf.byteLength) {
    const want = Math.min(MAX_CHUNK, buf.byteLength - done);
    const got = fs.readSync(fd, buf, done, want, position + done);
    if (got <= 0) {
      throw fail('BAD_CHECKPOINT', `safetensors file ${label}: unexpected end of file at byte ${position + done}`);
    }
    done += got;
  }
}

/** Flat element index `i` as a multi-dimensional index `[a, b, …]` for a tensor of `shape`. */
function indexOf(i: number, shape: readonly number[]): string {
  const idx: number[] = [];
  for (let d = shape.length - 1; d >= 0; d--) {
    idx.unshift(i % shape[d]!);
    i = Math.floor(i / shape[d]!);
  }
  return `[${idx.join(', ')}]`;
}

/** Allocates without zero-filling (every byte is about to be overwritten) and returns a plain Uint8Array. */
function allocBytes(n: number): Uint8Array {
  const b = Buffer.allocUnsafeSlow(n);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * One safetensors file with a validated header. Open with {@link SafetensorsFile.open}; the file descriptor is
 * opened on the first tensor read and kept until {@link SafetensorsFile.close} (a read after close reopens it).
 * Every read of float data (F64/F32/F16/BF16/F8, by any method, raw bytes included) is checked for NaN/±Inf as it
 * is read and throws NUMERIC naming the tensor and file: no weight that is not finite gets past the reader.
 */
export class SafetensorsFile {
  /** Path the file was opened with. */
  readonly path: string;
  /** The header's `__metadata__` (empty object when absent). */
  readonly metadata: Record<string, string>;
  /** Tensors by name, iterated in data order (by byte offset), which is the writer's order. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** File size in bytes when the header was read. */
  readonly fileSize: number;
  private readonly label: string;
  private fd: number | undefined;

  private constructor(file: string, metadata: Record<string, string>, tensors: TensorInfo[], fileSize: number) {
    this.path = file;
    this.label = path.basename(file);
    this.metadata = metadata;
    this.tensors = new Map(tensors.map((t) => [t.name, t]));
    this.fileSize = fileSize;
  }

  /**
   * Reads and validates the header of `file`. Throws BAD_CHECKPOINT (naming the file and the problem) when the
   * file cannot be opened, is truncated, or its header is malformed or inconsistent with the file size.
   */
  static open(file: string): SafetensorsFile {
    const label = path.basename(file);
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (e) {
      throw fsFail('open', file, e);
    }
    try {
      const fileSize = fs.fstatSync(fd).size;
      if (fileSize < PREFIX_BYTES) {
        throw fail('BAD_CHECKPOINT', `safetensors file ${label}: only ${fileSize} bytes, shorter than the 8-byte header length`);
      }
      const prefix = new Uint8Array(PREFIX_BYTES);
      readFully(fd, prefix, 0, label);
      const n = new DataView(prefix.buffer).getBigUint64(0, true);
      if (n === 0n) throw fail('BAD_CHECKPOINT', `safetensors file ${label}: header length is 0`);
      if (n > BigInt(MAX_HEADER_BYTES)) {
        throw fail('BAD_CHECKPOINT', `safetensors file ${label}: header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
      }
      const headerLen = Number(n);
      if (PREFIX_BYTES + headerLen > fileSize) {
        throw fail('BAD_CHECKPOINT', `safetensors file ${label}: header length ${headerLen} runs past the end of the ${fileSize}-byte file`);
      }
      const header = new Uint8Array(headerLen);
      readFully(fd, header, PREFIX_BYTES, label);
      const parsed = parseHeader(header, fileSize - PREFIX_BYTES - headerLen, label);
      return new SafetensorsFile(file, parsed.metadata, parsed.tensors, fileSize);
    } catch (e) {
      throw fsFail('read', file, e);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Header entry of `name`; throws BAD_CHECKPOINT naming the tensor and file when it is absent. */
  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw fail('BAD_CHECKPOINT', `tensor ${name} not found in safetensors file ${this.label}`);
    return t;
  }

  /** The tensor's raw little-endian bytes, in a new buffer. */
  readBytes(name: string): Uint8Array {
    const t = this.info(name);
    return this.readElements(t, 0, t.numel);
  }

  /** The tensor converted to float32 (see {@link toFloat32}), in a new array. */
  readFloat32(name: string): Float32Array {
    const t = this.info(name);
    return this.convert(t, this.readElements(t, 0, t.numel));
  }

  /**
   * Rows `[rowStart, rowStart + rowCount)` of the first dimension as float32 (row-major, `rowCount × rowSize`),
   * reading only those bytes — meant for embedding lookups. Throws BAD_OPTION when the range is outside the
   * tensor, BAD_CHECKPOINT for a scalar tensor.
   */
  readRowsFloat32(name: string, rowStart: number, rowCount: number): Float32Array {
    const t = this.info(name);
    if (t.shape.length === 0) throw fail('BAD_CHECKPOINT', `tensor ${name} in file ${this.label} is a scalar, it has no rows`);
    const rows = t.shape[0]!;
    if (!Number.isSafeInteger(rowStart) || !Number.isSafeInteger(rowCount) || rowStart < 0 || rowCount < 0 || rowStart + rowCount > rows) {
      throw fail('BAD_OPTION', `rows [${rowStart}, ${rowStart + rowCount}) are outside tensor ${name} (${rows} rows) in file ${this.label}`);
    }
    if (rowCount === 0 || rows === 0) return new Float32Array(0);
    const rowSize = t.numel / rows; // exact: numel = rows × (other dims)
    return this.convert(t, this.readElements(t, rowStart * rowSize, rowCount * rowSize));
  }

  /** Releases the file descriptor, if one is open. Safe to call more than once. */
  close(): void {
    if (this.fd !== undefined) {
      const fd = this.fd;
      this.fd = undefined;
      try {
        fs.closeSync(fd);
      } catch {
        // Nothing useful to do: the descriptor is gone either way.
      }
    }
  }

  private convert(t: TensorInfo, bytes: Uint8Array): Float32Array {
    // A fresh read buffer is 4-byte aligned and ours alone, so F32 can be viewed in place instead of copied.
    if (t.dtype === 'F32' && bytes.byteOffset % DTYPE_BYTES.F32 === 0) {
      return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    }
    return toFloat32(t.dtype, bytes);
  }

  /**
   * Read a float tensor into `dst` (float32, length = numel) with no intermediate buffer: F32 bytes land directly,
   * BF16/F16 are read into the upper half of `dst` and expanded in place. Used by streaming loads that reuse buffers.
   */
  readFloat32Into(name: string, dst: Float32Array): Float32Array {
    const t = this.info(name);
    if (dst.length !== t.numel) throw fail('BAD_OPTION', `readFloat32Into: ${name} has ${t.numel} elements, buffer holds ${dst.length}`);
    const bytes = new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength);
    if (t.dtype === 'F32') this.readElementsInto(t, 0, bytes);
    else if (t.dtype === 'BF16' || t.dtype === 'F16') {
      this.readElementsInto(t, 0, bytes.subarray(2 * t.numel));
      expand16InPlace(t.dtype, dst);
    } else dst.set(this.readFloat32(name));
    return dst;
  }

  /** Elements `[first, first + count)` of tensor `t` as raw bytes in a new buffer (checked, see readElementsInto). */
  private readElements(t: TensorInfo, first: number, count: number): Uint8Array {
    const buf = allocBytes(count * DTYPE_BYTES[t.dtype]);
    this.readElementsInto(t, first, buf);
    return buf;
  }

  /**
   * The one place tensor data is read: `target.byteLength` bytes of tensor `t` from element `first` on. Float data
   * is checked here, before anyone can use it, for NaN/±Inf (one pass over the raw bits, no conversion).
   */
  private readElementsInto(t: TensorInfo, first: number, target: Uint8Array): void {
    try {
      if (target.byteLength > 0) readFully(this.ensureOpen(), target, t.byteOffset + first * DTYPE_BYTES[t.dtype], this.label);
    } catch (e) {
      throw fsFail('read', this.label, e);
    }
    const bad = findNonFinite(t.dtype, target);
    if (bad) {
      const counts = [bad.nan > 0 ? `${bad.nan} NaN` : '', bad.inf > 0 ? `${bad.inf} ±Inf` : ''].filter(Boolean).join(' and ');
      const part = target.byteLength < t.byteLength ? ' in the rows read' : ''; // embedding lookups read a few rows
      throw fail(
        'NUMERIC',
        `tensor ${t.name} (${t.dtype} [${t.shape.join(', ')}]) in ${this.path} holds ${counts}${part}, the first at index ` +
          `${indexOf(first + bad.first, t.shape)}; moe-quant needs finite weights (the checkpoint is damaged or was saved from a diverged model)`,
      );
    }
  }

  private ensureOpen(): number {
    if (this.fd !== undefined) return this.fd;
    const fd = fs.openSync(this.path, 'r');
    // The header was validated against this size; a file replaced or truncated since then cannot be trusted.
    const size = fs.fstatSync(fd).size;
    if (size !== this.fileSize) {
      fs.closeSync(fd);
      throw fail('BAD_CHECKPOINT', `safetensors file ${this.label} changed size since it was opened (${this.fileSize} → ${size} bytes)`);
    }
    this.fd = fd;
    return fd;
  }
}
