/** Output directories: what may be replaced, the lock, the swap, and cleaning up after a killed run. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { MoeQuantError } from '../../src/errors.js';
import { checkOutputTarget, MANIFEST, OutputDir, writeOutputDir, type OutputPlan } from '../../src/output/output-dir.js';

const root = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-outdir-')));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
/** A fresh folder with a fake model directory in it. */
function sandbox(): { dir: string; model: string; plan: (out: string, extra?: Partial<OutputPlan>) => OutputPlan } {
  const dir = path.join(root, `s${n++}`);
  const model = path.join(dir, 'model');
  fs.mkdirSync(model, { recursive: true });
  fs.writeFileSync(path.join(model, 'config.json'), '{}');
  return { dir, model, plan: (out, extra = {}) => ({ out, kind: 'model', model, ...extra }) };
}

function error(f: () => unknown): MoeQuantError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(MoeQuantError);
    return e as MoeQuantError;
  }
  throw new Error('expected an error');
}

const cwd = process.cwd();
afterEach(() => process.chdir(cwd));

describe('checkOutputTarget refuses what it must never replace, even with force', () => {
  it('an empty --out', () => {
    const s = sandbox();
    for (const out of ['', '  ']) {
      const e = error(() => checkOutputTarget(s.plan(out, { force: true })));
      expect(e.code).toBe('BAD_OPTION');
      expect(e.message).toMatch(/--out is empty/);
    }
  });

  it('the current directory and its parents, the home directory, /', () => {
    const s = sandbox();
    const work = path.join(s.dir, 'work');
    fs.mkdirSync(work);
    process.chdir(work);
    expect(error(() => checkOutputTarget(s.plan('.', { force: true }))).message).toMatch(/is the current directory/);
    expect(error(() => checkOutputTarget(s.plan(work, { force: true }))).message).toMatch(/is the current directory/);
    expect(error(() => checkOutputTarget(s.plan('..', { force: true }))).message).toMatch(/is a parent of the current directory/);
    expect(error(() => checkOutputTarget(s.plan(os.homedir(), { force: true }))).message).toMatch(/home directory|current directory/);
    expect(error(() => checkOutputTarget(s.plan('/', { force: true }))).message).toMatch(/filesystem root/);
    expect(checkOutputTarget(s.plan('out'))).toBe(path.join(work, 'out'));
  });

  it('the model, a directory holding it, or anything inside it', () => {
    const s = sandbox();
    expect(error(() => checkOutputTarget(s.plan(s.model, { force: true }))).message).toMatch(/would replace the input model/);
    expect(error(() => checkOutputTarget(s.plan(s.dir, { force: true }))).message).toMatch(/would replace the input model/);
    expect(error(() => checkOutputTarget(s.plan(path.join(s.model, 'quant'), { force: true }))).message).toMatch(
      /is inside the model directory .*never writes/,
    );
  });

  it('through a symbolic link too', () => {
    const s = sandbox();
    const link = path.join(s.dir, 'link');
    fs.symlinkSync(s.model, link);
    expect(error(() => checkOutputTarget(s.plan(link, { force: true }))).message).toMatch(/would replace the input model/);
    expect(error(() => checkOutputTarget(s.plan(path.join(link, 'q'), { force: true }))).message).toMatch(/inside the model directory/);
  });

  it('a directory holding an input (--calib, --data, --eval-data), or inside a calibration input', () => {
    const s = sandbox();
    const out = path.join(s.dir, 'out');
    const calib = path.join(out, 'my-calib');
    fs.mkdirSync(calib, { recursive: true });
    fs.writeFileSync(path.join(out, 'eval.txt'), 'text');
    const withCalib = s.plan(out, { force: true, inputs: [['--calib', calib]] });
    expect(error(() => checkOutputTarget(withCalib)).message).toMatch(/contains the input --calib .*my-calib/);
    expect(error(() => checkOutputTarget(s.plan(out, { force: true, inputs: [['--eval-data', path.join(out, 'eval.txt')]] }))).message).toMatch(
      /contains the input --eval-data/,
    );
    expect(error(() => checkOutputTarget(s.plan(path.join(calib, 'q'), { inputs: [['--calib', calib]] }))).message).toMatch(/inside the input --calib/);
    expect(fs.existsSync(calib)).toBe(true);
  });

  it('an existing file, or a path under a file (IO)', () => {
    const s = sandbox();
    const f = path.join(s.dir, 'file');
    fs.writeFileSync(f, 'x');
    expect(error(() => checkOutputTarget(s.plan(f))).message).toMatch(/exists and is not a directory/);
    const e = error(() => OutputDir.open(s.plan(path.join(f, 'sub'))));
    expect(e.code).toBe('IO');
    expect(e.message).toMatch(/a parent in that path is a file/);
  });
});

