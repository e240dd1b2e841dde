/**
 * A Hugging Face checkpoint directory seen as one set of tensors, whether it is a single `model.safetensors`,
 * shards listed in `model.safetensors.index.json`, or a loose set of `*.safetensors` files.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail } from '../errors.js';
import { DTYPE_BYTES, type DType } from './dtypes.js';
import { SafetensorsFile, type TensorInfo } from './safetensors.js';

/** Name of the shard index file written by `save_pretrained` for sharded checkpoints. */
export const INDEX_FILE = 'model.safetensors.index.json';
/** Name of the single-file checkpoint. */
export const SINGLE_FILE = 'model.safetensors';

/** A tensor's header entry plus the path of the file holding it. */
export type CheckpointTensorInfo = TensorInfo & { file: string };

interface Entry {
  shard: SafetensorsFile;
  info: TensorInfo;
}

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Reads the index's `weight_map`, checking it is an object of tensor name → shard file name inside `dir`. */
function readWeightMap(dir: string): Map<string, string> {
  const where = `${INDEX_FILE} in ${dir}`;
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(path.join(dir, INDEX_FILE), 'utf8'));
  } catch (e) {
    const why = (e instanceof Error ? e.message : String(e)).split('\n')[0];
    throw fail('BAD_CHECKPOINT', `cannot read ${where}: ${why}`, e);
  }
  const wm = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof json !== 'object' || json === null || typeof wm !== 'object' || wm === null || Array.isArray(wm)) {
    throw fail('BAD_CHECKPOINT', `${where} has no weight_map object`);
  }
  const map = new Map<string, string>();
  for (const [name, shard] of Object.entries(wm)) {
    if (typeof shard !== 'string' || shard === '') {
      throw fail('BAD_CHECKPOINT', `${where}: weight_map entry for ${name} is not a file name`);
    }
    // Shards must live in the checkpoint directory; an index must not make us read arbitrary files.
    if (path.isAbsolute(shard) || shard.split(/[\\/]/).includes('..')) {
      throw fail('BAD_CHECKPOINT', `${where}: shard path ${shard} points outside the checkpoint directory`);
    }
    map.set(name, shard);
  }
  if (map.size === 0) throw fail('BAD_CHECKPOINT', `${where}: weight_map is empty`);
  return map;
}

/**
 * All tensors of a checkpoint directory. Headers of every shard are read and validated by {@link Checkpoint.open};
 * tensor data is read on demand, one tensor at a time, and each shard's file descriptor stays open from its first
 * read until {@link Checkpoint.close}.
 */
export class Checkpoint {
  /** The directory given to {@link Checkpoint.open}. */
  readonly dir: string;
  /** Paths of the safetensors files in use, sorted by file name. */
  readonly files: string[];
  /** Sum of the data sizes of all tensors, in bytes. */
  readonly totalBytes: number;
  private readonly entries: Map<string, Entry>;
  private readonly shards: SafetensorsFile[];

  private constructor(dir: string, shards: SafetensorsFile[], entries: Map<string, Entry>) {
    this.dir = dir;
    this.shards = shards;
    this.files = shards.map((s) => s.path);
    this.entries = entries;
    let total = 0;
    for (const { info } of entries.values()) total += info.byteLength;
    this.totalBytes = total;
  }

