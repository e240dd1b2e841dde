import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { calibrate } from '../../src/calibration/calibrate.js';
import { drawWindows } from '../../src/calibration/samples.js';
import { loadTokenizer } from '../../src/checkpoint/tokenizer.js';
import { createEngine } from '../../src/engine/engine.js';
import { readTextData } from '../../src/eval/data.js';
import { MoeQuantError } from '../../src/errors.js';
import { C4, FIXTURES, SHARED_DIR } from '../paths.js';

const WIKI_VALID = path.join(SHARED_DIR, 'data/wikitext-2-raw/wiki.valid.raw');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-calib-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const small = { samples: 12, seqLen: 128, batchTokens: 512, device: 'cpu' as const };

describe('calibrate', () => {
  it('with --routing-bias none, statistics equal what the plain forward routes', async () => {
    const model = path.join(FIXTURES, 'tiny-qwen3-moe');
    const out = path.join(tmp, 'none');
    const r = await calibrate({ model, data: [WIKI_VALID], out, routingBias: 'none', ...small });
    const report = JSON.parse(fs.readFileSync(r.files['balance-report.json']!, 'utf8'));
    // Independent run: same windows through the engine, counting its routing.
    const ids = loadTokenizer(model).encode(readTextData(WIKI_VALID));
    const windows = drawWindows(ids, small.samples, small.seqLen, 0);
    const engine = await createEngine(model, { device: 'cpu' });
    const counts = new Map<number, number[]>();
    await engine.forward.run(windows, {
      head: 'none',
      batchTokens: small.batchTokens,
      hooks: {
        onRouting: (ev) => {
          const c = counts.get(ev.layerIndex) ?? new Array(ev.routing.numExperts).fill(0);
          for (const e of ev.routing.experts) c[e]++;
          counts.set(ev.layerIndex, c);
        },
      },
    });
    await engine.close();
    expect(report.layers.length).toBe(4);
    for (const layer of report.layers) {
      expect(layer.used.tokens).toEqual(counts.get(layer.layer));
      expect(layer.natural.tokens).toEqual(counts.get(layer.layer));
      expect(layer.bias.every((b: number) => b === 0)).toBe(true);
    }
    // tokens.safetensors holds exactly the drawn windows
    const saved = fs.readFileSync(r.files['tokens.safetensors']!);
    expect(saved.length).toBeGreaterThan(small.samples * small.seqLen * 4);
  });

  it('loss-free routing bias lowers MaxVio of the routing used and keeps the natural statistics', async () => {
    const model = path.join(FIXTURES, 'tiny-qwen3-moe');
    const r = await calibrate({ model, data: [C4], out: path.join(tmp, 'lf'), routingBias: 'loss-free', samples: 32, seqLen: 256, batchTokens: 1024, device: 'cpu' });
    expect(r.summary.used_second_half.maxvio).toBeLessThan(r.summary.natural_second_half.maxvio * 0.6);
    const report = JSON.parse(fs.readFileSync(r.files['balance-report.json']!, 'utf8'));
    expect(report.layers[0].bias_trajectory.length).toBe(report.batches);
    expect(report.layers[0].bias.some((b: number) => b !== 0)).toBe(true);
  });

  it('is deterministic: same inputs and seed give byte-identical directories', async () => {
    const model = path.join(FIXTURES, 'tiny-deepseek-v3');
    const a = await calibrate({ model, data: [C4], out: path.join(tmp, 'det-a'), ...small });
    const b = await calibrate({ model, data: [C4], out: path.join(tmp, 'det-b'), ...small });
    const files = fs.readdirSync(a.out).sort();
    expect(files).toEqual(fs.readdirSync(b.out).sort());
    for (const f of files) {
      const [x, y] = [fs.readFileSync(path.join(a.out, f)), fs.readFileSync(path.join(b.out, f))];
      if (f === 'calibration.json' || f.startsWith('balance-report')) {
        // These name the output-independent inputs only; compare verbatim.
        expect(x.toString()).toEqual(y.toString());
      } else expect(x.equals(y), f).toBe(true);
    }
  });

  it('rejects bad input with clear errors and leaves nothing behind', async () => {
    const model = path.join(FIXTURES, 'tiny-mixtral');
    const expectError = async (p: Promise<unknown>, re: RegExp) => {
      const e = await p.then(() => null, (x) => x);
      expect(e).toBeInstanceOf(MoeQuantError);
      expect((e as Error).message).toMatch(re);
    };
    const out = path.join(tmp, 'bad');
    await expectError(calibrate({ model, data: [path.join(tmp, 'missing.jsonl')], out, ...small }), /does not exist/);
    const short = path.join(tmp, 'short.txt');
    fs.writeFileSync(short, 'too short');
    await expectError(calibrate({ model, data: [short], out, ...small }), /fewer than one window/);
    await expectError(calibrate({ model, data: [C4], out, ...small, samples: 0 }), /--samples/);
    await expectError(calibrate({ model, data: [], out, ...small }), /no calibration data/);
    const occupied = path.join(tmp, 'occupied');
    fs.mkdirSync(occupied);
    fs.writeFileSync(path.join(occupied, 'notes.txt'), 'mine');
    await expectError(calibrate({ model, data: [C4], out: occupied, ...small }), /was not written by moe-quant.*--force/);
    await expectError(calibrate({ model, data: [C4], out: model, ...small }), /would replace the input model/);
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(tmp).some((f) => f.includes('.tmp-'))).toBe(false);
    expect(fs.readFileSync(path.join(occupied, 'notes.txt'), 'utf8')).toBe('mine');
  });
});

describe('calibrate --save-hessians', () => {
  it('writes one file per layer whose token counts agree with the routing', async () => {
    const { SafetensorsFile } = await import('../../src/checkpoint/safetensors.js');
    const model = path.join(FIXTURES, 'tiny-deepseek-v3');
    const r = await calibrate({ model, data: [C4], out: path.join(tmp, 'hess'), saveHessians: true, samples: 4, seqLen: 64, batchTokens: 128, device: 'cpu' });
    const files = fs.readdirSync(r.files['hessians']!).sort();
    expect(files).toEqual(['layer-000.safetensors', 'layer-001.safetensors', 'layer-002.safetensors', 'layer-003.safetensors']);
    const report = JSON.parse(fs.readFileSync(r.files['balance-report.json']!, 'utf8'));
    const f = SafetensorsFile.open(path.join(r.files['hessians']!, 'layer-002.safetensors'));
    const tokens = (name: string) => Number(new BigInt64Array(f.readBytes(name).slice().buffer)[0]);
    expect(tokens('layers.2.ffn_input.tokens')).toBe(256);
    const used = report.layers.find((l: { layer: number }) => l.layer === 2).used.tokens as number[];
    used.forEach((n, e) => expect(tokens(`layers.2.experts.${e}.gate_up_input.tokens`)).toBe(n));
    expect(f.tensors.get('layers.2.experts.0.down_input.xtcx')!.shape).toEqual([128, 128]);
    expect(f.tensors.has('layers.2.kv_b_proj_input.xtx')).toBe(true);
    f.close();
    const dense = SafetensorsFile.open(path.join(r.files['hessians']!, 'layer-000.safetensors'));
    expect(dense.tensors.has('layers.0.mlp.down_proj_input.xtx')).toBe(true);
    dense.close();
  });
});
