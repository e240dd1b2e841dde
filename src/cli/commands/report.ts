import { Option, type Command } from 'commander';
import { readBalanceReport, renderBalanceHtml, renderBalanceMarkdown } from '../../report/index.js';

const FORMATS = ['md', 'json', 'html'] as const;
type ReportFormat = (typeof FORMATS)[number];

export function registerReport(program: Command): void {
  program
    .command('report')
    .description(
      'Print the balance report of a calibration run (how its tokens were routed to experts, natural vs used routing) from <calib_dir>/balance-report.json.',
    )
    .argument('<calib_dir>', 'calibration output directory containing balance-report.json (or the JSON file itself)')
    .addOption(
      new Option('--format <format>', 'md: Markdown summary; json: the report data; html: self-contained HTML page (redirect it to a file)')
        .choices(FORMATS as unknown as string[])
        .default('md'),
    )
    .addHelpText('after', '\nExample:\n  moe-quant report ./calib-out\n  moe-quant report ./calib-out --format html > balance.html')
    .action((calibDir: string, opts: { format: ReportFormat }) => {
      const report = readBalanceReport(calibDir);
      const text =
        opts.format === 'json'
          ? `${JSON.stringify(report, null, 2)}\n`
          : opts.format === 'html'
            ? renderBalanceHtml(report)
            : renderBalanceMarkdown(report);
      process.stdout.write(text);
    });
}
