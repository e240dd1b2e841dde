import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, it, expect } from 'vitest';
import { SafetensorsFile } from '../../src/checkpoint/safetensors.js';
import { catchMoe, rawSafetensors, tmpDir } from './helpers.js';

const dir = tmpDir('st');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

let counter = 0;
/** Writes `bytes` to a fresh file in the temp dir and returns its path. */
function put(bytes: Uint8Array): string {
  const p = path.join(dir, `f${counter++}.safetensors`);
  fs.writeFileSync(p, bytes);
  return p;
}

const DATA = new Uint8Array(new Float32Array([1, 2, 3, 4, 5, 6]).buffer);
const good = { __metadata__: { format: 'pt' }, a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [2], data_offsets: [16, 24] } };

/** Opens a file made of `header` + `data` and reads every tensor; returns the error message. */
function openErr(header: unknown, data: Uint8Array = DATA, len?: bigint): string {
  return catchMoe(() => {
    const f = SafetensorsFile.open(put(rawSafetensors(header, data, len)));
    for (const n of f.tensors.keys()) f.readBytes(n);
  }, 'BAD_CHECKPOINT').message;
}

function withA(a: unknown): unknown {
  return { ...good, a };
}

describe('SafetensorsFile.open validation', () => {
  it('reads a valid file (with padded header)', () => {
    const f = SafetensorsFile.open(put(rawSafetensors(JSON.stringify(good) + '     ', DATA)));
    expect(f.metadata).toEqual({ format: 'pt' });
    expect(Array.from(f.readFloat32('a'))).toEqual([1, 2, 3, 4]);
    expect(Array.from(f.readFloat32('b'))).toEqual([5, 6]);
    expect(f.fileSize).toBe(8 + JSON.stringify(good).length + 5 + 24);
    f.close();
    f.close(); // idempotent
    expect(Array.from(f.readFloat32('b'))).toEqual([5, 6]); // reopens after close
    f.close();
  });

  it('rejects broken framing', () => {
    expect(catchMoe(() => SafetensorsFile.open(put(new Uint8Array(5))), 'BAD_CHECKPOINT').message).toMatch(/f\d+\.safetensors.*shorter than/);
    expect(openErr(good, DATA, 0n)).toMatch(/header length is 0/);
    expect(openErr(good, DATA, 200_000_000n)).toMatch(/exceeds/);
    expect(openErr(good, DATA, 2n ** 64n - 1n)).toMatch(/exceeds/);
    expect(openErr(good, DATA, 100_000n)).toMatch(/past the end/);
    expect(catchMoe(() => SafetensorsFile.open(path.join(dir, 'missing.safetensors')), 'BAD_CHECKPOINT').message).toMatch(/cannot open.*missing\.safetensors/);
  });

  it('rejects bad header JSON', () => {
    const bad = Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]);
    const file = Buffer.alloc(8 + bad.length);
    file.writeBigUInt64LE(BigInt(bad.length));
    bad.copy(file, 8);
    expect(catchMoe(() => SafetensorsFile.open(put(file)), 'BAD_CHECKPOINT').message).toMatch(/UTF-8/);
    expect(openErr('{"a": ')).toMatch(/not valid JSON/);
    expect(openErr('[1,2]')).toMatch(/not a JSON object/);
    expect(openErr('null')).toMatch(/not a JSON object/);
    expect(openErr('"x"')).toMatch(/not a JSON object/);
  });

  it('rejects bad metadata and entries', () => {
    expect(openErr({ ...good, __metadata__: [] })).toMatch(/__metadata__ is not an object/);
    expect(openErr({ ...good, __metadata__: { n: 3 } })).toMatch(/__metadata__ value for "n" is not a string/);
    expect(openErr(withA(5))).toMatch(/tensor "a": entry is not an object/);
    expect(openErr(withA(null))).toMatch(/entry is not an object/);
    expect(openErr(withA({ shape: [2, 2], data_offsets: [0, 16] }))).toMatch(/missing dtype/);
    expect(openErr(withA({ dtype: 'F31', shape: [2, 2], data_offsets: [0, 16] }))).toMatch(/unknown dtype "F31"/);
    expect(openErr(withA({ dtype: 'constructor', shape: [2, 2], data_offsets: [0, 16] }))).toMatch(/unknown dtype/);
    expect(openErr(withA({ dtype: 'F32', data_offsets: [0, 16] }))).toMatch(/missing shape/);
    expect(openErr(withA({ dtype: 'F32', shape: 4, data_offsets: [0, 16] }))).toMatch(/shape is not an array/);
    expect(openErr(withA({ dtype: 'F32', shape: [-2, -2], data_offsets: [0, 16] }))).toMatch(/not a non-negative integer/);
    expect(openErr(withA({ dtype: 'F32', shape: [2.5, 2], data_offsets: [0, 16] }))).toMatch(/not a non-negative integer/);
    expect(openErr(withA({ dtype: 'F32', shape: ['2', 2], data_offsets: [0, 16] }))).toMatch(/not a non-negative integer/);
    expect(openErr(withA({ dtype: 'F32', shape: [2 ** 53, 2], data_offsets: [0, 16] }))).toMatch(/not a non-negative integer/);
    expect(openErr(withA({ dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 16] }))).toMatch(/too large/);
  });

  it('rejects bad offsets', () => {
    const a = (data_offsets: unknown, shape = [2, 2]) => withA({ dtype: 'F32', shape, data_offsets });
    expect(openErr(a([0]))).toMatch(/data_offsets \[0\] is not two/);
    expect(openErr(a([0, 16, 32]))).toMatch(/not two/);
    expect(openErr(a('0-16'))).toMatch(/not two/);
    expect(openErr(withA({ dtype: 'F32', shape: [2, 2] }))).toMatch(/missing data_offsets/);
    expect(openErr(a([-16, 0]))).toMatch(/not two/);
    expect(openErr(a([0, 1.5]))).toMatch(/not two/);
    expect(openErr(a([16, 0]))).toMatch(/begin 16 > end 0/);
    expect(openErr(a([0, 32]))).toMatch(/beyond the 24-byte data section/);
    expect(openErr(a([0, 2 ** 60]))).toMatch(/not two|beyond/);
    expect(openErr(a([0, 12]))).toMatch(/needs 16 bytes but data_offsets span 12/);
    expect(openErr(a([8, 24]))).toMatch(/tensors "a" and "b" overlap/);
    expect(openErr({ x: { dtype: 'U8', shape: [3], data_offsets: [0, 3] }, y: { dtype: 'U8', shape: [2], data_offsets: [2, 4] } })).toMatch(/overlap/);
  });

  it('accepts empty tensors, scalars and odd metadata keys', () => {
    const header = {
      __metadata__: { k: 'v' },
      e: { dtype: 'F32', shape: [0, 3], data_offsets: [0, 0] },
      s: { dtype: 'F32', shape: [], data_offsets: [0, 4] },
      z: { dtype: 'I64', shape: [0], data_offsets: [4, 4] },
    };
    // A literal "__proto__" key must stay an ordinary entry, not replace the metadata object's prototype.
    const text = JSON.stringify(header).replace('"k"', '"__proto__":"x","k"');
    expect(text).toContain('{"__proto__":"x","k":"v"}');
    const f = SafetensorsFile.open(put(rawSafetensors(text, new Uint8Array(new Float32Array([7]).buffer))));
    expect(Object.getPrototypeOf(f.metadata)).toBe(Object.prototype);
    expect(f.metadata.k).toBe('v');
    expect(Object.getOwnPropertyDescriptor(f.metadata, '__proto__')?.value).toBe('x');
    expect(f.readFloat32('e').length).toBe(0);
    expect(f.readRowsFloat32('e', 0, 0).length).toBe(0);
    expect(Array.from(f.readFloat32('s'))).toEqual([7]);
    expect(f.tensors.get('s')!.numel).toBe(1);
    expect(catchMoe(() => f.readRowsFloat32('s', 0, 1), 'BAD_CHECKPOINT').message).toMatch(/scalar/);
    f.close();
  });
});

