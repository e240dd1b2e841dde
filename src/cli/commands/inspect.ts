import type { Command } from 'commander';
import { inspectModel } from '../../engine/inspect.js';
import { bytes, count, table } from '../format.js';
import { DEFAULT_MODEL_DIR } from '../../defaults.js';

export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description('Describe a checkpoint (family, layers, experts, parameters by kind, dtypes, size) and validate every tensor against config.json.')
    .option('--model <dir>', 'Hugging Face checkpoint directory (config.json, *.safetensors)', DEFAULT_MODEL_DIR)
    .option('--json', 'print one JSON object on stdout')
    .addHelpText('after', '\nExample:\n  moe-quant inspect --model ./Qwen1.5-MoE-A2.7B --json')
    .action((opts: { model: string; json?: boolean }) => {
      const r = inspectModel(opts.model);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
        return;
      }
      const lines = [
        `model       ${r.model}`,
        `family      ${r.family}`,
        `layers      ${r.layers.total} (${r.layers.moe} MoE, ${r.layers.dense} dense)`,
        `attention   ${r.attention}`,
        r.experts
          ? `experts     ${r.experts.routed} routed${r.experts.shared ? ' + shared' : ''}, top-${r.experts.top_k}, ${r.experts.scoring}, ${r.experts.selection}` +
            `${r.experts.normalize ? ', renormalised' : ''}${r.experts.scale !== 1 ? `, × ${r.experts.scale}` : ''}; expert width ${r.experts.expert_intermediate_size}`
          : 'experts     none',
        `hidden      ${r.hidden_size}, vocab ${r.vocab_size}`,
        `parameters  ${count(r.parameters.total)}`,
        table(Object.entries(r.parameters.by_kind).map(([k, n]) => [`  ${k}`, count(n!), `${((100 * n!) / r.parameters.total).toFixed(1)}%`])),
        `dtypes      ${Object.entries(r.dtypes).map(([d, n]) => `${d} ${count(n)}`).join(', ')}`,
        `on disk     ${bytes(r.size_on_disk_bytes)} in ${r.files.length} file(s): ${r.files.join(', ')}`,
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    });
}
