/** Shared helpers for the checkpoint tests (not a test file itself). */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { expect } from 'vitest';
import { MoeQuantError, type ErrorCode } from '../../src/errors.js';

export { FIXTURES } from '../paths.js';

/** Deterministic PRNG in [0, 1) — the one calibration sampling uses. */
import { seededRandom as mulberry32 } from '../../src/calibration/samples.js';
export { mulberry32 };

/** A fresh temporary directory; remove it with `fs.rmSync(dir, { recursive: true, force: true })`. */
export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `moe-quant-${prefix}-`));
}

/** Bytes of a safetensors file built by hand: 8-byte length (or `lengthOverride`), header text, data. */
export function rawSafetensors(header: unknown, data: Uint8Array, lengthOverride?: bigint): Uint8Array {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  const h = Buffer.from(text, 'utf8');
  const out = Buffer.alloc(8 + h.length + data.length);
  out.writeBigUInt64LE(lengthOverride ?? BigInt(h.length), 0);
  h.copy(out, 8);
  out.set(data, 8 + h.length);
  return out;
}

/** Runs `fn` and returns the MoeQuantError it throws, failing the test if it throws anything else or nothing. */
export function catchMoe(fn: () => unknown, code?: ErrorCode): MoeQuantError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(MoeQuantError);
    const err = e as MoeQuantError;
    if (code) expect(err.code).toBe(code);
    expect(err.message).not.toContain('\n');
    return err;
  }
  throw new Error('expected a MoeQuantError, nothing was thrown');
}

/** Decodes an IEEE half bit pattern with plain arithmetic (independent of the lookup table under test). */
export function halfToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * Math.pow(2, -24);
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * Math.pow(2, e - 15);
}

/** Decodes a bfloat16 bit pattern with plain arithmetic. */
export function bf16ToNumber(b: number): number {
  const s = b & 0x8000 ? -1 : 1;
  const e = (b >> 7) & 0xff;
  const m = b & 0x7f;
  if (e === 0) return s * m * Math.pow(2, -133);
  if (e === 255) return m ? NaN : s * Infinity;
  return s * (1 + m / 128) * Math.pow(2, e - 127);
}