describe('SafetensorsFile reads', () => {
  it('reads row ranges and rejects out-of-range rows', () => {
    const f = SafetensorsFile.open(put(rawSafetensors(good, DATA)));
    expect(Array.from(f.readRowsFloat32('a', 1, 1))).toEqual([3, 4]);
    expect(Array.from(f.readRowsFloat32('a', 0, 2))).toEqual([1, 2, 3, 4]);
    expect(Array.from(f.readRowsFloat32('b', 1, 1))).toEqual([6]);
    for (const [s, c] of [[1, 2], [-1, 1], [0, -1], [0.5, 1], [2, 1]] as const) {
      expect(catchMoe(() => f.readRowsFloat32('a', s, c), 'BAD_OPTION').message).toMatch(/outside tensor a \(2 rows\)/);
    }
    f.close();
  });

  it('notices a file truncated after open', () => {
    const p = put(rawSafetensors(good, DATA));
    const f = SafetensorsFile.open(p);
    fs.truncateSync(p, fs.statSync(p).size - 4);
    expect(catchMoe(() => f.readBytes('b'), 'BAD_CHECKPOINT').message).toMatch(/changed size/);
  });

  it('converts unaligned F16 and BF16 data sections', () => {
    // A 1-byte data section offset forces unaligned reads inside the file; conversions must not care.
    const header = { __metadata__: {}, h: { dtype: 'F16', shape: [2], data_offsets: [1, 5] }, b: { dtype: 'BF16', shape: [1], data_offsets: [5, 7] } };
    const data = new Uint8Array([0, 0x00, 0x3c, 0x00, 0xc0, 0x80, 0x3f]);
    const f = SafetensorsFile.open(put(rawSafetensors(header, data)));
    expect(Array.from(f.readFloat32('h'))).toEqual([1, -2]);
    expect(Array.from(f.readFloat32('b'))).toEqual([1]);
    f.close();
  });
});

