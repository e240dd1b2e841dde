/**
 * GGUF for llama.cpp (`OUT/model.gguf`): every quantized linear solved on its block type's grid (quants.ts) by
 * the chosen method, tensors named and transformed per family (arch.ts), the tokenizer inside (tokenizer.ts).
 */
import type { OutputFormat } from '../types.js';
import { FILE_TYPE } from './convert.js';
import { str, u32 } from './file.js';
import { GgufWriter } from './writer.js';
import { versions } from '../../version.js';

/** Bits per weight of a GGUF type, for the reports. */
export function ggufBits(type: string): number {
  return Number(/^[qf](\d+)/.exec(type)?.[1] ?? 4);
}

export const ggufFormat: OutputFormat = {
  names: ['gguf'],
  open(dir, model, s) {
    const w = new GgufWriter(dir, model, s.gguf ?? { type: 'q4_0' });
    return {
      keepsFloat: (m) => !w.quantizes(m.weight),
      leaveFloat: (leftOut) => w.keepFloat(leftOut),
      grid: (m) => w.gridType(m.weight),
      add: (m, q) => w.add(m.weight, q.packed),
      flushLayer: () => undefined,
      finish: (run) =>
        w.finish([
          ['general.file_type', u32(FILE_TYPE[s.gguf!.type.toUpperCase()] ?? 0)],
          ['general.quantized_by', str(`moe-quant ${versions()['moe-quant']}`)],
          ['moe_quant.method', str(s.method)],
          ['moe_quant.routing_bias', str(run.routingBias)],
          ['moe_quant.true_sequential', { type: 'bool', value: s.trueSequential }],
        ]),
      abort: () => w.abort(),
    };
  },
};
