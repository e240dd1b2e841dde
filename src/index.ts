/**
 * moe-quant as a library: the same functions the CLI calls. Nothing here prints or exits; user-facing failures
 * are thrown as MoeQuantError (with a `code`).
 */
export { MoeQuantError, type ErrorCode } from './errors.js';
export { specFromConfig, SUPPORTED_MODEL_TYPES } from './architectures/registry.js';
export type { ModelSpec, LayerSpec, RoutingSpec, AttentionSpec, MoeFfnSpec } from './architectures/types.js';
export { Checkpoint } from './checkpoint/checkpoint.js';
export { SafetensorsFile, writeSafetensors } from './checkpoint/safetensors.js';
export { loadTokenizer, type TextTokenizer } from './checkpoint/tokenizer.js';
export { createEngine, type Engine, type EngineOptions } from './engine/engine.js';
export type { ForwardHooks, MoeRoutingEvent, RunOptions, RunResult } from './engine/forward.js';
export { inspectModel, type InspectResult } from './engine/inspect.js';
export { openModel } from './engine/model.js';
export { evaluatePerplexity, type EvalOptions, type EvalResult } from './eval/perplexity.js';
export { evaluateKl, type KlOptions, type KlResult, type ReferenceResult } from './eval/kl.js';
export type { Comparison, Spread } from './eval/kl-stats.js';
export { comparePositions, type ComparedPositions, type CompareOptions } from './engine/compare.js';
export { checkDevice, type DeviceCheck, type DeviceCheckOptions } from './eval/device-check.js';
export { route, dispatch, expertLoads, type Routing } from './routing/router.js';
export { resolveDevice, type Device, type DeviceChoice } from './graph/session.js';
export { calibrate, DEFAULT_BIAS_RATE, type CalibrateOptions, type CalibrateResult } from './calibration/calibrate.js';
export { quantizeModel, type QuantizeOptions, type QuantizeResult } from './pipeline/quantize.js';
export { Decoder } from './engine/decoder.js';
export { readBalanceReport, writeBalanceReport, renderBalanceHtml, renderBalanceMarkdown } from './report/index.js';
export type { BalanceReport, LayerBalance } from './report/types.js';
export type { QuantReport } from './report/quant-report.js';
export { rtnQuantize, gptqQuantize, packGptq, unpackGptq } from './quantization/index.js';
export type { QuantConfig, QuantizedLinear } from './quantization/index.js';
