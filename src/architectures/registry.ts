/** model_type → family definition. Adding a family = one small file + one line here. */
import { fail } from '../errors.js';
import { ConfigReader, type ConfigAliases, type RawConfig } from './_config.js';
import { deepseek } from './deepseek.js';
import { deepseekV2 } from './deepseek_v2.js';
import { deepseekV3 } from './deepseek_v3.js';
import { mixtral } from './mixtral.js';
import { olmoe } from './olmoe.js';
import { qwen2Moe } from './qwen2_moe.js';
import { qwen3Moe } from './qwen3_moe.js';
import type { ModelSpec } from './types.js';

export interface FamilyDefinition {
  /** Hugging Face `model_type`. */
  modelType: string;
  /**
   * Other spellings of the keys `build` reads that transformers accepts for this family (its config class's
   * `attribute_map`), by the key `build` reads. A file may use either; both with different values is an error.
   */
  aliases?: ConfigAliases;
  /** Normalize a config.json of this family. */
  build(cfg: ConfigReader): ModelSpec;
}

const FAMILIES: readonly FamilyDefinition[] = [mixtral, qwen2Moe, qwen3Moe, olmoe, deepseek, deepseekV2, deepseekV3];

/** The model_type values moe-quant can run. */
export const SUPPORTED_MODEL_TYPES: readonly string[] = FAMILIES.map((f) => f.modelType);

/** Turn a parsed config.json into a ModelSpec, or fail with a clear message. */
export function specFromConfig(raw: RawConfig, source = 'config.json'): ModelSpec {
  const type = raw['model_type'];
  if (typeof type !== 'string') throw fail('BAD_CONFIG', `${source}: "model_type" is missing`);
  const family = FAMILIES.find((f) => f.modelType === type);
  if (!family)
    throw fail('UNSUPPORTED', `${source}: model_type "${type}" is not supported (supported: ${SUPPORTED_MODEL_TYPES.join(', ')})`);
  return family.build(new ConfigReader(raw, source, family.aliases));
}
