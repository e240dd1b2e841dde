/**
 * Output directories: checked before any work, built under a temporary name next to the target, and swapped into
 * place when complete. The rules, in order of what they protect:
 *   - the target is never "", `/`, the home or current directory or one of their parents, the model or an input
 *     (nor a directory holding one), nor inside the model or calibration directory;
 *   - an existing target is replaced only when everything in it was written by moe-quant (listed in its manifest,
 *     {@link MANIFEST}) and is of the same kind, or with `force`;
 *   - a lock file next to the target (`.NAME.moe-quant.lock`) admits one run at a time and doubles as a journal of
 *     the temporary and the previous output, so the next run cleans up after a killed one and puts back a previous
 *     output that a kill between the two renames of the swap left aside (at `NAME.old-PID`);
 *   - creating the temporary directory is the writability check, so an unwritable target fails in seconds;
 *   - work worth resuming (plan.resumable) is set aside in `NAME.partial/` when a run stops early and handed to the
 *     next run into the same target.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fail, MoeQuantError } from '../errors.js';

/** The list of what moe-quant wrote into an output directory; anything else in it is the user's. */
export const MANIFEST = '.moe-quant-manifest.json';
export const MANIFEST_FORMAT = 'moe-quant.output/1';

/** What an output directory holds: a calibration directory or a quantized model. */
export type OutputKind = 'calibration' | 'model';

export interface OutputPlan {
  /** The directory the user named (--out). */
  out: string;
  kind: OutputKind;
  /** The input model directory: never written, never inside or around the output. */
  model: string;
  /** Other inputs (data files, a calibration directory) with the option that named them, e.g. ['--data', 'c4.jsonl']. */
  inputs?: Array<[option: string, file: string]>;
  /** Replace an existing directory that holds files moe-quant did not write. */
  force?: boolean;
  /**
   * Files of the temporary directory worth keeping when a run stops before completing (e.g. EBSS samples already
   * generated): they are set aside in `NAME.partial/` and put into the next run's temporary directory.
   */
  resumable?: string[];
  onNote?(note: string): void;
}

interface Journal {
  pid: number;
  /** Start time of the process (Linux /proc), so a reused pid is not mistaken for a live run. */
  start: string | null;
  target: string;
  tmp: string;
  /** Set while the previous output is aside during the swap. */
  old: string | null;
}

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));
const errno = (e: unknown) => (e as NodeJS.ErrnoException)?.code;

/** `path.resolve`, with symbolic links resolved in the part of the path that exists. */
export function realPath(p: string): string {
  const abs = path.resolve(p);
  let head = abs;
  const tail: string[] = [];
  for (;;) {
    try {
      return path.join(fs.realpathSync(head), ...tail.reverse());
    } catch {
      const parent = path.dirname(head);
      if (parent === head) return abs;
      tail.push(path.basename(head));
      head = parent;
    }
  }
}

/** a === b or a lies inside b. */
function within(a: string, b: string): boolean {
  return a === b || a.startsWith(b.endsWith(path.sep) ? b : b + path.sep);
}

function exists(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** Every file (and empty directory) under `dir`, as sorted relative paths with '/' separators. */
function listTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    const entries = fs.readdirSync(path.join(dir, rel), { withFileTypes: true });
    if (entries.length === 0 && rel) out.push(`${rel}/`);
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(r);
      else out.push(r);
    }
  };
  walk('');
  return out.sort();
}

function readManifest(dir: string): { kind: OutputKind; files: string[] } | null {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, MANIFEST), 'utf8')) as { format?: unknown; kind?: unknown; files?: unknown };
    if (m.format !== MANIFEST_FORMAT || (m.kind !== 'calibration' && m.kind !== 'model') || !Array.isArray(m.files)) return null;
    return { kind: m.kind, files: m.files.filter((f): f is string => typeof f === 'string') };
  } catch {
    return null;
  }
}

const KIND_NAME: Record<OutputKind, string> = { calibration: 'calibration directory', model: 'quantized model' };