describe('every read checks float data for NaN/Inf', () => {
  // w: F32 [3, 2] with a NaN at [1, 1] and -Inf at [2, 0]; h: F16 [2, 2] with +Inf at [1, 0]; b: BF16 [2] NaN at 1;
  // d: F64 [2] +Inf at 0; ok: finite BF16; i: I32 holding float NaN/Inf bit patterns, which are ordinary integers.
  const w = new Float32Array([1, 2, 3, NaN, -Infinity, 6]);
  const h = new Uint16Array([0x3c00, 0x4000, 0x7c00, 0x4200]);
  const b = new Uint16Array([0x3f80, 0x7fc1]);
  const d = new Float64Array([Infinity, 1]);
  const ok = new Uint16Array([0x3f80, 0x7f7f]);
  const i = new Int32Array([0x7fc00000, 0x7f800000]);
  const parts = [w, h, b, d, ok, i].map((a) => new Uint8Array(a.buffer));
  const offsets: number[][] = [];
  let at = 0;
  for (const p of parts) offsets.push([at, (at += p.byteLength)]);
  const data = new Uint8Array(at);
  parts.forEach((p, k) => data.set(p, offsets[k]![0]!));
  const header = {
    w: { dtype: 'F32', shape: [3, 2], data_offsets: offsets[0] },
    h: { dtype: 'F16', shape: [2, 2], data_offsets: offsets[1] },
    b: { dtype: 'BF16', shape: [2], data_offsets: offsets[2] },
    d: { dtype: 'F64', shape: [2], data_offsets: offsets[3] },
    ok: { dtype: 'BF16', shape: [2], data_offsets: offsets[4] },
    i: { dtype: 'I32', shape: [2], data_offsets: offsets[5] },
  };

  it('readBytes, readFloat32, readFloat32Into and readRowsFloat32 throw NUMERIC naming tensor, file, counts and index', () => {
    const p = put(rawSafetensors(header, data));
    const f = SafetensorsFile.open(p);
    const msg = (fn: () => unknown) => catchMoe(fn, 'NUMERIC').message;
    const wMsg = `tensor w (F32 [3, 2]) in ${p} holds 1 NaN and 1 ±Inf, the first at index [1, 1]; moe-quant needs finite weights (the checkpoint is damaged or was saved from a diverged model)`;
    expect(msg(() => f.readBytes('w'))).toBe(wMsg);
    expect(msg(() => f.readFloat32('w'))).toBe(wMsg);
    expect(msg(() => f.readFloat32Into('w', new Float32Array(6)))).toBe(wMsg);
    expect(msg(() => f.readFloat32('h'))).toMatch(new RegExp(`^tensor h \\(F16 \\[2, 2\\]\\) in ${p} holds 1 ±Inf, the first at index \\[1, 0\\];`));
    expect(msg(() => f.readFloat32Into('h', new Float32Array(4)))).toMatch(/^tensor h .* holds 1 ±Inf, the first at index \[1, 0\]/);
    expect(msg(() => f.readBytes('b'))).toMatch(/^tensor b \(BF16 \[2\]\) .* holds 1 NaN, the first at index \[1\]/);
    expect(msg(() => f.readFloat32Into('b', new Float32Array(2)))).toMatch(/^tensor b .* holds 1 NaN/);
    expect(msg(() => f.readFloat32('d'))).toMatch(/^tensor d \(F64 \[2\]\) .* holds 1 ±Inf, the first at index \[0\]/);
    expect(msg(() => f.readFloat32Into('d', new Float32Array(2)))).toMatch(/^tensor d .* holds 1 ±Inf/);
    // Row reads check (and count) only the rows read; finite rows of a damaged tensor still read.
    expect(Array.from(f.readRowsFloat32('w', 0, 1))).toEqual([1, 2]);
    expect(msg(() => f.readRowsFloat32('w', 1, 1))).toMatch(/^tensor w .* holds 1 NaN in the rows read, the first at index \[1, 1\]/);
    expect(msg(() => f.readRowsFloat32('w', 2, 1))).toMatch(/holds 1 ±Inf in the rows read, the first at index \[2, 0\]/);
    expect(Array.from(f.readRowsFloat32('h', 0, 1))).toEqual([1, 2]);
    expect(msg(() => f.readRowsFloat32('h', 1, 1))).toMatch(/^tensor h .* the first at index \[1, 0\]/);
    // finite floats (bf16 max included) and integer tensors read normally
    expect(Array.from(f.readFloat32('ok'))).toEqual([1, 3.3895313892515355e38]);
    expect(Array.from(f.readFloat32Into('ok', new Float32Array(2)))).toEqual([1, 3.3895313892515355e38]);
    expect(Array.from(new Int32Array(f.readBytes('i').buffer))).toEqual([0x7fc00000, 0x7f800000]);
    f.close();
  });
});
