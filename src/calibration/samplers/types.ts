/**
 * Samplers: where calibration windows come from. Each returns `samples` token windows of `seqLen` tokens; the
 * calibration (statistics, loss-free bias, Hessians, balance report) is the same whatever the sampler.
 *   text      windows drawn at random from text files (GPTQ's protocol)
 *   ebss      windows the model writes itself, expert-balanced beam search (MoEQuant's EBSS)
 *   balanced  windows selected from a pool so that the set's expert usage is as even as possible
 */
import type { Engine } from '../../engine/engine.js';

export type SamplerName = 'text' | 'ebss' | 'balanced';
export const SAMPLERS: readonly SamplerName[] = ['text', 'ebss', 'balanced'];

export interface SamplerContext {
  engine: Engine;
  /** The model directory (tokenizer, fingerprint). */
  model: string;
  samples: number;
  seqLen: number;
  seed: number;
  /** The calibration directory being written (a sampler may leave calibration.jsonl there). */
  dir: string;
  onNote?(note: string): void;
  onProgress?(done: number, total: number, stage: string, detail?: string): void;
}

export interface SampledSet {
  windows: Int32Array[];
  /** What the sampler did, recorded in calibration.json under "sampler" (name, settings, results). */
  info: Record<string, unknown> & { name: SamplerName };
  /** Input files the set came from (the balance report's `data`). */
  data: string[];
}
