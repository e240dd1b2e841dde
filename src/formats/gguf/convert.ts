/**
 * Checkpoint → GGUF without calibration: float types as they are, block types rounded to nearest on their grid
 * (llama.cpp's reference quantizer). What `quantize --format gguf --gguf-type f32|f16` runs, and what the
 * llama.cpp tests use to check layouts.
 */
import { openModel } from '../../engine/model.js';
import { u32 } from './file.js';
import { GGML_TYPES } from './quants.js';
import { GgufWriter, type GgufOptions } from './writer.js';

/** llama.cpp `general.file_type` (llama_ftype) of the linears' type. */
export const FILE_TYPE: Record<string, number> = { F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q8_0: 7, Q5_0: 8, Q5_1: 9, Q4_K: 15, Q5_K: 17, Q6_K: 18 };

/** Writes `dir/model.gguf` from the checkpoint in `model` (dir must exist). Returns the file. */
export async function convertToGguf(model: string, dir: string, options: GgufOptions): Promise<string> {
  const m = openModel(model);
  let w: GgufWriter | null = null;
  try {
    w = new GgufWriter(dir, m, options);
    const type = options.type.toUpperCase();
    void GGML_TYPES;
    const [file] = w.finish([['general.file_type', u32(FILE_TYPE[type] ?? 0)]]);
    w = null;
    return file!;
  } finally {
    w?.abort();
    m.checkpoint.close();
  }
}