/** The output checks that need no writing: call first, before any long work. Returns the resolved target. */
export function checkOutputTarget(plan: OutputPlan): string {
  const { out } = plan;
  if (out.trim() === '') throw fail('BAD_OPTION', '--out is empty; name the output directory');
  const target = realPath(out);
  const show = (p: string) => JSON.stringify(p);
  const guarded: Array<[string, string]> = [
    ['the filesystem root', path.parse(target).root],
    ['your home directory', realPath(os.homedir())],
    ['the current directory', realPath(process.cwd())],
  ];
  for (const [what, dir] of guarded)
    if (within(dir, target))
      throw fail(
        'BAD_OPTION',
        `--out ${show(out)} is ${target === dir ? what : `a parent of ${what}`}; an output directory is replaced as a whole, so name a new or dedicated directory`,
      );
  const model = realPath(plan.model);
  if (within(model, target)) throw fail('BAD_OPTION', `--out ${show(out)} would replace the input model ${plan.model}; choose another --out`);
  if (within(target, model)) throw fail('BAD_OPTION', `--out ${show(out)} is inside the model directory ${plan.model}, which moe-quant never writes; choose another --out`);
  for (const [option, file] of plan.inputs ?? []) {
    const input = realPath(file);
    if (within(input, target)) throw fail('BAD_OPTION', `--out ${show(out)} contains the input ${option} ${file}; choose an --out that holds no input`);
    if (within(target, input)) throw fail('BAD_OPTION', `--out ${show(out)} is inside the input ${option} ${file}; choose another --out`);
  }
  let st: fs.Stats | null = null;
  try {
    st = fs.statSync(target);
  } catch (e) {
    if (errno(e) === 'ENOTDIR') throw fail('IO', `cannot create --out ${show(out)}: a parent in that path is a file, not a directory`);
  }
  if (st && !st.isDirectory()) throw fail('BAD_OPTION', `--out ${show(out)} exists and is not a directory`);
  if (st && !plan.force) {
    let entries: string[];
    try {
      entries = listTree(target);
    } catch (e) {
      throw fail('IO', `cannot read the existing --out ${show(out)}: ${message(e)}`);
    }
    if (entries.length > 0) {
      const manifest = readManifest(target);
      const ours = new Set([...(manifest?.files ?? []), MANIFEST]);
      const foreign = manifest ? entries.filter((e) => !ours.has(e)) : entries;
      const some = (l: string[]) => `${l.slice(0, 3).join(', ')}${l.length > 3 ? `, … (${l.length} in all)` : ''}`;
      if (!manifest)
        throw fail('BAD_OPTION', `--out ${show(out)} exists and was not written by moe-quant (it holds ${some(entries)}); choose another --out, or --force to replace the whole directory`);
      if (foreign.length)
        throw fail('BAD_OPTION', `--out ${show(out)} holds files moe-quant did not write (${some(foreign)}); move them out, choose another --out, or --force to replace the whole directory`);
      if (manifest.kind !== plan.kind)
        throw fail('BAD_OPTION', `--out ${show(out)} is a moe-quant ${KIND_NAME[manifest.kind]}; writing a ${KIND_NAME[plan.kind]} would replace it: choose another --out, or --force`);
    }
  }
  return target;
}

/** Process start time from /proc (Linux), to tell a live run from a reused pid; null elsewhere. */
function processStart(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

function isAlive(pid: number, start: string | null): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if (errno(e) !== 'EPERM') return false;
  }
  const now = processStart(pid);
  return start === null || now === null || now === start;
}

/** Map a filesystem error while creating the output to a one-line IO error. */
function ioError(out: string, e: unknown): Error {
  const why: Record<string, string> = {
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    EROFS: 'read-only file system',
    ENOTDIR: 'a parent in that path is a file, not a directory',
    ENOSPC: 'no space left on the device',
    EDQUOT: 'disk quota exceeded',
    ENAMETOOLONG: 'name too long',
    ENOENT: 'a directory cannot be created there',
  };
  const code = errno(e);
  return fail('IO', `cannot create --out ${JSON.stringify(out)}: ${(code && why[code]) ?? message(e)}`, e);
}

/** `NAME.partial`: resumable work of a run that stopped early, for the next run into the same target. */
export const partialDir = (target: string) => `${target}.partial`;

