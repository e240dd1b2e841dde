/** Public surface of the checkpoint layer: dtypes, safetensors reading/writing, checkpoint directories. */
export { DTYPE_BYTES, findNonFinite, float32ToBf16, float32ToF16, isDType, toFloat32, type DType, type NonFinite } from './dtypes.js';
export { MAX_HEADER_BYTES, type TensorInfo } from './header.js';
export { SafetensorsFile } from './safetensors.js';
export { tensorBytes, writeSafetensors, type TensorToWrite } from './writer.js';
export { Checkpoint, INDEX_FILE, SINGLE_FILE, type CheckpointTensorInfo } from './checkpoint.js';
