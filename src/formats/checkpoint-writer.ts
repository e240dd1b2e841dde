/**
 * A Hugging Face checkpoint directory with some linears replaced (the GPTQ and dequantized formats): each
 * replaced weight's tensors (GPTQ `P.qweight`… or float32 `P.weight`) are spilled to one part file per layer as
 * soon as the layer is done (memory stays bounded), then every tensor is streamed into shards of at most
 * `maxShardBytes`, in model order; the rest is copied unchanged, with config.json (+ extra keys) and the
 * tokenizer files.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../checkpoint/safetensors.js';
import { DTYPE_BYTES, type DType } from '../checkpoint/dtypes.js';
import type { LoadedModel } from '../engine/model.js';

interface PlannedTensor {
  name: string;
  dtype: DType;
  shape: number[];
  bytes: number;
  read: () => Uint8Array;
}

const COPY_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json', 'tokenizer.model', 'vocab.json', 'merges.txt'];

export class QuantizedCheckpointWriter {
  private readonly partsDir: string;
  /** weight tensor name → its replacement tensors, located in a part file. */
  private readonly replaced = new Map<string, Array<{ file: string; name: string }>>();
  private pending: TensorToWrite[] = [];
  private pendingWeights: Array<{ weight: string; names: string[] }> = [];

  constructor(
    readonly dir: string,
    private readonly model: LoadedModel,
    private readonly maxShardBytes = 4 * 2 ** 30,
  ) {
    this.partsDir = path.join(dir, '.parts');
    fs.mkdirSync(this.partsDir, { recursive: true });
  }

  /** Queue the replacement tensors of one quantized linear (written at the next flushLayer). */
  add(weight: string, tensors: TensorToWrite[]): void {
    this.pending.push(...tensors);
    this.pendingWeights.push({ weight, names: tensors.map((t) => t.name) });
  }

  /** Spill everything queued for a layer to its part file. */
  flushLayer(layerIndex: number): void {
    if (this.pending.length === 0) return;
    const file = path.join(this.partsDir, `layer-${String(layerIndex).padStart(4, '0')}.safetensors`);
    writeSafetensors(file, this.pending);
    for (const { weight, names } of this.pendingWeights) this.replaced.set(weight, names.map((name) => ({ file, name })));
    this.pending = [];
    this.pendingWeights = [];
  }

  /** Stream all tensors into shards, write config.json (+ extra keys) and copy tokenizer files; returns model files. */
  finish(configExtra: Record<string, unknown>): string[] {
    const source = this.model.checkpoint;
    const parts = new Map<string, SafetensorsFile>();
    const part = (file: string) => {
      let f = parts.get(file);
      if (!f) parts.set(file, (f = SafetensorsFile.open(file)));
      return f;
    };
    const expectedOrder = this.model.expected.map((t) => t.name);
    const expectedSet = new Set(expectedOrder);
    const others = source.names().filter((n) => !expectedSet.has(n));
    const plan: PlannedTensor[] = [];
    for (const name of [...expectedOrder, ...others]) {
      const rep = this.replaced.get(name);
      if (rep) {
        for (const r of rep) {
          const info = part(r.file).tensors.get(r.name)!;
          plan.push({ name: r.name, dtype: info.dtype, shape: info.shape, bytes: info.byteLength, read: () => part(r.file).readBytes(r.name) });
        }
      } else {
        const info = source.info(name);
        plan.push({ name, dtype: info.dtype, shape: info.shape, bytes: info.numel * DTYPE_BYTES[info.dtype], read: () => source.readBytes(name) });
      }
    }
    const shards: PlannedTensor[][] = [[]];
    let size = 0;
    for (const t of plan) {
      if (size + t.bytes > this.maxShardBytes && shards[shards.length - 1]!.length > 0) {
        shards.push([]);
        size = 0;
      }
      shards[shards.length - 1]!.push(t);
      size += t.bytes;
    }
    const names =
      shards.length === 1
        ? ['model.safetensors']
        : shards.map((_, i) => `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`);
    const weightMap: Record<string, string> = {};
    shards.forEach((shard, i) => {
      writeSafetensors(
        path.join(this.dir, names[i]!),
        shard.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: t.read })),
        { format: 'pt' },
      );
      for (const t of shard) weightMap[t.name] = names[i]!;
    });
    if (shards.length > 1) {
      const total = plan.reduce((s, t) => s + t.bytes, 0);
      fs.writeFileSync(
        path.join(this.dir, 'model.safetensors.index.json'),
        `${JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2)}\n`,
      );
    }
    for (const f of parts.values()) f.close();
    fs.rmSync(this.partsDir, { recursive: true, force: true });
    const config = { ...this.model.config, ...configExtra };
    fs.writeFileSync(path.join(this.dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
    for (const f of COPY_FILES) {
      const src = path.join(this.model.dir, f);
      if (fs.existsSync(src)) fs.copyFileSync(src, path.join(this.dir, f));
    }
    return names.map((n) => path.join(this.dir, n));
  }
}