/** Move the resumable files of `tmp` into the target's partial directory; returns it, or null when there were none. */
function setAside(tmp: string, target: string, resumable: string[]): string | null {
  const keep = resumable.filter((f) => exists(path.join(tmp, f)) && fs.statSync(path.join(tmp, f)).size > 0);
  if (keep.length === 0) return null;
  const dir = partialDir(target);
  fs.mkdirSync(dir, { recursive: true });
  for (const f of keep) fs.renameSync(path.join(tmp, f), path.join(dir, f));
  return dir;
}

/** Hand the partial work of an earlier run to this run's temporary directory. */
function takePartial(target: string, tmp: string, plan: OutputPlan): void {
  const dir = partialDir(target);
  if (!exists(dir)) return;
  const files = (plan.resumable ?? []).filter((f) => exists(path.join(dir, f)));
  for (const f of files) fs.renameSync(path.join(dir, f), path.join(tmp, f));
  fs.rmSync(dir, { recursive: true, force: true });
  if (files.length) plan.onNote?.(`continuing from the work an earlier run of ${target} left in ${dir}`);
}

/** Remove the directories this run created above the target (deepest first), as long as they are empty. */
function removeEmpty(created: string[]): void {
  for (const p of [...created].reverse()) {
    try {
      fs.rmdirSync(p);
    } catch {
      return; // not empty (or gone): leave it and its parents
    }
  }
}

const active = new Set<OutputDir>();
let exitHookInstalled = false;

/**
 * Remove the temporary directories (and locks) of every output still being built: what the CLI calls on SIGINT or
 * SIGTERM before it exits. Returns the removed temporary directories.
 */
export function abortActiveOutputs(): Array<{ tmp: string; partial: string | null }> {
  return [...active].map((o) => ({ tmp: o.tmp, partial: o.abort() }));
}

/** An output being built: `tmp` is filled, then {@link commit} swaps it into place, or {@link abort} removes it. */
export class OutputDir {
  private journal: Journal;
  private readonly lock: string;
  private readonly createdParents: string[];
  private done = false;

  private constructor(
    private readonly plan: OutputPlan,
    readonly target: string,
    readonly tmp: string,
    readonly kind: OutputKind,
    lock: string,
    journal: Journal,
    createdParents: string[],
  ) {
    this.lock = lock;
    this.journal = journal;
    this.createdParents = createdParents;
  }

