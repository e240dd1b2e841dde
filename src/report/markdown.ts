/**
 * balance-report.md: the balance report as Markdown, readable both rendered and as plain text in a terminal.
 */
import { definitionItems, int, LAYER_TABLE_HEADER, layerTableRow, num, ratio, underCalibrated } from './format.js';
import type { BalanceReport, BalanceSummary } from './types.js';

/** Inline code span that survives backticks in the text (CommonMark: fence longer than any run inside). */
function code(text: string): string {
  const oneLine = text.replace(/[\r\n]+/g, ' ');
  const longest = Math.max(0, ...(oneLine.match(/`+/g) ?? []).map((r) => r.length));
  const fence = '`'.repeat(longest + 1);
  const pad = oneLine.startsWith('`') || oneLine.endsWith('`') || oneLine === '' ? ' ' : '';
  return `${fence}${pad}${oneLine}${pad}${fence}`;
}

/** Plain text made inert for Markdown (no HTML, no table breaks, no emphasis). */
function text(s: string): string {
  return s.replace(/[\\`*<>&|]/g, (c) => `\\${c}`);
}

function tableMd(header: string[], rows: string[][], align: ('l' | 'r')[]): string {
  const sep = align.map((a) => (a === 'r' ? '---:' : '---'));
  const line = (cells: string[]) => `| ${cells.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`;
  return [line(header), `|${sep.map((s) => ` ${s} `).join('|')}|`, ...rows.map(line)].join('\n');
}

function summaryRow(name: string, s: BalanceSummary): string[] {
  return [name, num(s.maxvio), num(s.sigma), int(s.min_tokens)];
}

export function renderBalanceMarkdown(report: BalanceReport): string {
  const r = report;
  const out: string[] = [];
  const totalExperts = r.layers.reduce((a, l) => a + l.experts, 0);
  const flagged = underCalibrated(r.layers);

  out.push(`# Expert balance report: ${code(r.model)}`, '');
  out.push(
    `- **Model:** ${code(r.model)} (${code(r.model_type)}), ${r.layers.length} MoE layer${r.layers.length === 1 ? '' : 's'}`,
    `- **Data:** ${r.data.length ? r.data.map(code).join(', ') : 'none'}`,
    `- **Tokens:** ${int(r.samples)} samples × ${int(r.seq_len)} seq_len = ${int(r.tokens)} tokens`,
    `- **Seed:** ${int(r.seed)}`,
    r.routing_bias === 'loss-free'
      ? `- **Routing bias:** loss-free, rate ${num(r.bias_rate)}, ${text(r.bias_update)} update, over ${int(r.batches)} batches`
      : `- **Routing bias:** none (natural routing), ${int(r.batches)} batches`,
    `- **Under-calibrated:** fewer than ${int(r.min_tokens_threshold)} tokens under the routing used`,
    '',
  );

  out.push('## Definitions', '');
  for (const item of definitionItems(r.definitions)) out.push(`- ${text(item)}`);
  out.push('');

  const s = r.summary;
  out.push('## Summary', '');
  out.push(
    tableMd(
      ['Routing', 'MaxVio', 'σ (mean over layers)', 'Min tokens'],
      [
        summaryRow('natural', s.natural),
        summaryRow('used', s.used),
        summaryRow('used, second half', s.used_second_half),
        summaryRow('natural, second half', s.natural_second_half),
      ],
      ['l', 'r', 'r', 'r'],
    ),
    '',
  );
  const q = ratio(s.used_second_half.maxvio, s.natural_second_half.maxvio);
  out.push(
    `**MaxVio ratio, second half (used / natural): ${q === undefined ? 'n/a' : num(q)}**` +
      (q === undefined
        ? ' (natural second-half MaxVio is 0 or missing).'
        : q < 1
          ? ' — the routing used was more balanced than the natural routing.'
          : q > 1
            ? ' — the routing used was less balanced than the natural routing.'
            : ' — the same balance as the natural routing.'),
    '',
  );

  out.push('## Per layer', '');
  out.push(
    tableMd(
      LAYER_TABLE_HEADER,
      r.layers.map(layerTableRow),
      ['r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
    ),
    '',
  );

  out.push('## Under-calibrated experts', '');
  if (flagged.length === 0) {
    out.push(`None: every expert received at least ${int(r.min_tokens_threshold)} tokens under the routing used.`);
  } else {
    out.push(
      `${flagged.length} of ${totalExperts} experts received fewer than ${int(r.min_tokens_threshold)} tokens under the routing used:`,
      '',
    );
    for (const f of flagged) out.push(`- layer ${f.layer} expert ${f.expert} (${f.tokens} tokens)`);
  }
  out.push('');
  return out.join('\n');
}
