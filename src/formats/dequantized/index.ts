/**
 * Fake-quantized checkpoint, for evaluation of grids no runtime packs: each quantized linear's dequantized
 * weights as float32 `P.weight`; config.json gains `moe_quant` saying so.
 */
import { tensorBytes } from '../../checkpoint/safetensors.js';
import { QuantizedCheckpointWriter } from '../checkpoint-writer.js';
import type { OutputFormat } from '../types.js';

export const dequantizedFormat: OutputFormat = {
  names: ['dequantized'],
  open(dir, model, s) {
    const writer = new QuantizedCheckpointWriter(dir, model, s.maxShardBytes);
    return {
      keepsFloat: () => false,
      add(m, q) {
        const data = tensorBytes(q.dequantized);
        writer.add(m.weight, [{ name: m.weight, dtype: 'F32', shape: [m.N, m.K], data }]);
        return data.byteLength;
      },
      flushLayer: (i) => writer.flushLayer(i),
      finish: () =>
        writer.finish({ moe_quant: { method: s.method, bits: s.bits, group_size: s.groupSize, sym: s.sym, note: 'fake-quantized: dequantized float32 weights' } }),
      abort: () => undefined,
    };
  },
};
