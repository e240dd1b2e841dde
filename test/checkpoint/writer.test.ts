import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, it, expect } from 'vitest';
import { DTYPE_BYTES, type DType } from '../../src/checkpoint/dtypes.js';
import { SafetensorsFile, tensorBytes, writeSafetensors, type TensorToWrite } from '../../src/checkpoint/safetensors.js';
import { catchMoe, mulberry32, tmpDir } from './helpers.js';

const dir = tmpDir('writer');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const ALL_DTYPES = Object.keys(DTYPE_BYTES) as DType[];

function randomBytes(n: number, rand: () => number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rand() * 256);
  return b;
}

function headerOf(p: string): { n: number; text: string } {
  const buf = fs.readFileSync(p);
  const n = Number(buf.readBigUInt64LE(0));
  return { n, text: buf.subarray(8, 8 + n).toString('utf8') };
}

function tmpLeftovers(): string[] {
  return fs.readdirSync(dir).filter((f) => f.includes('.tmp-'));
}

describe('writeSafetensors', () => {
  it('round-trips every dtype, odd shapes and metadata', () => {
    const rand = mulberry32(1);
    const shapes = [[3], [2, 3], [], [0, 5], [1, 1, 7]];
    const tensors: TensorToWrite[] = [];
    ALL_DTYPES.forEach((dtype, i) => {
      const shape = shapes[i % shapes.length]!;
      const n = shape.reduce((a, b) => a * b, 1);
      tensors.push({ name: `t.${dtype}`, dtype, shape, data: randomBytes(n * DTYPE_BYTES[dtype], rand) });
    });
    const p = path.join(dir, 'all.safetensors');
    writeSafetensors(p, tensors, { format: 'pt', 'quant.bits': '4' });
    const f = SafetensorsFile.open(p);
    expect(f.metadata).toEqual({ format: 'pt', 'quant.bits': '4' });
    expect([...f.tensors.keys()]).toEqual(tensors.map((t) => t.name));
    for (const t of tensors) {
      const info = f.tensors.get(t.name)!;
      expect(info.dtype).toBe(t.dtype);
      expect(info.shape).toEqual(t.shape);
      expect(f.readBytes(t.name)).toEqual(t.data);
    }
    f.close();
    expect(tmpLeftovers()).toEqual([]);
  });

  it('aligns the data section to 8 bytes with space padding, __metadata__ first', () => {
    for (let extra = 0; extra < 9; extra++) {
      const p = path.join(dir, `align${extra}.safetensors`);
      writeSafetensors(p, [{ name: 'x'.repeat(extra + 1), dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 3]) }], { m: 'v' });
      const { n, text } = headerOf(p);
      expect((8 + n) % 8).toBe(0);
      expect(text.startsWith('{"__metadata__":{"m":"v"},')).toBe(true);
      expect(text.trimEnd().endsWith('}')).toBe(true);
      expect(/^ *$/.test(text.slice(text.trimEnd().length))).toBe(true);
      expect(fs.statSync(p).size).toBe(8 + n + 3);
    }
  });

  it('keeps the given tensor order even for integer-like names, and is deterministic', () => {
    const t = (name: string): TensorToWrite => ({ name, dtype: 'F32', shape: [1], data: tensorBytes(new Float32Array([Number(name) || 0])) });
    const list = [t('b'), t('10'), t('a'), t('2')];
    const p1 = path.join(dir, 'order1.safetensors');
    const p2 = path.join(dir, 'order2.safetensors');
    writeSafetensors(p1, list, { z: '1', a: '2' });
    writeSafetensors(p2, list, { a: '2', z: '1' });
    expect(fs.readFileSync(p1)).toEqual(fs.readFileSync(p2));
    const { text } = headerOf(p1);
    const at = (k: string) => text.indexOf(`"${k}":{"dtype"`);
    expect(at('b')).toBeGreaterThan(0);
    expect(at('b')).toBeLessThan(at('10'));
    expect(at('10')).toBeLessThan(at('a'));
    expect(at('a')).toBeLessThan(at('2'));
    expect(text).toContain('"__metadata__":{"a":"2","z":"1"}');
    const f = SafetensorsFile.open(p1);
    expect([...f.tensors.keys()]).toEqual(['b', '10', 'a', '2']);
    expect(f.readFloat32('10')[0]).toBe(10);
    f.close();
    writeSafetensors(p1, [t('1')]); // overwrite in place, no metadata
    expect(headerOf(p1).text.startsWith('{"1":')).toBe(true);
  });

  it('calls lazy data one tensor at a time, in order', () => {
    const calls: string[] = [];
    const lazy = (name: string, v: number): TensorToWrite => ({
      name,
      dtype: 'I32',
      shape: [2],
      data: () => {
        calls.push(name);
        return tensorBytes(new Int32Array([v, -v]));
      },
    });
    const p = path.join(dir, 'lazy.safetensors');
    writeSafetensors(p, [lazy('x', 1), { name: 'eager', dtype: 'U8', shape: [1], data: new Uint8Array([9]) }, lazy('y', 2)]);
    expect(calls).toEqual(['x', 'y']);
    const f = SafetensorsFile.open(p);
    expect(Array.from(f.readFloat32('y'))).toEqual([2, -2]);
    expect(Array.from(f.readBytes('eager'))).toEqual([9]);
    f.close();
  });

  it('rejects inconsistent input with IO errors and leaves no file behind', () => {
    const p = path.join(dir, 'bad.safetensors');
    const ok: TensorToWrite = { name: 'ok', dtype: 'F32', shape: [1], data: new Uint8Array(4) };
    expect(catchMoe(() => writeSafetensors(p, [ok, { name: 'w', dtype: 'F32', shape: [2, 2], data: () => new Uint8Array(15) }]), 'IO').message).toMatch(
      /tensor w has 15 bytes of data but shape \[2, 2\] × F32 needs 16/,
    );
    expect(catchMoe(() => writeSafetensors(p, [ok, ok]), 'IO').message).toMatch(/appears twice/);
    expect(catchMoe(() => writeSafetensors(p, [{ ...ok, name: '__metadata__' }]), 'IO').message).toMatch(/invalid tensor name/);
    expect(catchMoe(() => writeSafetensors(p, [{ ...ok, dtype: 'Q4' as DType }]), 'IO').message).toMatch(/unknown dtype Q4/);
    expect(catchMoe(() => writeSafetensors(p, [{ ...ok, shape: [-1] }]), 'IO').message).toMatch(/shape/);
    expect(catchMoe(() => writeSafetensors(p, [ok], { n: 5 as unknown as string }), 'IO').message).toMatch(/metadata value for n/);
    expect(catchMoe(() => writeSafetensors(path.join(dir, 'no/such/dir/x.safetensors'), [ok]), 'IO').message).toMatch(/cannot write/);
    expect(fs.existsSync(p)).toBe(false);
    expect(tmpLeftovers()).toEqual([]);
    // A bug inside a data() callback is not a user error: it propagates unchanged.
    expect(() => writeSafetensors(p, [{ ...ok, data: () => { throw new TypeError('boom'); } }])).toThrow(TypeError);
    expect(tmpLeftovers()).toEqual([]);
  });

  it('tensorBytes views typed arrays without copying', () => {
    const f = new Float32Array([1, 2, 3, 4]);
    const sub = f.subarray(1, 3);
    const b = tensorBytes(sub);
    expect(b.byteLength).toBe(8);
    expect(b.byteOffset).toBe(4);
    expect(b.buffer).toBe(f.buffer);
    expect(tensorBytes(new Uint16Array([0x3f80]))).toEqual(new Uint8Array([0x80, 0x3f]));
  });
});
