/**
 * `moe-quant report <calib_dir>` on its own Command (the command is wired into src/cli/main.ts separately).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, CommanderError } from 'commander';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { registerReport } from '../../src/cli/commands/report.js';
import { MoeQuantError } from '../../src/errors.js';
import { renderBalanceHtml, renderBalanceMarkdown, writeBalanceReport } from '../../src/report/index.js';
import { smallReport } from './synthetic.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-report-cli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const report = smallReport();
writeBalanceReport(tmp, report);

async function run(...args: string[]): Promise<{ stdout: string; stderr: string; error?: unknown }> {
  const program = new Command('moe-quant').exitOverride().configureOutput({ outputError: (s, w) => w(s) });
  registerReport(program);
  let stdout = '';
  let stderr = '';
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((stdout += String(s)), true));
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((s) => ((stderr += String(s)), true));
  try {
    await program.parseAsync(['node', 'moe-quant', 'report', ...args]);
    return { stdout, stderr };
  } catch (error) {
    return { stdout, stderr, error };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}

describe('moe-quant report', () => {
  it('prints Markdown by default', async () => {
    const r = await run(tmp);
    expect(r.error).toBeUndefined();
    expect(r.stdout).toBe(renderBalanceMarkdown(report));
  });

  it('--format json prints the report data', async () => {
    const r = await run(tmp, '--format', 'json');
    expect(JSON.parse(r.stdout)).toEqual(report);
    expect(r.stdout).toBe(fs.readFileSync(path.join(tmp, 'balance-report.json'), 'utf8'));
  });

  it('--format html prints the HTML page', async () => {
    const r = await run(tmp, '--format', 'html');
    expect(r.stdout).toBe(renderBalanceHtml(report));
  });

  it('rejects an unknown format as a usage error', async () => {
    const r = await run(tmp, '--format', 'pdf');
    expect(r.error).toBeInstanceOf(CommanderError);
    expect(r.stderr).toMatch(/argument 'pdf' is invalid.*md, json, html/);
  });

  it('a directory without a report is a BAD_DATA error', async () => {
    const r = await run(path.join(tmp, 'nope'));
    expect(r.error).toBeInstanceOf(MoeQuantError);
    expect((r.error as MoeQuantError).code).toBe('BAD_DATA');
  });

  it('help has the example', async () => {
    const r = await run('--help');
    expect(r.error).toBeInstanceOf(CommanderError);
    expect(r.stdout).toContain('Example:\n  moe-quant report ./calib-out');
    expect(r.stdout).toContain('<calib_dir>');
  });
});