  /**
   * Opens the checkpoint in `dir`: shards from `model.safetensors.index.json` when present, else `model.safetensors`,
   * else every `*.safetensors` file. Throws BAD_CHECKPOINT when the directory or a listed shard is missing, an index
   * entry names a tensor its shard lacks, a tensor name appears in two files, or any header is invalid.
   */
  static open(dir: string): Checkpoint {
    let isDir = false;
    try {
      isDir = fs.statSync(dir).isDirectory();
    } catch {
      throw fail('BAD_CHECKPOINT', `checkpoint directory ${dir} does not exist`);
    }
    if (!isDir) throw fail('BAD_CHECKPOINT', `checkpoint path ${dir} is not a directory`);

    if (isFile(path.join(dir, INDEX_FILE))) return Checkpoint.fromIndex(dir);
    let names: string[];
    if (isFile(path.join(dir, SINGLE_FILE))) {
      names = [SINGLE_FILE];
    } else {
      names = fs
        .readdirSync(dir)
        .filter((f) => f.endsWith('.safetensors') && isFile(path.join(dir, f)))
        .sort();
      if (names.length === 0) throw fail('BAD_CHECKPOINT', `no *.safetensors in ${dir}`);
    }
    const shards = names.map((n) => SafetensorsFile.open(path.join(dir, n)));
    const entries = new Map<string, Entry>();
    for (const shard of shards) {
      for (const info of shard.tensors.values()) {
        const prev = entries.get(info.name);
        if (prev) {
          throw fail(
            'BAD_CHECKPOINT',
            `tensor ${info.name} appears in both ${path.basename(prev.shard.path)} and ${path.basename(shard.path)} in ${dir}`,
          );
        }
        entries.set(info.name, { shard, info });
      }
    }
    return new Checkpoint(dir, shards, entries);
  }

  private static fromIndex(dir: string): Checkpoint {
    const weightMap = readWeightMap(dir);
    const shardNames = [...new Set(weightMap.values())].sort();
    for (const s of shardNames) {
      if (!isFile(path.join(dir, s))) {
        throw fail('BAD_CHECKPOINT', `shard ${s} listed in ${INDEX_FILE} is missing from ${dir}`);
      }
    }
    const byName = new Map(shardNames.map((s) => [s, SafetensorsFile.open(path.join(dir, s))]));
    // Only the tensors the index lists are part of the model, exactly as transformers loads them.
    const entries = new Map<string, Entry>();
    for (const name of [...weightMap.keys()].sort()) {
      const shardName = weightMap.get(name)!;
      const shard = byName.get(shardName)!;
      const info = shard.tensors.get(name);
      if (!info) {
        throw fail('BAD_CHECKPOINT', `tensor ${name} is listed in ${INDEX_FILE} for ${shardName} but that shard does not contain it (${dir})`);
      }
      entries.set(name, { shard, info });
    }
    return new Checkpoint(dir, [...byName.values()], entries);
  }

  /** All tensor names, sorted. */
  names(): string[] {
    return [...this.entries.keys()].sort();
  }

  /** Whether the checkpoint contains tensor `name`. */
  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** Header entry of `name` plus the path of its file; throws BAD_CHECKPOINT when absent. */
  info(name: string): CheckpointTensorInfo {
    const { shard, info } = this.entry(name);
    return { ...info, shape: info.shape.slice(), file: shard.path };
  }

  /** Raw little-endian bytes of tensor `name` (float data checked for NaN/Inf like every read). */
  readBytes(name: string): Uint8Array {
    return this.entry(name).shard.readBytes(name);
  }

  /** Read a float tensor into a caller-owned float32 buffer (see SafetensorsFile.readFloat32Into). */
  readFloat32Into(name: string, dst: Float32Array): Float32Array {
    return this.entry(name).shard.readFloat32Into(name, dst);
  }

  /** Tensor `name` as float32 (see SafetensorsFile.readFloat32). */
  readFloat32(name: string): Float32Array {
    return this.entry(name).shard.readFloat32(name);
  }

  /** Rows `[start, start + count)` of tensor `name`'s first dimension as float32 (embedding lookups). */
  readRowsFloat32(name: string, start: number, count: number): Float32Array {
    return this.entry(name).shard.readRowsFloat32(name, start, count);
  }

  /** Number of elements per dtype over all tensors; every dtype is present as a key, 0 when unused. */
  dtypes(): Record<DType, number> {
    const counts = Object.fromEntries(Object.keys(DTYPE_BYTES).map((d) => [d, 0])) as Record<DType, number>;
    for (const { info } of this.entries.values()) counts[info.dtype] += info.numel;
    return counts;
  }

  /** Closes every shard's file descriptor. Reading after close reopens files as needed. */
  close(): void {
    for (const s of this.shards) s.close();
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) throw fail('BAD_CHECKPOINT', `tensor ${name} not found in checkpoint ${this.dir}`);
    return e;
  }
}
