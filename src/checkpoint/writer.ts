/**
 * Streaming safetensors writer: the header is computed from shapes alone, then tensors are written one by one,
 * so a lazily produced tensor only needs to exist in memory while it is being written.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail, MoeQuantError } from '../errors.js';
import { DTYPE_BYTES, isDType, type DType } from './dtypes.js';
import { checkShape, PREFIX_BYTES, safeProduct } from './header.js';

/** Largest single `writeSync` request (Node caps one call at 2 GiB). */
const MAX_CHUNK = 1 << 30;

/** One tensor for {@link writeSafetensors}. */
export interface TensorToWrite {
  /** Tensor name; must be unique and not `__metadata__`. */
  name: string;
  /** Element type. */
  dtype: DType;
  /** Dimensions; `[]` is a scalar. */
  shape: number[];
  /** Raw little-endian bytes, or a function producing them, called once when this tensor's turn comes. */
  data: Uint8Array | (() => Uint8Array);
}

/** Any typed array (or DataView) as a Uint8Array view over the same memory (no copy). */
export function tensorBytes(arr: ArrayBufferView): Uint8Array {
  return new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
}

interface Planned {
  t: TensorToWrite;
  byteLength: number;
}

/** Validates the tensor list and computes each tensor's byte length. Errors are IO: the output cannot be written. */
function plan(tensors: readonly TensorToWrite[], label: string): Planned[] {
  const seen = new Set<string>();
  return tensors.map((t) => {
    const where = `cannot write ${label}: tensor ${t.name}`;
    if (typeof t.name !== 'string' || t.name === '__metadata__') throw fail('IO', `${where}: invalid tensor name`);
    if (seen.has(t.name)) throw fail('IO', `${where}: name appears twice`);
    seen.add(t.name);
    if (!isDType(t.dtype)) throw fail('IO', `${where}: unknown dtype ${String(t.dtype)}`);
    let shape: number[];
    try {
      shape = checkShape(t.shape, where);
    } catch (e) {
      throw fail('IO', (e as Error).message);
    }
    const numel = safeProduct(shape);
    const byteLength = numel === undefined ? undefined : safeProduct([numel], DTYPE_BYTES[t.dtype]);
    if (byteLength === undefined) throw fail('IO', `${where}: shape [${shape.join(', ')}] is too large`);
    return { t, byteLength };
  });
}

/**
 * Header JSON built by hand rather than via one JSON.stringify: JS objects put integer-like keys first, which would
 * reorder tensors named "0", "1"…; this keeps `__metadata__` first, then tensors in the given order.
 */
function headerJson(planned: readonly Planned[], metadata: Record<string, string> | undefined, label: string): string {
  const parts: string[] = [];
  if (metadata !== undefined) {
    const keys = Object.keys(metadata).sort(); // sorted, so equal metadata always gives equal bytes
    const kv = keys.map((k) => {
      const v = metadata[k];
      if (typeof v !== 'string') throw fail('IO', `cannot write ${label}: metadata value for ${k} is not a string`);
      return `${JSON.stringify(k)}:${JSON.stringify(v)}`;
    });
    parts.push(`"__metadata__":{${kv.join(',')}}`);
  }
  let offset = 0;
  for (const { t, byteLength } of planned) {
    const entry = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + byteLength] };
    parts.push(`${JSON.stringify(t.name)}:${JSON.stringify(entry)}`);
    offset += byteLength;
  }
  return `{${parts.join(',')}}`;
}

function isFsError(e: unknown): boolean {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).syscall === 'string';
}

function writeFully(fd: number, bytes: Uint8Array, label: string): void {
  let done = 0;
  while (done < bytes.byteLength) {
    const n = fs.writeSync(fd, bytes, done, Math.min(MAX_CHUNK, bytes.byteLength - done));
    if (n <= 0) throw fail('IO', `cannot write ${label}: write returned 0 bytes`);
    done += n;
  }
}

/**
 * Writes a safetensors file: header padded with spaces so the data section starts 8-byte aligned, then each
 * tensor's bytes in the order given. Lazy `data()` functions are called one at a time, so only one tensor needs
 * to be in memory. The file is written to `path.tmp-<pid>` and renamed into place, so readers never see a
 * partial file. Output is deterministic for equal inputs.
 * Throws IO when the inputs are inconsistent (bad name/dtype/shape, data length not matching shape × dtype) or
 * the file system fails; the temporary file is removed on failure.
 */
export function writeSafetensors(
  file: string,
  tensors: ReadonlyArray<TensorToWrite>,
  metadata?: Record<string, string>,
): void {
  const label = path.basename(file);
  const planned = plan(tensors, label);
  const json = Buffer.from(headerJson(planned, metadata, label), 'utf8');
  const pad = (8 - ((PREFIX_BYTES + json.byteLength) % 8)) % 8;
  const header = Buffer.alloc(PREFIX_BYTES + json.byteLength + pad, 0x20);
  header.writeBigUInt64LE(BigInt(json.byteLength + pad), 0);
  json.copy(header, PREFIX_BYTES);

  const tmp = `${file}.tmp-${process.pid}`;
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'w');
    writeFully(fd, header, label);
    for (const { t, byteLength } of planned) {
      const data = typeof t.data === 'function' ? t.data() : t.data;
      if (!(data instanceof Uint8Array)) {
        throw fail('IO', `cannot write ${label}: data for tensor ${t.name} is not a Uint8Array`);
      }
      if (data.byteLength !== byteLength) {
        throw fail(
          'IO',
          `cannot write ${label}: tensor ${t.name} has ${data.byteLength} bytes of data but shape ` +
            `[${t.shape.join(', ')}] × ${t.dtype} needs ${byteLength}`,
        );
      }
      writeFully(fd, data, label);
    }
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, file);
  } catch (e) {
    if (fd !== undefined) {
      try {
        fs.closeSync(fd);
      } catch {
        // Already failing; the original error is the one worth reporting.
      }
    }
    fs.rmSync(tmp, { force: true });
    // Only file-system failures become IO errors; anything else (e.g. thrown by a data() callback) is a bug to surface.
    if (e instanceof MoeQuantError || !isFsError(e)) throw e;
    const why = (e instanceof Error ? e.message : String(e)).split('\n')[0];
    throw fail('IO', `cannot write ${file}: ${why}`, e);
  }
}
