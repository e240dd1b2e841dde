import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, it, expect } from 'vitest';
import { Checkpoint, INDEX_FILE } from '../../src/checkpoint/checkpoint.js';
import { SafetensorsFile, tensorBytes, writeSafetensors, type TensorToWrite } from '../../src/checkpoint/safetensors.js';
import { MoeQuantError } from '../../src/errors.js';
import { mulberry32, rawSafetensors, tmpDir } from './helpers.js';

const dir = tmpDir('fuzz');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const rand = mulberry32(0x5afe7e45);
const int = (n: number) => Math.floor(rand() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

/** A small valid file covering several dtypes, empty and scalar tensors, and random data (NaNs included). */
function baseFile(): Uint8Array {
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => int(256));
  const tensors: TensorToWrite[] = [
    { name: 'w.f32', dtype: 'F32', shape: [3, 4], data: bytes(48) },
    { name: 'w.bf16', dtype: 'BF16', shape: [5, 2], data: bytes(20) },
    { name: 'w.f16', dtype: 'F16', shape: [2, 2, 2], data: bytes(16) },
    { name: 'ids', dtype: 'I32', shape: [4], data: tensorBytes(new Int32Array([1, 2, 3, 4])) },
    { name: 'u8', dtype: 'U8', shape: [7], data: bytes(7) },
    { name: 'i64', dtype: 'I64', shape: [2], data: bytes(16) },
    { name: 'mask', dtype: 'BOOL', shape: [3], data: bytes(3) },
    { name: 'fp8', dtype: 'F8_E4M3', shape: [2, 2], data: bytes(4) },
    { name: 'empty', dtype: 'F64', shape: [0, 4], data: new Uint8Array(0) },
    { name: 'scalar', dtype: 'F64', shape: [], data: bytes(8) },
  ];
  const p = path.join(dir, 'base.safetensors');
  writeSafetensors(p, tensors, { format: 'pt' });
  return new Uint8Array(fs.readFileSync(p)); // a plain copy: Buffer#slice would alias, and mutations must not
}

const HOSTILE: unknown[] = [
  -1, 0, 1, 3, 1.5, 2 ** 31, 2 ** 32 + 1, 2 ** 53, 2 ** 60, 1e308, -0, 'F32', 'x', '', null, true, [], {}, [1], [0, 0],
  [1, 2, 3], [[1]], [-1, 2], [2 ** 26, 2 ** 26, 2 ** 26], [2 ** 53 - 1, 2], ['1', '2'], [1e308, 0], { 0: 1, 1: 2 },
];
const DTYPES = ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'U16', 'U32', 'U64', 'BOOL', 'F8_E4M3', 'F8_E5M2', 'F4', 'f32', 'toString', 7];

/** Re-serialises a mutated header object; sometimes lies about its length or pads it. */
function withHeader(h: Record<string, unknown>, data: Uint8Array): Uint8Array {
  const text = JSON.stringify(h) + ' '.repeat(int(3) === 0 ? int(9) : 0);
  return rawSafetensors(text, data);
}

function mutateJson(base: Uint8Array): Uint8Array {
  const n = Number(Buffer.from(base).readBigUInt64LE(0));
  const h = JSON.parse(Buffer.from(base.subarray(8, 8 + n)).toString('utf8')) as Record<string, Record<string, unknown>>;
  let data: Uint8Array = base.subarray(8 + n);
  const names = Object.keys(h).filter((k) => k !== '__metadata__');
  for (let m = 1 + int(3); m > 0; m--) {
    const t = h[pick(names)]!;
    // An earlier mutation may have replaced this entry by a non-object; then only whole-entry changes apply.
    const op = typeof t === 'object' && t !== null && !Array.isArray(t) ? int(9) : pick([7, 8]);
    switch (op) {
      case 0: t.data_offsets = pick(HOSTILE); break;
      case 1: t.data_offsets = [int(data.length + 8), int(data.length + 8)]; break;
      case 2: t.shape = pick(HOSTILE); break;
      case 3: t.shape = Array.from({ length: int(4) }, () => int(6)); break;
      case 4: t.dtype = pick(DTYPES); break;
      case 5: t.data_offsets = h[pick(names)]!.data_offsets; break; // overlap or duplicate range
      case 6: delete t[pick(['dtype', 'shape', 'data_offsets'])]; break;
      case 7: h[pick([...names, '__metadata__'])] = pick(HOSTILE) as Record<string, unknown>; break;
      default: data = int(2) ? data.subarray(0, int(data.length)) : Buffer.concat([data, new Uint8Array(int(16))]); break;
    }
  }
  return withHeader(h, data);
}