describe('an existing --out is replaced only when moe-quant wrote all of it', () => {
  it('a directory moe-quant did not write: refused without force, replaced with it', async () => {
    const s = sandbox();
    const out = path.join(s.dir, 'out');
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'keep.txt'), 'mine');
    expect(error(() => OutputDir.open(s.plan(out))).message).toMatch(/was not written by moe-quant \(it holds keep\.txt\).*--force/);
    expect(fs.readFileSync(path.join(out, 'keep.txt'), 'utf8')).toBe('mine');
    await writeOutputDir(s.plan(out, { force: true }), (tmp) => fs.writeFileSync(path.join(tmp, 'a.json'), '1'));
    expect(fs.readdirSync(out).sort()).toEqual([MANIFEST, 'a.json']);
  });

  it('our own earlier output is replaced; a file the user added to it stops that', async () => {
    const s = sandbox();
    const out = path.join(s.dir, 'out');
    await writeOutputDir(s.plan(out), (tmp) => {
      fs.mkdirSync(path.join(tmp, 'sub'));
      fs.writeFileSync(path.join(tmp, 'sub', 'x.bin'), 'x');
      fs.writeFileSync(path.join(tmp, 'a.json'), '1');
    });
    expect(JSON.parse(fs.readFileSync(path.join(out, MANIFEST), 'utf8'))).toEqual({ format: 'moe-quant.output/1', kind: 'model', files: ['a.json', 'sub/x.bin'] });
    await writeOutputDir(s.plan(out), (tmp) => fs.writeFileSync(path.join(tmp, 'b.json'), '2'));
    expect(fs.readdirSync(out).sort()).toEqual([MANIFEST, 'b.json']);
    fs.mkdirSync(path.join(out, 'my-calib'));
    fs.writeFileSync(path.join(out, 'my-calib', 'calibration.json'), '{}');
    expect(error(() => OutputDir.open(s.plan(out))).message).toMatch(/holds files moe-quant did not write \(my-calib\/calibration\.json\)/);
    expect(fs.existsSync(path.join(out, 'my-calib', 'calibration.json'))).toBe(true);
  });

  it('an output of the other kind is not replaced without force', async () => {
    const s = sandbox();
    const out = path.join(s.dir, 'out');
    await writeOutputDir({ ...s.plan(out), kind: 'calibration' }, (tmp) => fs.writeFileSync(path.join(tmp, 'calibration.json'), '{}'));
    expect(error(() => OutputDir.open(s.plan(out))).message).toMatch(/is a moe-quant calibration directory; writing a quantized model would replace it/);
  });

  it('files the user puts into the target during the run are not deleted: the finished output is kept aside', () => {
    const s = sandbox();
    const out = path.join(s.dir, 'out');
    const o = OutputDir.open(s.plan(out));
    fs.writeFileSync(path.join(o.tmp, 'a.json'), '1');
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'new.txt'), 'user');
    expect(error(() => o.commit()).message).toMatch(/finished output is kept at .*out\.tmp-/);
    expect(fs.readFileSync(path.join(out, 'new.txt'), 'utf8')).toBe('user');
    expect(fs.existsSync(path.join(o.tmp, 'a.json'))).toBe(true);
    expect(fs.existsSync(path.join(s.dir, '.out.moe-quant.lock'))).toBe(false);
  });
});

