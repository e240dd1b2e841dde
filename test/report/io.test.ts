import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { readableByAll, ROOT, unprivileged } from '../cli/spawn.js';
import { MoeQuantError } from '../../src/errors.js';
import {
  readBalanceReport,
  renderBalanceHtml,
  renderBalanceMarkdown,
  writeBalanceReport,
} from '../../src/report/index.js';
import { smallReport, wideReport } from './synthetic.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-report-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
function dir(): string {
  const d = path.join(tmp, `d${n++}`);
  fs.mkdirSync(d);
  return d;
}

function expectError(f: () => unknown, code: string, pattern: RegExp): void {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(MoeQuantError);
  expect((err as MoeQuantError).code).toBe(code);
  expect((err as MoeQuantError).message).toMatch(pattern);
}

describe('writeBalanceReport / readBalanceReport', () => {
  it('writes json, md and html and reads the same report back', () => {
    const d = dir();
    const report = smallReport();
    const files = writeBalanceReport(d, report);
    expect(files).toEqual({
      json: path.join(d, 'balance-report.json'),
      md: path.join(d, 'balance-report.md'),
      html: path.join(d, 'balance-report.html'),
    });
    expect(fs.readdirSync(d).sort()).toEqual(['balance-report.html', 'balance-report.json', 'balance-report.md']);
    expect(fs.readFileSync(files.json, 'utf8')).toBe(`${JSON.stringify(report, null, 2)}\n`);
    expect(fs.readFileSync(files.md, 'utf8')).toBe(renderBalanceMarkdown(report));
    expect(fs.readFileSync(files.html, 'utf8')).toBe(renderBalanceHtml(report));
    expect(readBalanceReport(d)).toEqual(report);
    expect(readBalanceReport(files.json)).toEqual(report); // the JSON file itself works too
  });

  it('is deterministic and overwrites in place', () => {
    const a = dir();
    const b = dir();
    writeBalanceReport(a, wideReport());
    writeBalanceReport(b, smallReport());
    writeBalanceReport(b, wideReport());
    for (const f of ['balance-report.json', 'balance-report.md', 'balance-report.html']) {
      expect(fs.readFileSync(path.join(b, f), 'utf8')).toBe(fs.readFileSync(path.join(a, f), 'utf8'));
    }
    expect(fs.readdirSync(b)).toHaveLength(3); // no temp files left behind
  });

  it('reads NaN metrics (null in JSON) back and still renders', () => {
    const d = dir();
    const r = smallReport();
    r.layers[1]!.used.mean_affinity[3] = Number.NaN;
    r.summary.natural_second_half.maxvio = Number.NaN;
    writeBalanceReport(d, r);
    const back = readBalanceReport(d);
    expect(back.layers[1]!.used.mean_affinity[3]).toBeNull();
    expect(renderBalanceMarkdown(back)).toContain('(used / natural): n/a');
    expect(renderBalanceHtml(back)).toContain('mean affinity n/a');
  });

  it('fails with IO when the output directory does not exist', () => {
    expectError(() => writeBalanceReport(path.join(tmp, 'missing'), smallReport()), 'IO', /does not exist/);
    const f = path.join(dir(), 'file');
    fs.writeFileSync(f, 'x');
    expectError(() => writeBalanceReport(f, smallReport()), 'IO', /not a directory/);
  });

  // Root writes into a read-only directory anyway, so as root (CI) the write runs in a child process as nobody.
  const user = unprivileged();
  it.skipIf(user.prefix === null)(`fails with IO when the directory is not writable${user.reason ? ` (skipped: ${user.reason})` : ''}`, () => {
    const d = readableByAll(dir());
    readableByAll(tmp);
    const reportFile = path.join(tmp, 'report-input.json');
    fs.writeFileSync(reportFile, JSON.stringify(smallReport()));
    fs.chmodSync(d, 0o555);
    const script =
      `const m = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist/report/index.js')).href)});` +
      `try { m.writeBalanceReport(process.argv[1], JSON.parse(require('node:fs').readFileSync(process.argv[2], 'utf8'))); console.log('{}'); }` +
      `catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;
    const [cmd, ...args] = [...user.prefix!, process.execPath, '--input-type=module', '-e', script.replace("require('node:fs')", '(await import("node:fs"))'), d, reportFile];
    const r = spawnSync(cmd!, args, { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const e = JSON.parse(r.stdout) as { code?: string; message?: string };
    expect(e.code).toBe('IO');
    expect(e.message).toMatch(/cannot write .*balance-report\.json/);
    expect(fs.readdirSync(d)).toEqual([]);
  });
});

describe('readBalanceReport: bad files are BAD_DATA with the file named', () => {
  function withJson(text: string): string {
    const d = dir();
    fs.writeFileSync(path.join(d, 'balance-report.json'), text);
    return d;
  }
  const good = () => JSON.parse(JSON.stringify(smallReport())) as Record<string, unknown>;

  it('missing directory or file', () => {
    expectError(() => readBalanceReport(path.join(tmp, 'nope')), 'BAD_DATA', /nope does not exist/);
    expectError(() => readBalanceReport(dir()), 'BAD_DATA', /no balance-report\.json in /);
  });

  it('empty file, invalid JSON, not an object', () => {
    expectError(() => readBalanceReport(withJson('')), 'BAD_DATA', /balance-report\.json is empty/);
    expectError(() => readBalanceReport(withJson('{"format": ')), 'BAD_DATA', /balance-report\.json is not valid JSON/);
    expectError(() => readBalanceReport(withJson('[1,2]')), 'BAD_DATA', /is not a moe-quant balance report/);
  });

  it('missing or different format', () => {
    const r = good();
    delete r['format'];
    expectError(() => readBalanceReport(withJson(JSON.stringify(r))), 'BAD_DATA', /no "format" field/);
    r['format'] = 'moe-quant.balance-report/2';
    expectError(
      () => readBalanceReport(withJson(JSON.stringify(r))),
      'BAD_DATA',
      /has format "moe-quant\.balance-report\/2"; this version of moe-quant reads "moe-quant\.balance-report\/1"/,
    );
  });

  it('malformed fields name the field', () => {
    const cases: [(r: any) => void, RegExp][] = [
      [(r) => delete r.layers, /layers must be an array/],
      [(r) => (r.model = 3), /model must be a string/],
      [(r) => (r.routing_bias = 'maybe'), /routing_bias must be one of "none", "loss-free"/],
      [(r) => r.layers[1].used.tokens.pop(), /layers\[1\]\.used\.tokens must have 8 entries/],
      [(r) => (r.layers[0].natural.share[2] = 'x'), /layers\[0\]\.natural\.share\[2\] must be a number or null/],
      [(r) => (r.layers[2].under_calibrated = [8]), /layers\[2\]\.under_calibrated\[0\] must be an expert id in 0\.\.7/],
      [(r) => r.layers[0].bias_trajectory[3].push(0), /layers\[0\]\.bias_trajectory\[3\] must have 8 entries/],
      [(r) => delete r.summary.used_second_half, /summary\.used_second_half must be an object/],
    ];
    for (const [mutate, pattern] of cases) {
      const r = good();
      mutate(r);
      expectError(() => readBalanceReport(withJson(JSON.stringify(r))), 'BAD_DATA', pattern);
    }
  });
});
