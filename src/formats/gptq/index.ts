/**
 * GPTQ checkpoint (AutoGPTQ / GPTQModel layout, loaded by transformers/optimum, vLLM, onnxruntime-genai): per
 * quantized Linear P, `P.qweight` int32 [K·bits/32, N], `P.qzeros` int32 [G, N·bits/32], `P.scales` fp16 [G, N],
 * `P.g_idx` int32 [K]; config.json gains `quantization_config`. Packing: quantization/pack.ts.
 */
import { tensorBytes, type TensorToWrite } from '../../checkpoint/safetensors.js';
import { fail } from '../../errors.js';
import { packGptq, packFactorOf, type GptqFormat } from '../../quantization/pack.js';
import { versions } from '../../version.js';
import { QuantizedCheckpointWriter } from '../checkpoint-writer.js';
import type { LinearModule } from '../../pipeline/modules.js';
import type { OutputFormat } from '../types.js';

export const gptqFormat: OutputFormat = {
  names: ['gptq', 'gptq_v2'],
  open(dir, model, s) {
    if (![2, 3, 4, 8].includes(s.bits)) throw fail('BAD_OPTION', `the GPTQ writer packs 2, 3, 4 or 8 bits (got --bits ${s.bits})`);
    const format = s.format as GptqFormat;
    const writer = new QuantizedCheckpointWriter(dir, model, s.maxShardBytes);
    // Values per int32 (qweight along K, qzeros along N): 32/bits, or 32 values per 3 words for 3 bits.
    const nMultiple = packFactorOf(s.bits).values;
    return {
      // N: routers (60 experts) and Qwen2-MoE's 1-wide shared_expert_gate under --quantize-router stay in float.
      keepsFloat: (m) => m.N % nMultiple !== 0,
      // K (the group size need not divide it: a shorter last group is fine) must still fill whole packed words.
      note: (todo) => partialGroupNote(todo, s.groupSize),
      check(m) {
        if (m.K % nMultiple !== 0) {
          throw fail(
            'BAD_OPTION',
            `${m.prefix}: input size K=${m.K} is not a multiple of ${nMultiple}, which ${s.bits}-bit GPTQ qweight packs per ` +
              `${s.bits === 3 ? '3 int32 words' : 'int32'}; --skip it, or use --format dequantized`,
          );
        }
      },
      add(m, q) {
        const p = packGptq(q, format, m.prefix);
        // ⌈K/g⌉ groups: a group size that does not divide K leaves a shorter last group (what GPTQ loaders expect).
        const G = Math.ceil(q.K / q.groupSize);
        const tensors: TensorToWrite[] = [
          { name: `${m.prefix}.qweight`, dtype: 'I32', shape: [p.qweightRows, q.N], data: tensorBytes(p.qweight) },
          { name: `${m.prefix}.qzeros`, dtype: 'I32', shape: [G, p.qzerosCols], data: tensorBytes(p.qzeros) },
          { name: `${m.prefix}.scales`, dtype: 'F16', shape: [G, q.N], data: tensorBytes(p.scales) },
          { name: `${m.prefix}.g_idx`, dtype: 'I32', shape: [q.K], data: tensorBytes(p.gIdx) },
        ];
        writer.add(m.weight, tensors);
        return tensors.reduce((n, t) => n + (t.data as Uint8Array).byteLength, 0);
      },
      flushLayer: (i) => writer.flushLayer(i),
      finish(run) {
        const relNames = [...new Set(run.quantized.map((p) => p.replace(/^model\.layers\.\d+\./, '')))];
        // Modules left out whose name is quantized in other layers: GPTQModel/vLLM-style exclusions.
        const done = new Set(run.quantized);
        const relSet = new Set(relNames);
        const skipped = model.expected
          .filter((t) => t.name.endsWith('.weight') && t.shape.length === 2)
          .map((t) => ({ prefix: t.name.slice(0, -'.weight'.length), N: t.shape[0]! }))
          .filter(({ prefix, N }) => !done.has(prefix) && relSet.has(prefix.replace(/^model\.layers\.\d+\./, '')) && run.leftOut(prefix, N))
          .map(({ prefix }) => prefix);
        const dynamic = Object.fromEntries(skipped.map((p) => [`-:^${p.replace(/\./g, '\\.')}$`, {}]));
        return writer.finish({
          quantization_config: {
            quant_method: 'gptq',
            bits: s.bits,
            group_size: s.groupSize,
            desc_act: s.actOrder,
            static_groups: s.actOrder,
            sym: s.sym,
            lm_head: false,
            true_sequential: s.trueSequential,
            damp_percent: s.damp,
            checkpoint_format: format,
            pack_dtype: 'int32',
            modules_in_block_to_quantize: [relNames],
            ...(skipped.length ? { dynamic } : {}),
            meta: { quantizer: [`moe-quant:${versions()['moe-quant']}`], method: s.method, routing_bias: run.routingBias },
          },
        });
      },
      abort: () => undefined,
    };
  },
};

/**
 * GPTQ output with linears whose K the group size does not divide: a note (before the work) that their last group
 * is shorter — valid GPTQ, loaded by transformers / GPTQModel, but vLLM's GPTQ and Marlin kernels refuse it — with
 * the largest power-of-two group size ≤ the chosen one that divides every K. Null when there are none.
 */
export function partialGroupNote(todo: Array<Pick<LinearModule, 'prefix' | 'K'>>, groupSize: number): string | null {
  if (groupSize <= 0) return null;
  const partial = todo.filter((m) => m.K > groupSize && m.K % groupSize !== 0);
  if (partial.length === 0) return null;
  const first = partial[0]!;
  let fit = groupSize;
  while (fit > 1 && todo.some((m) => m.K > fit && m.K % fit !== 0)) fit = 2 ** Math.floor(Math.log2(fit - 1));
  return (
    `--group-size ${groupSize} does not divide K of ${partial.length} linear${partial.length > 1 ? 's' : ''} ` +
    `(e.g. ${first.prefix}, K=${first.K}): their last group is shorter (${first.K % groupSize} columns there), valid GPTQ ` +
    `that transformers/GPTQModel load; vLLM's GPTQ kernels need a group size that divides K` +
    (fit > 1 ? ` (--group-size ${fit} would)` : '')
  );
}
