/** Weight quantization: min-max quantizer and RTN, GPTQ / AGQ solver, GPTQ and MatMulNBits packing. Pure math, no I/O. */
export * from './quantizer.js';
export { gptqQuantize, type GptqOptions, type GptqResult } from './gptq.js';
export { cholInverse, choleskyJs, hinvUpper, invertLowerJs, type CholInverse, type LinalgOptions } from './linalg.js';
export { flushSubnormals, gemm, type GemmArgs, type GemmArray } from './ort-gemm.js';
export * from './pack.js';
