/**
 * Bench worker (one fixture per process): time and size of each output format's writer, with round-to-nearest
 * weights so that only the format's own work is timed (grid fitting, packing, writing; no calibration, no solve):
 * GPTQ 4-bit (group 128) and GGUF per type (K-quants with llama-quantize's fallback where rows are not 256-multiples).
 * Prints one JSON object on stdout.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openModel } from '../engine/model.js';
import { convertToGguf } from '../formats/gguf/convert.js';
import { GGUF_TYPES } from '../formats/gguf/writer.js';
import { gptqFormat } from '../formats/gptq/index.js';
import { layerModuleGroups } from '../pipeline/modules.js';
import { rtnQuantize } from '../quantization/quantizer.js';
import { emit } from './proc.js';

export interface FormatBenchResult {
  fixture: string;
  sourceBytes: number;
  formats: Array<{ format: string; seconds: number; bytes: number }>;
}

function dirBytes(dir: string): number {
  return fs.readdirSync(dir).reduce((s, f) => s + (f.endsWith('.safetensors') || f.endsWith('.gguf') ? fs.statSync(path.join(dir, f)).size : 0), 0);
}

async function main(): Promise<void> {
  const [dir] = process.argv.slice(2) as [string];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-format-'));
  try {
    const formats: FormatBenchResult['formats'] = [];
    const model = openModel(dir);
    const sourceBytes = model.checkpoint.totalBytes;
    {
      const out = fs.mkdtempSync(path.join(tmp, 'gptq-'));
      const t0 = performance.now();
      const s = { format: 'gptq', method: 'rtn' as const, bits: 4, groupSize: 128, sym: false, actOrder: false, damp: 0.01, blockSize: 128, trueSequential: true };
      const w = gptqFormat.open(out, model, s);
      const quantized: string[] = [];
      for (const layer of model.spec.layers) {
        for (const g of layerModuleGroups(model.spec, layer, { quantizeRouter: false })) {
          for (const m of g.modules) {
            if (w.keepsFloat(m)) continue;
            w.add(m, rtnQuantize(model.checkpoint.readFloat32(m.weight), m.N, m.K, s));
            quantized.push(m.prefix);
          }
        }
        w.flushLayer(layer.index);
      }
      w.finish({ quantized, leftOut: () => false, routingBias: 'none' });
      formats.push({ format: 'gptq 4-bit g128', seconds: (performance.now() - t0) / 1000, bytes: dirBytes(out) });
    }
    model.checkpoint.close();
    for (const type of GGUF_TYPES) {
      const out = fs.mkdtempSync(path.join(tmp, `${type}-`));
      const t0 = performance.now();
      await convertToGguf(dir, out, { type, fallback: true });
      formats.push({ format: `gguf ${type}`, seconds: (performance.now() - t0) / 1000, bytes: dirBytes(out) });
    }
    emit({ fixture: path.basename(dir), sourceBytes, formats } satisfies FormatBenchResult);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