function mutate(base: Uint8Array, kind: number): Uint8Array {
  const n = Number(Buffer.from(base).readBigUInt64LE(0));
  switch (kind) {
    case 0: {
      // Random byte flips inside the header.
      const out = base.slice();
      for (let k = 1 + int(6); k > 0; k--) {
        const at = 8 + int(n);
        out[at] = int(2) ? int(256) : out[at]! ^ (1 << int(8));
      }
      return out;
    }
    case 1:
      return base.slice(0, int(base.length)); // truncation
    case 2: {
      // Header length field set to something else: small, near the truth, huge, or fully random.
      const out = Buffer.from(base);
      const choices = [BigInt(int(base.length + 16)), BigInt(n + int(17) - 8), 2n ** 63n, 2n ** 64n - 1n, BigInt(int(2 ** 30)) * BigInt(int(2 ** 30)), 100_000_000n, 100_000_001n];
      out.writeBigUInt64LE(pick(choices), 0);
      return out;
    }
    case 3:
      return mutateJson(base);
    default: {
      const out = mutateJson(base);
      if (out.length > 8) out[8 + int(out.length - 8)] = int(256);
      return out;
    }
  }
}

/** Opens `file` and reads every tensor every way; returns 'ok', or the error caught. */
function exercise(file: string): 'ok' | unknown {
  let f: SafetensorsFile | undefined;
  try {
    f = SafetensorsFile.open(file);
    for (const t of f.tensors.values()) {
      f.readBytes(t.name);
      f.readFloat32(t.name);
      if (t.shape.length > 0) f.readRowsFloat32(t.name, 0, Math.min(1, t.shape[0]!));
    }
    return 'ok';
  } catch (e) {
    return e;
  } finally {
    f?.close();
  }
}

describe('fuzz: corrupted safetensors never escape as non-MoeQuantError', () => {
  it('survives 1500 corrupted variants', () => {
    const base = baseFile();
    expect(exercise(path.join(dir, 'base.safetensors'))).not.toBeInstanceOf(Error);
    const file = path.join(dir, 'variant.safetensors');
    const counts = { ok: 0, moe: 0 };
    const others: string[] = [];
    const started = Date.now();
    for (let i = 0; i < 1500; i++) {
      const kind = i % 5;
      fs.writeFileSync(file, mutate(base, kind));
      const r = exercise(file);
      if (r === 'ok') counts.ok++;
      else if (r instanceof MoeQuantError && !r.message.includes('\n')) counts.moe++;
      else others.push(`#${i} kind ${kind}: ${r instanceof Error ? `${r.name}: ${r.message}` : String(r)}`);
    }
    expect(others).toEqual([]);
    // Both outcomes must really occur, or the mutations are not exercising anything.
    expect(counts.ok).toBeGreaterThan(20);
    expect(counts.moe).toBeGreaterThan(1000);
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  it('survives corrupted shard indexes', () => {
    const d = path.join(dir, 'ckpt');
    fs.mkdirSync(d);
    for (const s of ['s1', 's2']) {
      writeSafetensors(path.join(d, `${s}.safetensors`), [{ name: `${s}.w`, dtype: 'U8', shape: [2], data: new Uint8Array([1, 2]) }]);
    }
    const good = JSON.stringify({ metadata: { total_size: 4 }, weight_map: { 's1.w': 's1.safetensors', 's2.w': 's2.safetensors' } });
    const others: string[] = [];
    for (let i = 0; i < 300; i++) {
      const text = Buffer.from(good);
      for (let k = 1 + int(3); k > 0; k--) text[int(text.length)] = pick([...'{}[]":,.\\/ 0a'].map((c) => c.charCodeAt(0)).concat(int(256)));
      fs.writeFileSync(path.join(d, INDEX_FILE), text);
      try {
        const ck = Checkpoint.open(d);
        for (const n of ck.names()) ck.readFloat32(n);
        ck.close();
      } catch (e) {
        if (!(e instanceof MoeQuantError)) others.push(`#${i}: ${String(e)}`);
      }
    }
    expect(others).toEqual([]);
  });
});
