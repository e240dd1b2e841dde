/** --format value → output format. Adding a format = one folder beside this file + one line here. */
import { fail } from '../errors.js';
import { dequantizedFormat } from './dequantized/index.js';
import { ggufFormat } from './gguf/index.js';
import { gptqFormat } from './gptq/index.js';
import type { OutputFormat } from './types.js';

const FORMATS: readonly OutputFormat[] = [gptqFormat, dequantizedFormat, ggufFormat];

/** Every --format value. */
export const FORMAT_NAMES: readonly string[] = FORMATS.flatMap((f) => f.names);

export function outputFormat(name: string): OutputFormat {
  const f = FORMATS.find((x) => x.names.includes(name));
  if (!f) throw fail('BAD_OPTION', `--format must be one of ${FORMAT_NAMES.join(', ')} (got ${name})`);
  return f;
}
