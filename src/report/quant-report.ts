/** quant-report.json / .md: per quantized module what was done and how well, with totals and RTN fallbacks. */
import fs from 'node:fs';
import path from 'node:path';
import type { ModuleRecord } from '../pipeline/quantize-model.js';

export const QUANT_REPORT_FORMAT = 'moe-quant.quant-report/1';

export interface QuantReport {
  format: typeof QUANT_REPORT_FORMAT;
  model: string;
  model_type: string;
  method: string;
  bits: number;
  group_size: number;
  sym: boolean;
  act_order: boolean;
  damp: number;
  block_size: number;
  output_format: string;
  calibration: { dir: string | null; samples: number; seq_len: number; routing_bias: string };
  modules: ModuleRecord[];
  totals: {
    modules: number;
    /** null unless written with `timings` (timings make the output differ from run to run). */
    seconds: number | null;
    /** Mean relative reconstruction error by module kind. */
    mean_rel_error: Record<string, number>;
    /** Bytes of routed-expert weights in the source dtype vs in the output. */
    expert_bytes_source: number;
    expert_bytes_quantized: number;
  };
  /** Modules that fell back to RTN, with the reason. */
  fallbacks: Array<{ module: string; reason: string }>;
}

function fmt(x: number, digits = 4): string {
  return Number.isFinite(x) ? x.toPrecision(digits) : '—';
}

export function renderQuantMarkdown(r: QuantReport): string {
  const timed = r.totals.seconds !== null;
  const lines = [
    `# Quantization report: \`${r.model}\``,
    '',
    `- **Method:** ${r.method.toUpperCase()}, ${r.bits}-bit, group size ${r.group_size}, ${r.sym ? 'symmetric' : 'asymmetric'}` +
      `${r.act_order ? ', act-order (static groups)' : ''}, damp ${r.damp}, block ${r.block_size}`,
    `- **Output format:** ${r.output_format}`,
    `- **Calibration:** ${r.calibration.samples} × ${r.calibration.seq_len} tokens, routing bias ${r.calibration.routing_bias}` +
      `${r.calibration.dir ? ` (\`${r.calibration.dir}\`)` : ''}`,
    `- **Modules:** ${r.totals.modules}${r.totals.seconds === null ? '' : ` in ${r.totals.seconds.toFixed(1)} s`}`,
    `- **Routed-expert weights:** ${(r.totals.expert_bytes_source / 1e6).toFixed(2)} MB → ${(r.totals.expert_bytes_quantized / 1e6).toFixed(2)} MB` +
      ` (${(r.totals.expert_bytes_source / Math.max(1, r.totals.expert_bytes_quantized)).toFixed(2)}× smaller)`,
    '',
    '## Mean relative reconstruction error ‖WX − ŴX‖/‖WX‖ by kind',
    '',
    '| Kind | Mean rel. error |',
    '| --- | ---: |',
    ...Object.entries(r.totals.mean_rel_error).map(([k, v]) => `| ${k} | ${fmt(v)} |`),
    '',
    '## Fallbacks to RTN',
    '',
    ...(r.fallbacks.length ? r.fallbacks.map((f) => `- \`${f.module}\`: ${f.reason}`) : ['None.']),
    '',
    '## Modules',
    '',
    `| Module | Method | Bits | Group | Tokens | Rel. error |${timed ? ' Seconds |' : ''}`,
    `| --- | --- | ---: | ---: | ---: | ---: |${timed ? ' ---: |' : ''}`,
    ...r.modules.map(
      (m) =>
        `| \`${m.module}\` | ${m.method} | ${m.bits} | ${m.group_size}${m.last_group ? ` (last ${m.last_group})` : ''} | ${m.tokens} | ${fmt(m.rel_error)} |` +
        (timed ? ` ${m.seconds === null ? '—' : m.seconds.toFixed(3)} |` : ''),
    ),
    '',
  ];
  return lines.join('\n');
}

export function writeQuantReport(dir: string, r: QuantReport): { json: string; md: string } {
  const json = path.join(dir, 'quant-report.json');
  const md = path.join(dir, 'quant-report.md');
  fs.writeFileSync(json, `${JSON.stringify(r, null, 2)}\n`);
  fs.writeFileSync(md, renderQuantMarkdown(r));
  return { json, md };
}
