/**
 * Parsing and validation of a safetensors JSON header. Everything here treats the header as untrusted:
 * every problem becomes a one-line BAD_CHECKPOINT error, and no loop runs longer than the header is big.
 */
import { fail } from '../errors.js';
import { DTYPE_BYTES, isDType, type DType } from './dtypes.js';

/** Largest header we accept; the reference implementation uses the same 100 MB cap against memory blow-ups. */
export const MAX_HEADER_BYTES = 100_000_000;

/** Size of the little-endian u64 header-length prefix. */
export const PREFIX_BYTES = 8;

/** One tensor of a safetensors file, with offsets already made absolute. */
export interface TensorInfo {
  /** Tensor name as written in the header. */
  name: string;
  /** Element type. */
  dtype: DType;
  /** Dimensions, outermost first; `[]` is a scalar. */
  shape: number[];
  /** Number of elements (product of `shape`, 1 for a scalar). */
  numel: number;
  /** Absolute byte position of the first element in the file. */
  byteOffset: number;
  /** Size of the tensor's data in bytes. */
  byteLength: number;
}

/** Result of {@link parseHeader}. */
export interface ParsedHeader {
  /** The `__metadata__` map, or `{}` when absent. */
  metadata: Record<string, string>;
  /** Tensors in data order (by byte offset); JSON.parse cannot keep header order for integer-like names. */
  tensors: TensorInfo[];
}

/**
 * Product of `dims` times `scale`, or undefined when it would exceed Number.MAX_SAFE_INTEGER.
 * A zero dimension makes the product zero regardless of the others, as for real tensors.
 */
export function safeProduct(dims: readonly number[], scale = 1): number | undefined {
  if (dims.includes(0)) return 0;
  let p = scale;
  for (const d of dims) {
    if (p > Number.MAX_SAFE_INTEGER / d) return undefined;
    p *= d;
  }
  return p;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isSafeNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Validates that `shape` is an array of non-negative safe integers and returns it as number[].
 * `where` prefixes the error message (e.g. "file x: tensor y").
 */
export function checkShape(shape: unknown, where: string): number[] {
  if (!Array.isArray(shape)) throw fail('BAD_CHECKPOINT', `${where}: shape is not an array`);
  for (const d of shape) {
    if (!isSafeNonNegInt(d)) {
      throw fail('BAD_CHECKPOINT', `${where}: shape ${short(shape)} has an entry that is not a non-negative integer`);
    }
  }
  return shape.slice() as number[];
}

/** JSON of `v`, cut to keep error messages on one short line even for hostile inputs. */
function short(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/**
 * Decodes and validates the header bytes of a safetensors file.
 * @param headerBytes - the N header bytes (after the 8-byte length prefix)
 * @param dataSize - bytes available after the header (file size − 8 − N)
 * @param label - file name used in error messages
 */
export function parseHeader(headerBytes: Uint8Array, dataSize: number, label: string): ParsedHeader {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw fail('BAD_CHECKPOINT', `safetensors file ${label}: header is not valid UTF-8`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw fail('BAD_CHECKPOINT', `safetensors file ${label}: header is not valid JSON (${why.split('\n')[0]})`);
  }
  if (!isPlainObject(json)) throw fail('BAD_CHECKPOINT', `safetensors file ${label}: header is not a JSON object`);

  let metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  const dataStart = PREFIX_BYTES + headerBytes.byteLength;
  for (const [name, entry] of Object.entries(json)) {
    if (name === '__metadata__') {
      metadata = checkMetadata(entry, label);
      continue;
    }
    tensors.push(checkEntry(name, entry, dataStart, dataSize, label));
  }
  // Stable sort: equal offsets (empty tensors) keep their parse order.
  tensors.sort((a, b) => a.byteOffset - b.byteOffset);
  checkOverlaps(tensors, dataStart, label);
  return { metadata, tensors };
}

function checkMetadata(entry: unknown, label: string): Record<string, string> {
  if (!isPlainObject(entry)) throw fail('BAD_CHECKPOINT', `safetensors file ${label}: __metadata__ is not an object`);
  for (const [k, v] of Object.entries(entry)) {
    if (typeof v !== 'string') {
      throw fail('BAD_CHECKPOINT', `safetensors file ${label}: __metadata__ value for ${short(k)} is not a string`);
    }
  }
  // fromEntries defines own properties, so a "__proto__" key cannot change the prototype.
  return Object.fromEntries(Object.entries(entry)) as Record<string, string>;
}

function checkEntry(name: string, entry: unknown, dataStart: number, dataSize: number, label: string): TensorInfo {
  const where = `safetensors file ${label}: tensor ${short(name)}`;
  if (!isPlainObject(entry)) throw fail('BAD_CHECKPOINT', `${where}: entry is not an object`);
  const { dtype, shape: rawShape, data_offsets: offsets } = entry;
  if (dtype === undefined) throw fail('BAD_CHECKPOINT', `${where}: missing dtype`);
  if (!isDType(dtype)) throw fail('BAD_CHECKPOINT', `${where}: unknown dtype ${short(dtype)}`);
  if (rawShape === undefined) throw fail('BAD_CHECKPOINT', `${where}: missing shape`);
  const shape = checkShape(rawShape, where);
  if (offsets === undefined) throw fail('BAD_CHECKPOINT', `${where}: missing data_offsets`);
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !isSafeNonNegInt(offsets[0]) ||
    !isSafeNonNegInt(offsets[1])
  ) {
    throw fail('BAD_CHECKPOINT', `${where}: data_offsets ${short(offsets)} is not two non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) throw fail('BAD_CHECKPOINT', `${where}: data_offsets begin ${begin} > end ${end}`);
  if (end > dataSize) {
    throw fail('BAD_CHECKPOINT', `${where}: data ends at ${end}, beyond the ${dataSize}-byte data section`);
  }
  const size = DTYPE_BYTES[dtype];
  const numel = safeProduct(shape);
  const expected = numel === undefined ? undefined : safeProduct([numel], size);
  if (expected === undefined) throw fail('BAD_CHECKPOINT', `${where}: shape ${short(shape)} is too large`);
  if (expected !== end - begin) {
    throw fail(
      'BAD_CHECKPOINT',
      `${where}: shape ${short(shape)} × ${dtype} needs ${expected} bytes but data_offsets span ${end - begin}`,
    );
  }
  return { name, dtype, shape, numel: numel!, byteOffset: dataStart + begin, byteLength: end - begin };
}

/** Expects `tensors` sorted by byteOffset. */
function checkOverlaps(tensors: TensorInfo[], dataStart: number, label: string): void {
  // Sorted by start, any overlap shows up between neighbours; empty tensors cannot overlap anything.
  const sorted = tensors.filter((t) => t.byteLength > 0);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.byteOffset < prev.byteOffset + prev.byteLength) {
      throw fail(
        'BAD_CHECKPOINT',
        `safetensors file ${label}: tensors ${short(prev.name)} and ${short(cur.name)} overlap ` +
          `(data offsets ${prev.byteOffset - dataStart} and ${cur.byteOffset - dataStart})`,
      );
    }
  }
}
