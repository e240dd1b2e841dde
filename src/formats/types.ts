/**
 * An output format of `quantize`: how the quantized model is laid out on disk. Each format (a folder beside this
 * file) owns its layout and packing; the layer-sequential driver only hands it each linear once it is final.
 */
import type { LoadedModel } from '../engine/model.js';
import type { LinearModule } from '../pipeline/modules.js';
import type { QuantizedLinear } from '../quantization/quantizer.js';
import type { QuantType } from './gguf/quants.js';
import type { GgufOptions } from './gguf/writer.js';

/** The quantize settings a format reads. */
export interface FormatSettings {
  /** The --format value (a format may have variants, e.g. gptq / gptq_v2). */
  format: string;
  method: 'rtn' | 'gptq' | 'agq';
  bits: number;
  groupSize: number;
  sym: boolean;
  actOrder: boolean;
  damp: number;
  blockSize: number;
  trueSequential: boolean;
  maxShardBytes?: number;
  gguf?: GgufOptions;
}

/** What the run did, for the format's metadata. */
export interface RunSummary {
  /** Prefixes of the quantized linears. */
  quantized: string[];
  /** Linears (prefix, N) left in floating point (--skip, or not storable). */
  leftOut: (prefix: string, N: number) => boolean;
  routingBias: string;
}

export interface ModelWriter {
  /** Before any work: the run leaves these linears (weight names) in floating point (--skip). */
  leaveFloat?(leftOut: (weight: string) => boolean): void;
  /** Linears this format cannot store quantized and leaves in floating point (e.g. GPTQ: N % (32/bits) ≠ 0). */
  keepsFloat(m: Pick<LinearModule, 'weight' | 'N' | 'K'>): boolean;
  /** Before any work, for each linear to quantize: throws (one line, naming it) when the format cannot store it. */
  check?(m: Pick<LinearModule, 'prefix' | 'N' | 'K'>): void;
  /** Before any work, given the linears to quantize: a note for the user about the output (e.g. GPTQ's shorter last groups), or null. */
  note?(todo: Array<Pick<LinearModule, 'prefix' | 'K'>>): string | null;
  /**
   * The grid a format solves a linear on when it is not the min-max grid of bits / group / sym (GGUF: its block
   * type); the solve hands add() the tensor's bytes in that type as `q.packed`.
   */
  grid?: (m: Pick<LinearModule, 'weight'>) => QuantType;
  /** Store a final quantized linear; returns the bytes it takes in the output. */
  add(m: LinearModule, q: QuantizedLinear): number;
  /** A layer is done: spill what it produced. */
  flushLayer(layerIndex: number): void;
  /** Write the model files into the output directory; returns their paths. */
  finish(run: RunSummary): string[];
  /** A failed run: remove temporary files. */
  abort(): void;
}

export interface OutputFormat {
  /** --format values it writes. */
  names: readonly string[];
  /** Checks the settings (before any work) and opens a writer into `dir` for `model`. */
  open(dir: string, model: LoadedModel, settings: FormatSettings): ModelWriter;
}
