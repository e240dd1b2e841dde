/**
 * The balance report on disk: balance-report.json (the data), balance-report.md and balance-report.html (renderings)
 * in a calibration output directory. Writes are atomic per file (temp file + rename) and deterministic.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail } from '../errors.js';
import { renderBalanceHtml } from './html.js';
import { renderBalanceMarkdown } from './markdown.js';
import type { BalanceReport } from './types.js';
import { validateBalanceReport } from './validate.js';

export { BALANCE_REPORT_FORMAT } from './types.js';
export type { BalanceReport, BalanceStats, BalanceSummary, LayerBalance } from './types.js';
export { renderBalanceHtml } from './html.js';
export { renderBalanceMarkdown } from './markdown.js';
export { validateBalanceReport } from './validate.js';

export const BALANCE_REPORT_JSON = 'balance-report.json';
export const BALANCE_REPORT_MD = 'balance-report.md';
export const BALANCE_REPORT_HTML = 'balance-report.html';

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Write `text` to `file` through a temp file in the same directory, renamed over the target. */
function writeAtomic(file: string, text: string): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw fail('IO', `cannot write ${file}: ${message(e)}`, e);
  }
}

/**
 * Write balance-report.json, .md and .html into the existing directory `dir`; returns the three paths. All three
 * are rendered before the first is written, so a rendering error leaves the directory as it was.
 */
export function writeBalanceReport(dir: string, report: BalanceReport): { json: string; md: string; html: string } {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw fail('IO', `cannot write the balance report: directory ${dir} does not exist`);
  }
  if (!st.isDirectory()) throw fail('IO', `cannot write the balance report: ${dir} is not a directory`);
  const texts = {
    json: `${JSON.stringify(report, null, 2)}\n`,
    md: renderBalanceMarkdown(report),
    html: renderBalanceHtml(report),
  };
  const files = {
    json: path.join(dir, BALANCE_REPORT_JSON),
    md: path.join(dir, BALANCE_REPORT_MD),
    html: path.join(dir, BALANCE_REPORT_HTML),
  };
  writeAtomic(files.json, texts.json);
  writeAtomic(files.md, texts.md);
  writeAtomic(files.html, texts.html);
  return files;
}

/** Path of the report file for `dir`: dir/balance-report.json, or `dir` itself when it is a file. */
export function balanceReportPath(dir: string): string {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw fail('BAD_DATA', `${dir} does not exist (expected a calibration output directory with ${BALANCE_REPORT_JSON})`);
  }
  if (!st.isDirectory()) return dir;
  const file = path.join(dir, BALANCE_REPORT_JSON);
  if (!fs.existsSync(file)) {
    throw fail('BAD_DATA', `no ${BALANCE_REPORT_JSON} in ${dir} (expected a calibration output directory)`);
  }
  return file;
}

/**
 * Read and validate dir/balance-report.json (`dir` may also name the JSON file itself). Missing, empty, invalid
 * JSON, wrong format or malformed fields: BAD_DATA naming the file; unreadable: IO.
 */
export function readBalanceReport(dir: string): BalanceReport {
  const file = balanceReportPath(dir);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw fail('IO', `cannot read ${file}: ${message(e)}`, e);
  }
  if (text.trim() === '') throw fail('BAD_DATA', `${file} is empty`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw fail('BAD_DATA', `${file} is not valid JSON: ${message(e)}`);
  }
  return validateBalanceReport(value, file);
}
