/** The text sampler: `samples` windows at uniformly random offsets of the tokenized files (seeded). */
import path from 'node:path';
import { loadTokenizer } from '../../checkpoint/tokenizer.js';
import { readTextData } from '../../eval/data.js';
import { drawWindows } from '../samples.js';
import type { SampledSet, SamplerContext } from './types.js';

export function sampleText(ctx: SamplerContext, data: string[]): SampledSet {
  const ids = loadTokenizer(ctx.model).encode(data.map(readTextData).join('\n\n'));
  return {
    windows: drawWindows(ids, ctx.samples, ctx.seqLen, ctx.seed),
    info: { name: 'text', tokens_in_data: ids.length },
    data: data.map((d) => path.resolve(d)),
  };
}
