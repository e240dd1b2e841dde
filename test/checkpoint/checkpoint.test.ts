import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, it, expect } from 'vitest';
import { Checkpoint, INDEX_FILE } from '../../src/checkpoint/checkpoint.js';
import { tensorBytes, writeSafetensors } from '../../src/checkpoint/safetensors.js';
import { catchMoe, tmpDir } from './helpers.js';

const root = tmpDir('ckpt');
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

let counter = 0;
function newDir(): string {
  const d = path.join(root, `c${counter++}`);
  fs.mkdirSync(d);
  return d;
}

/** Writes a shard holding f32 vectors named `names`, each [2] = [i, -i]. */
function shard(dir: string, file: string, names: string[]): void {
  writeSafetensors(
    path.join(dir, file),
    names.map((name, i) => ({ name, dtype: 'F32', shape: [2], data: tensorBytes(new Float32Array([i, -i])) })),
  );
}

function index(dir: string, weightMap: unknown): void {
  fs.writeFileSync(path.join(dir, INDEX_FILE), JSON.stringify({ metadata: {}, weight_map: weightMap }));
}

describe('Checkpoint.open', () => {
  it('uses the index, and only the tensors it lists', () => {
    const d = newDir();
    shard(d, 's1.safetensors', ['a', 'b', 'extra']);
    shard(d, 's2.safetensors', ['c']);
    index(d, { c: 's2.safetensors', a: 's1.safetensors', b: 's1.safetensors' });
    const ck = Checkpoint.open(d);
    expect(ck.names()).toEqual(['a', 'b', 'c']);
    expect(ck.has('extra')).toBe(false);
    expect(ck.files).toEqual([path.join(d, 's1.safetensors'), path.join(d, 's2.safetensors')]);
    expect(Array.from(ck.readFloat32('b'))).toEqual([1, -1]);
    expect(Array.from(ck.readRowsFloat32('c', 1, 1))).toEqual([-0]);
    expect(ck.readBytes('a').byteLength).toBe(8);
    expect(ck.dtypes().F32).toBe(6);
    expect(ck.totalBytes).toBe(24);
    ck.close();
    expect(Array.from(ck.readFloat32('c'))).toEqual([0, -0]); // reopens lazily
    ck.close();
  });

  it('prefers model.safetensors, else every *.safetensors sorted', () => {
    const d = newDir();
    shard(d, 'b.safetensors', ['y']);
    shard(d, 'a.safetensors', ['x']);
    fs.mkdirSync(path.join(d, 'dir.safetensors'));
    fs.writeFileSync(path.join(d, 'notes.txt'), 'hi');
    const loose = Checkpoint.open(d);
    expect(loose.files.map((f) => path.basename(f))).toEqual(['a.safetensors', 'b.safetensors']);
    expect(loose.names()).toEqual(['x', 'y']);
    shard(d, 'model.safetensors', ['m']);
    expect(Checkpoint.open(d).names()).toEqual(['m']);
  });

  it('rejects missing or empty directories', () => {
    expect(catchMoe(() => Checkpoint.open(path.join(root, 'nope')), 'BAD_CHECKPOINT').message).toMatch(/directory .*nope does not exist/);
    const d = newDir();
    fs.writeFileSync(path.join(d, 'f'), 'x');
    expect(catchMoe(() => Checkpoint.open(path.join(d, 'f')), 'BAD_CHECKPOINT').message).toMatch(/not a directory/);
    expect(catchMoe(() => Checkpoint.open(d), 'BAD_CHECKPOINT').message).toBe(`no *.safetensors in ${d}`);
  });

  it('rejects duplicate tensor names across files', () => {
    const d = newDir();
    shard(d, 'a.safetensors', ['x', 'dup']);
    shard(d, 'b.safetensors', ['dup']);
    expect(catchMoe(() => Checkpoint.open(d), 'BAD_CHECKPOINT').message).toMatch(/tensor dup appears in both a\.safetensors and b\.safetensors/);
  });

  it('rejects bad indexes', () => {
    const d = newDir();
    shard(d, 's1.safetensors', ['a']);
    index(d, { a: 's1.safetensors', b: 'model-00009.safetensors' });
    expect(catchMoe(() => Checkpoint.open(d), 'BAD_CHECKPOINT').message).toMatch(/shard model-00009\.safetensors listed in .* is missing/);
    index(d, { a: 's1.safetensors', b: 's1.safetensors' });
    expect(catchMoe(() => Checkpoint.open(d), 'BAD_CHECKPOINT').message).toMatch(/tensor b is listed .* s1\.safetensors but that shard does not contain it/);
    index(d, { a: 5 });
    expect(catchMoe(() => Checkpoint.open(d), 'BAD_CHECKPOINT').message).toMatch(/weight_map entry for a is not a file name/);
    index(d, ['s1.safetensors']);
    expect(catchMoe(() => Checkpoint.open(d), 'BAD_CHECKPOINT').message).toMatch(/no weight_map object/);
    index(d, {});
    expect(catchMoe(() => Checkpoint.open(d), 'BAD_CHECKPOINT').message).toMatch(/weight_map is empty/);
    index(d, { a: '../s1.safetensors' });
    expect(catchMoe(() => Checkpoint.open(d), 'BAD_CHECKPOINT').message).toMatch(/outside the checkpoint directory/);
    index(d, { a: '/etc/passwd' });
    expect(catchMoe(() => Checkpoint.open(d), 'BAD_CHECKPOINT').message).toMatch(/outside the checkpoint directory/);
    fs.writeFileSync(path.join(d, INDEX_FILE), '{"weight_map": ');
    expect(catchMoe(() => Checkpoint.open(d), 'BAD_CHECKPOINT').message).toMatch(/cannot read model\.safetensors\.index\.json/);
    fs.writeFileSync(path.join(d, INDEX_FILE), 'null');
    expect(catchMoe(() => Checkpoint.open(d), 'BAD_CHECKPOINT').message).toMatch(/no weight_map object/);
  });

  it('reports a corrupt shard by file name', () => {
    const d = newDir();
    fs.writeFileSync(path.join(d, 'model.safetensors'), Buffer.from([1, 2, 3]));
    expect(catchMoe(() => Checkpoint.open(d), 'BAD_CHECKPOINT').message).toMatch(/model\.safetensors/);
  });
});