  /** Check the plan, take the lock (cleaning up after a killed run), and create the temporary directory. */
  static open(plan: OutputPlan): OutputDir {
    const target = checkOutputTarget(plan);
    const parent = path.dirname(target);
    const base = path.basename(target);
    const createdParents: string[] = [];
    try {
      for (let p = parent; !exists(p); p = path.dirname(p)) createdParents.unshift(p);
      fs.mkdirSync(parent, { recursive: true });
    } catch (e) {
      throw ioError(plan.out, e);
    }
    const lock = path.join(parent, `.${base}.moe-quant.lock`);
    const tmp = `${target}.tmp-${process.pid}`;
    const journal: Journal = { pid: process.pid, start: processStart(process.pid), target, tmp, old: null };
    let acquired = false;
    try {
      for (let attempt = 0; attempt < 3 && !acquired; attempt++) {
        try {
          fs.writeFileSync(lock, `${JSON.stringify(journal)}\n`, { flag: 'wx' });
          acquired = true;
        } catch (e) {
          if (errno(e) !== 'EEXIST') throw e;
          OutputDir.recover(lock, target, plan);
        }
      }
      if (!acquired) throw fail('BUSY', `cannot take the lock ${lock} for --out ${JSON.stringify(plan.out)}`);
      fs.mkdirSync(tmp);
      takePartial(target, tmp, plan);
    } catch (e) {
      if (acquired) fs.rmSync(lock, { force: true });
      removeEmpty(createdParents);
      if (e instanceof MoeQuantError) throw e;
      throw ioError(plan.out, e);
    }
    const o = new OutputDir(plan, target, tmp, plan.kind, lock, journal, createdParents);
    active.add(o);
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.on('exit', () => abortActiveOutputs());
    }
    return o;
  }

  /** An existing lock: a live run → BUSY; a dead one → undo what it left (temporary, previous output aside). */
  private static recover(lock: string, target: string, plan: OutputPlan): void {
    let j: Partial<Journal> = {};
    try {
      j = JSON.parse(fs.readFileSync(lock, 'utf8')) as Partial<Journal>;
    } catch (e) {
      if (errno(e) === 'ENOENT') return; // released meanwhile: try again
    }
    const pid = Number(j.pid);
    if (Number.isInteger(pid) && pid > 0 && isAlive(pid, j.start ?? null))
      throw fail('BUSY', `--out ${JSON.stringify(plan.out)} is being written by another moe-quant run (pid ${pid}); wait for it to finish or choose another --out`);
    if (Number.isInteger(pid) && pid > 0) {
      // Only the names this scheme gives, never a path read from the file as such.
      const tmp = `${target}.tmp-${pid}`;
      const old = `${target}.old-${pid}`;
      if (j.old === old && exists(old)) {
        if (!exists(target)) {
          fs.renameSync(old, target);
          plan.onNote?.(`put back the previous output ${target}, left aside by an interrupted run (pid ${pid})`);
        } else fs.rmSync(old, { recursive: true, force: true });
      }
      if (exists(tmp)) {
        setAside(tmp, target, plan.resumable ?? []);
        fs.rmSync(tmp, { recursive: true, force: true });
        plan.onNote?.(`removed ${tmp}, left by an interrupted run (pid ${pid})`);
      }
    }
    fs.rmSync(lock, { force: true });
  }

  private writeJournal(): void {
    const next = `${this.lock}.${process.pid}`;
    fs.writeFileSync(next, `${JSON.stringify(this.journal)}\n`);
    fs.renameSync(next, this.lock);
  }

  /** Write the manifest and swap the temporary directory into place; returns the output path. */
  commit(): string {
    if (this.done) throw new Error(`output ${this.target} already committed or aborted`);
    try {
      checkOutputTarget(this.plan); // files the user put into the target meanwhile are not ours to delete
    } catch (e) {
      active.delete(this);
      fs.rmSync(this.lock, { force: true });
      this.done = true;
      throw fail('BAD_OPTION', `${(e as Error).message} (the finished output is kept at ${this.tmp})`);
    }
    const files = listTree(this.tmp);
    fs.writeFileSync(path.join(this.tmp, MANIFEST), `${JSON.stringify({ format: MANIFEST_FORMAT, kind: this.kind, files }, null, 2)}\n`);
    if (exists(this.target)) {
      // A kill between these two renames leaves the previous output at `old`; the journal lets the next run put it back.
      this.journal = { ...this.journal, old: `${this.target}.old-${process.pid}` };
      this.writeJournal();
      fs.renameSync(this.target, this.journal.old!);
      fs.renameSync(this.tmp, this.target);
      fs.rmSync(this.journal.old!, { recursive: true, force: true });
    } else {
      fs.renameSync(this.tmp, this.target);
    }
    this.finish();
    return this.target;
  }

  /**
   * Remove the temporary directory (and parents this run created, when empty) and release the lock; resumable
   * files are set aside first. Returns where they were set aside, if anywhere.
   */
  abort(): string | null {
    if (this.done) return null;
    const partial = setAside(this.tmp, this.target, this.plan.resumable ?? []);
    fs.rmSync(this.tmp, { recursive: true, force: true });
    this.finish();
    if (!partial) removeEmpty(this.createdParents);
    return partial;
  }

  private finish(): void {
    this.done = true;
    active.delete(this);
    fs.rmSync(this.lock, { force: true });
  }
}

/** Build an output: `fill(tmp)` writes everything, then it is swapped into place; on error nothing stays. */
export async function writeOutputDir<T>(plan: OutputPlan, fill: (tmp: string) => Promise<T> | T): Promise<{ out: string; value: T }> {
  const o = OutputDir.open(plan);
  let value: T;
  try {
    value = await fill(o.tmp);
  } catch (e) {
    o.abort();
    throw e;
  }
  return { out: o.commit(), value };
}