describe('building, aborting, the lock and recovery', () => {
  it('a failed fill leaves nothing: no temporary, no lock, no parent directories it created', async () => {
    const s = sandbox();
    const out = path.join(s.dir, 'a', 'b', 'out');
    await expect(
      writeOutputDir(s.plan(out), (tmp) => {
        fs.writeFileSync(path.join(tmp, 'half'), 'x');
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(fs.readdirSync(s.dir)).toEqual(['model']);
  });

  it('a second run into the same --out while the first holds it: BUSY, and the first is unharmed', () => {
    const s = sandbox();
    const out = path.join(s.dir, 'out');
    const first = OutputDir.open(s.plan(out));
    const e = error(() => OutputDir.open(s.plan(out)));
    expect(e.code).toBe('BUSY');
    expect(e.message).toMatch(new RegExp(`being written by another moe-quant run \\(pid ${process.pid}\\)`));
    fs.writeFileSync(path.join(first.tmp, 'a.json'), '1');
    first.commit();
    expect(fs.readdirSync(out).sort()).toEqual([MANIFEST, 'a.json']);
    OutputDir.open(s.plan(out)).abort(); // the lock was released
  });

  /** A lock as a run killed with SIGKILL leaves it (a pid that cannot be alive: above the kernel's pid limit). */
  const DEAD = 99_999_999;
  function deadRun(target: string, old: boolean): void {
    const lock = path.join(path.dirname(target), `.${path.basename(target)}.moe-quant.lock`);
    fs.writeFileSync(lock, JSON.stringify({ pid: DEAD, start: null, target, tmp: `${target}.tmp-${DEAD}`, old: old ? `${target}.old-${DEAD}` : null }));
    fs.mkdirSync(`${target}.tmp-${DEAD}`);
    fs.writeFileSync(`${target}.tmp-${DEAD}/part`, 'partial');
  }

  it('the next run removes what a killed run left', () => {
    const s = sandbox();
    const out = path.join(s.dir, 'out');
    deadRun(out, false);
    const notes: string[] = [];
    const o = OutputDir.open(s.plan(out, { onNote: (x) => notes.push(x) }));
    expect(notes.join('\n')).toMatch(new RegExp(`removed .*out\\.tmp-${DEAD}, left by an interrupted run`));
    o.abort();
    expect(fs.readdirSync(s.dir)).toEqual(['model']);
  });

  it('a run killed between the two renames of the swap: the next run puts the previous output back', async () => {
    const s = sandbox();
    const out = path.join(s.dir, 'out');
    await writeOutputDir(s.plan(out), (tmp) => fs.writeFileSync(path.join(tmp, 'a.json'), 'previous'));
    deadRun(out, true);
    fs.renameSync(out, `${out}.old-${DEAD}`); // what the killed run had done
    const notes: string[] = [];
    const o = OutputDir.open(s.plan(out, { onNote: (x) => notes.push(x) }));
    expect(notes.join('\n')).toMatch(/put back the previous output .*out, left aside by an interrupted run/);
    expect(fs.readFileSync(path.join(out, 'a.json'), 'utf8')).toBe('previous');
    o.abort();
    expect(fs.readdirSync(s.dir).sort()).toEqual(['model', 'out']);
  });

  it('a lock that names paths outside its own scheme deletes nothing else', () => {
    const s = sandbox();
    const out = path.join(s.dir, 'out');
    const victim = path.join(s.dir, 'victim');
    fs.mkdirSync(victim);
    fs.writeFileSync(path.join(s.dir, '.out.moe-quant.lock'), JSON.stringify({ pid: DEAD, start: null, target: out, tmp: victim, old: victim }));
    OutputDir.open(s.plan(out)).abort();
    expect(fs.existsSync(victim)).toBe(true);
  });
});
