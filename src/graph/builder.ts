/**
 * A small fluent builder for ONNX graphs: name generation, constants, inputs and outputs.
 * Blocks (attention, MLP, norms) are plain functions that take a GraphBuilder and value names and return value names.
 */
import {
  encodeModel,
  OnnxType,
  type AttrValue,
  type Dim,
  type NodeSpec,
  type OnnxTypeCode,
  type TensorSpec,
  type ValueInfoSpec,
} from './onnx-proto.js';

export { OnnxType };

/** Attribute constructors: ONNX needs the type spelled out (a JS number is ambiguous). */
export const attr = {
  f: (value: number): AttrValue => ({ kind: 'float', value }),
  i: (value: number): AttrValue => ({ kind: 'int', value }),
  s: (value: string): AttrValue => ({ kind: 'string', value }),
  ints: (value: number[]): AttrValue => ({ kind: 'ints', value }),
  floats: (value: number[]): AttrValue => ({ kind: 'floats', value }),
};

const MS = 'com.microsoft';

export class GraphBuilder {
  private readonly nodes: NodeSpec[] = [];
  private readonly inputs: ValueInfoSpec[] = [];
  private readonly outputs: ValueInfoSpec[] = [];
  private readonly initializers: TensorSpec[] = [];
  private readonly constCache = new Map<string, string>();
  private counter = 0;
  private usesMs = false;

  /** ONNX opset of the default domain. */
  opset = 21;

  constructor(readonly name: string) {}

  /** Declare a graph input and return its name. */
  input(name: string, type: OnnxTypeCode, dims: Dim[]): string {
    this.inputs.push({ name, type, dims });
    return name;
  }

  /** Declare `value` as a graph output called `name`. */
  output(name: string, value: string, type: OnnxTypeCode, dims: Dim[]): void {
    if (value !== name) this.nodes.push({ opType: 'Identity', inputs: [value], outputs: [name] });
    this.outputs.push({ name, type, dims });
  }

  private fresh(hint: string): string {
    return `${hint}_${this.counter++}`;
  }

  /** Add a node with one output; returns the output name. */
  op(opType: string, inputs: string[], attributes?: Record<string, AttrValue>, domain?: string): string {
    return this.opN(opType, inputs, 1, attributes, domain)[0]!;
  }

  /** Add a node with `numOutputs` outputs. */
  opN(
    opType: string,
    inputs: string[],
    numOutputs: number,
    attributes?: Record<string, AttrValue>,
    domain?: string,
  ): string[] {
    const outputs = Array.from({ length: numOutputs }, () => this.fresh(opType));
    if (domain === MS) this.usesMs = true;
    this.nodes.push({ opType, inputs, outputs, attributes, domain });
    return outputs;
  }

  /** Contrib op in the com.microsoft domain. */
  msOp(opType: string, inputs: string[], attributes?: Record<string, AttrValue>): string {
    return this.op(opType, inputs, attributes, MS);
  }

  /** Constant int64 tensor (deduplicated). A scalar when `dims` is []. */
  i64(values: number[], dims: number[] = [values.length]): string {
    const key = `i64:${dims.join('x')}:${values.join(',')}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const data = new BigInt64Array(values.map((v) => BigInt(v)));
    const name = this.fresh('const_i64');
    this.initializers.push({ name, type: OnnxType.INT64, dims, raw: new Uint8Array(data.buffer) });
    this.constCache.set(key, name);
    return name;
  }

  /** Constant int32 tensor (deduplicated). A scalar when `dims` is []. */
  i32(values: number[], dims: number[] = [values.length]): string {
    const key = `i32:${dims.join('x')}:${values.join(',')}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.fresh('const_i32');
    this.initializers.push({ name, type: OnnxType.INT32, dims, raw: new Uint8Array(Int32Array.from(values).buffer) });
    this.constCache.set(key, name);
    return name;
  }

  /** Constant float32 tensor (deduplicated for small ones). */
  f32(values: number[] | Float32Array, dims: number[] = [values.length]): string {
    const small = values.length <= 16;
    const key = small ? `f32:${dims.join('x')}:${Array.from(values).join(',')}` : '';
    const hit = small ? this.constCache.get(key) : undefined;
    if (hit) return hit;
    const data = Float32Array.from(values);
    const name = this.fresh('const_f32');
    this.initializers.push({ name, type: OnnxType.FLOAT, dims, raw: new Uint8Array(data.buffer) });
    if (small) this.constCache.set(key, name);
    return name;
  }

  /** Serialize. */
  build(): Uint8Array {
    const opsets = [{ domain: '', version: this.opset }];
    if (this.usesMs) opsets.push({ domain: MS, version: 1 });
    return encodeModel({
      graphName: this.name,
      nodes: this.nodes,
      inputs: this.inputs,
      outputs: this.outputs,
      initializers: this.initializers,
      opsets,
    });
  }
}
