/**
 * The built CLI never deletes or writes what the user did not name as output: the cases of the hardening issue,
 * run as a user runs them (child processes, real signals, a second concurrent run, unwritable places).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FIXTURES } from '../paths.js';
import { cli, cliAsync, readableByAll, unprivileged, waitFor, type CliResult } from '../cli/spawn.js';

const MIXTRAL = path.join(FIXTURES, 'tiny-mixtral');
const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-outsafety-')));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const fresh = (name: string) => {
  const d = path.join(tmp, `${name}-${n++}`);
  fs.mkdirSync(d);
  return d;
};
/** A small, fast calibration / quantization on the CPU. */
const CAL = ['--model', MIXTRAL, '--samples', '8', '--seq-len', '64', '--device', 'cpu'];
const QUANT = ['--model', MIXTRAL, '--no-eval', '--device', 'cpu'];

function oneLineError(r: CliResult, pattern: RegExp): void {
  expect(r.code, r.stderr).toBe(2);
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('moe-quant: error:'));
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
  expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
}

/** Every file under dir with its content, to compare before and after. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of fs.readdirSync(dir, { recursive: true, withFileTypes: true }))
    if (e.isFile()) out[path.relative(dir, path.join(e.parentPath, e.name))] = fs.readFileSync(path.join(e.parentPath, e.name), 'base64');
  return out;
}

describe('data loss', () => {
  it('--out "" --force in a directory with files: refused, nothing deleted', () => {
    const dir = fresh('cwd');
    fs.writeFileSync(path.join(dir, 'thesis.tex'), 'years of work');
    fs.mkdirSync(path.join(dir, 'src'));
    fs.writeFileSync(path.join(dir, 'src', 'a.py'), 'print(1)');
    const before = snapshot(dir);
    oneLineError(cli(['calibrate', '--out', '', '--force', ...CAL], { cwd: dir }), /--out is empty/);
    oneLineError(cli(['calibrate', '--out', '.', '--force', ...CAL], { cwd: dir }), /is the current directory/);
    oneLineError(cli(['quantize', '--out', dir, '--force', ...QUANT], { cwd: path.join(dir, 'src') }), /is a parent of the current directory/);
    expect(snapshot(dir)).toEqual(before);
  });

  it('quantize --calib OUT/my-calib --out OUT: refused (also with --force); files the user put in OUT stay', () => {
    const dir = fresh('rerun');
    const out = path.join(dir, 'out');
    expect(cli(['calibrate', '--out', path.join(dir, 'calib'), ...CAL]).code).toBe(0);
    const q = cli(['quantize', '--calib', path.join(dir, 'calib'), '--out', out, ...QUANT]);
    expect(q.code, q.stderr).toBe(0);
    fs.renameSync(path.join(dir, 'calib'), path.join(out, 'my-calib')); // the user keeps the calibration with the model
    fs.writeFileSync(path.join(out, 'notes.md'), 'mine');
    const before = snapshot(out);
    for (const force of [[], ['--force']])
      oneLineError(cli(['quantize', '--calib', path.join(out, 'my-calib'), '--out', out, ...force, ...QUANT]), /contains the input --calib/);
    oneLineError(cli(['quantize', '--out', out, ...QUANT]), /was not written by moe-quant|did not write/);
    expect(snapshot(out)).toEqual(before);
  });

  it('re-running into an earlier output replaces it; a file added to it makes the next run refuse', () => {
    const out = path.join(fresh('again'), 'calib');
    expect(cli(['calibrate', '--out', out, ...CAL]).code).toBe(0);
    expect(cli(['calibrate', '--out', out, ...CAL, '--seed', '1']).code).toBe(0);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'calibration.json'), 'utf8')).seed).toBe(1);
    fs.writeFileSync(path.join(out, 'keep.txt'), 'x');
    oneLineError(cli(['calibrate', '--out', out, ...CAL]), /holds files moe-quant did not write \(keep\.txt\)/);
    expect(fs.readFileSync(path.join(out, 'keep.txt'), 'utf8')).toBe('x');
  });

  it('--out inside the model directory: refused, the model directory untouched', () => {
    const model = path.join(fresh('model'), 'm');
    fs.cpSync(MIXTRAL, model, { recursive: true });
    const before = snapshot(model);
    oneLineError(cli(['quantize', '--model', model, '--out', path.join(model, 'quant'), '--no-eval', '--device', 'cpu']), /inside the model directory/);
    oneLineError(cli(['calibrate', '--model', model, '--out', model, '--force', '--device', 'cpu']), /would replace the input model/);
    expect(snapshot(model)).toEqual(before);
  });
});

describe('interrupted and concurrent runs', () => {
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    it(`${signal}: exit ${code}, the temporary directory and lock removed, an earlier output kept`, async () => {
      const dir = fresh(signal);
      const out = path.join(dir, 'out');
      expect(cli(['calibrate', '--out', out, ...CAL]).code).toBe(0);
      const before = snapshot(out);
      const run = cliAsync(['calibrate', '--out', out, '--model', MIXTRAL, '--samples', '512', '--seq-len', '256', '--device', 'cpu']);
      await waitFor(() => fs.readdirSync(dir).some((f) => f.startsWith('out.tmp-')));
      run.child.kill(signal);
      const r = await run.done;
      expect(r.code, r.stderr).toBe(code);
      expect(r.stderr).toMatch(new RegExp(`interrupted \\(${signal}\\); removed the partial output .*out\\.tmp-`));
      expect(fs.readdirSync(dir)).toEqual(['out']);
      expect(snapshot(out)).toEqual(before);
    });
  }

  it('SIGKILL leaves the temporary directory; the next run into the same --out removes it', async () => {
    const dir = fresh('kill');
    const out = path.join(dir, 'out');
    const run = cliAsync(['calibrate', '--out', out, '--model', MIXTRAL, '--samples', '512', '--seq-len', '256', '--device', 'cpu']);
    await waitFor(() => fs.readdirSync(dir).some((f) => f.startsWith('out.tmp-')));
    run.child.kill('SIGKILL');
    await run.done;
    expect(fs.readdirSync(dir).sort()).toEqual(['.out.moe-quant.lock', `out.tmp-${run.child.pid}`]);
    const r = cli(['calibrate', '--out', out, ...CAL]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`removed ${out}.tmp-${run.child.pid}, left by an interrupted run (pid ${run.child.pid})`);
    expect(fs.readdirSync(dir)).toEqual(['out']);
  });

  it('a second run into the same --out gets a clear error; the first completes', async () => {
    const dir = fresh('race');
    const out = path.join(dir, 'out');
    const first = cliAsync(['calibrate', '--out', out, '--model', MIXTRAL, '--samples', '64', '--seq-len', '256', '--device', 'cpu']);
    await waitFor(() => fs.existsSync(path.join(dir, '.out.moe-quant.lock')));
    oneLineError(cli(['calibrate', '--out', out, ...CAL]), new RegExp(`being written by another moe-quant run \\(pid ${first.child.pid}\\)`));
    const r = await first.done;
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readdirSync(dir)).toEqual(['out']);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'calibration.json'), 'utf8')).samples).toBe(64);
  });
});

describe('unwritable outputs: one line, exit 2, before any work', () => {
  it('a path under a regular file', () => {
    const f = path.join(fresh('file'), 'f');
    fs.writeFileSync(f, 'x');
    oneLineError(cli(['calibrate', '--out', path.join(f, 'out'), ...CAL]), /cannot create --out .*a parent in that path is a file/);
  });

  const user = unprivileged();
  it.skipIf(user.prefix === null)(`a parent the user cannot write${user.reason ? ` (skipped: ${user.reason})` : ''}`, () => {
    const dir = readableByAll(fresh('ro'));
    fs.chmodSync(dir, 0o555);
    const r = cli(['calibrate', '--out', path.join(dir, 'out'), ...CAL], { prefix: user.prefix!, cwd: dir });
    oneLineError(r, /cannot create --out .*permission denied/);
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  // A read-only filesystem needs a mount: a private mount namespace (unshare) as root, so nothing leaks out of it.
  const canMount =
    process.getuid?.() === 0 && spawnSync('unshare', ['-m', 'sh', '-c', `mount -t tmpfs -o ro tmpfs ${os.tmpdir()}`]).status === 0;
  it.skipIf(!canMount)(`a read-only filesystem${canMount ? '' : ' (skipped: needs root and unshare/mount, which this machine does not allow)'}`, () => {
    const mnt = fresh('romnt');
    const script = `mount -t tmpfs -o ro tmpfs ${mnt} && exec "$@"`;
    const r = cli(['calibrate', '--out', path.join(mnt, 'out'), ...CAL], { prefix: ['unshare', '-m', 'sh', '-c', script, 'sh'] });
    oneLineError(r, /cannot create --out .*read-only file system/);
  });
});
