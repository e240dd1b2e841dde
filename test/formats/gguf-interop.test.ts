/** A GGUF file written by another tool (the Python gguf package's GGUFWriter and Q8_0 quantizer) reads like ours. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeByteTokenizer } from '../../src/bench/synth.js';
import { createEngine } from '../../src/engine/engine.js';
import { convertToGguf } from '../../src/formats/gguf/convert.js';
import { GgufFile } from '../../src/formats/gguf/file.js';
import { maxAbsDiff, readReference } from '../engine/helpers.js';

const GENERATED = path.resolve(__dirname, '../fixtures/generated');
const PYTHON_GGUF = path.resolve(__dirname, '../fixtures/gguf/olmoe-python-q8_0.gguf');

async function logits(model: string, ids: Int32Array): Promise<Float32Array> {
  const e = await createEngine(model, { device: 'cpu' });
  try {
    return (await e.forward.run([ids], { head: 'logits' })).logits!;
  } finally {
    await e.close();
  }
}

describe('GGUF from another writer (scripts/gguf/make_python_gguf.py)', () => {
  it('reads to the same weights as our own Q8_0 file of the same model: identical bytes per tensor, identical logits', async () => {
    const model = path.join(GENERATED, 'olmoe');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gguf-interop-'));
    try {
      // The Python file keeps rows that are not a multiple of 32 (expert down, width 8) in F32; so do we here.
      const src = fs.mkdtempSync(path.join(dir, 'model-'));
      for (const f of fs.readdirSync(model)) fs.symlinkSync(path.join(model, f), path.join(src, f));
      writeByteTokenizer(src, 512);
      const ours = await convertToGguf(src, dir, { type: 'q8_0', override: (t) => (t.includes('ffn_down_exps') ? 'f32' : undefined) });
      const a = GgufFile.open(ours);
      const b = GgufFile.open(PYTHON_GGUF);
      for (const [name, t] of b.tensors) {
        expect(`${name} ${a.tensors.get(name)?.type}`).toBe(`${name} ${t.type}`);
        expect(Buffer.from(a.readBytes(name)).equals(Buffer.from(b.readBytes(name)))).toBe(true);
      }
      a.close();
      b.close();
      const ids = readReference(model).ids;
      const theirs = await logits(PYTHON_GGUF, ids);
      expect(maxAbsDiff(theirs, await logits(ours, ids))).toBe(0);
      expect(maxAbsDiff(theirs, readReference(model).logits)).toBeLessThan(2);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
