/**
 * Minimal encoder for the ONNX protobuf messages we need (ModelProto, GraphProto, NodeProto, AttributeProto,
 * TensorProto, ValueInfoProto). We only ever *write* models, and the wire format is small, so a hand-written
 * encoder (no protobufjs, no stale schema) keeps the dependency list short and lets us use any IR/opset version.
 * Field numbers are from onnx/onnx.proto.
 */

/** ONNX TensorProto.DataType codes. */
export const OnnxType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  INT32: 6,
  INT64: 7,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  BFLOAT16: 16,
} as const;
export type OnnxTypeCode = (typeof OnnxType)[keyof typeof OnnxType];

/** A dimension: a fixed size or a symbolic name. */
export type Dim = number | string;

export interface TensorSpec {
  name: string;
  type: OnnxTypeCode;
  dims: number[];
  /** Raw little-endian bytes. */
  raw: Uint8Array;
}

export type AttrValue =
  | { kind: 'float'; value: number }
  | { kind: 'int'; value: number }
  | { kind: 'string'; value: string }
  | { kind: 'ints'; value: number[] }
  | { kind: 'floats'; value: number[] }
  | { kind: 'tensor'; value: TensorSpec };

export interface NodeSpec {
  opType: string;
  inputs: string[];
  outputs: string[];
  name?: string;
  domain?: string;
  attributes?: Record<string, AttrValue>;
}

export interface ValueInfoSpec {
  name: string;
  type: OnnxTypeCode;
  dims: Dim[];
}

export interface ModelSpec {
  graphName: string;
  nodes: NodeSpec[];
  inputs: ValueInfoSpec[];
  outputs: ValueInfoSpec[];
  initializers: TensorSpec[];
  opsets: Array<{ domain: string; version: number }>;
  irVersion?: number;
}

/** Growable byte buffer with protobuf primitives. */
class Writer {
  private buf = new Uint8Array(1024);
  private len = 0;

  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  byte(b: number): void {
    this.ensure(1);
    this.buf[this.len++] = b;
  }

  /** Varint of a non-negative or negative integer (negative int64 → 10-byte two's complement). */
  varint(v: number): void {
    if (v >= 0 && v < 2 ** 31) {
      while (v > 0x7f) {
        this.byte((v & 0x7f) | 0x80);
        v >>>= 7;
      }
      this.byte(v);
      return;
    }
    let big = BigInt.asUintN(64, BigInt(v));
    while (big > 0x7fn) {
      this.byte(Number(big & 0x7fn) | 0x80);
      big >>= 7n;
    }
    this.byte(Number(big));
  }

  tag(field: number, wire: number): void {
    this.varint(field * 8 + wire);
  }

  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  finish(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}

const utf8 = new TextEncoder();

type Emit = (w: Writer) => void;

function fieldVarint(w: Writer, field: number, v: number): void {
  w.tag(field, 0);
  w.varint(v);
}
function fieldBytes(w: Writer, field: number, b: Uint8Array): void {
  w.tag(field, 2);
  w.varint(b.length);
  w.bytes(b);
}
function fieldString(w: Writer, field: number, s: string): void {
  fieldBytes(w, field, utf8.encode(s));
}
function fieldMessage(w: Writer, field: number, emit: Emit): void {
  const inner = new Writer();
  emit(inner);
  fieldBytes(w, field, inner.finish());
}
function fieldFloat(w: Writer, field: number, v: number): void {
  w.tag(field, 5);
  const b = new Uint8Array(4);
  new DataView(b.buffer).setFloat32(0, v, true);
  w.bytes(b);
}

function emitTensor(t: TensorSpec): Emit {
  return (w) => {
    for (const d of t.dims) fieldVarint(w, 1, d); // dims (repeated int64, unpacked is always accepted)
    fieldVarint(w, 2, t.type); // data_type
    fieldString(w, 8, t.name); // name
    fieldBytes(w, 9, t.raw); // raw_data
  };
}

function emitAttribute(name: string, a: AttrValue): Emit {
  return (w) => {
    fieldString(w, 1, name);
    switch (a.kind) {
      case 'float':
        fieldFloat(w, 2, a.value);
        fieldVarint(w, 20, 1);
        break;
      case 'int':
        fieldVarint(w, 3, a.value);
        fieldVarint(w, 20, 2);
        break;
      case 'string':
        fieldString(w, 4, a.value);
        fieldVarint(w, 20, 3);
        break;
      case 'tensor':
        fieldMessage(w, 5, emitTensor(a.value));
        fieldVarint(w, 20, 4);
        break;
      case 'floats':
        for (const f of a.value) fieldFloat(w, 7, f);
        fieldVarint(w, 20, 6);
        break;
      case 'ints':
        for (const i of a.value) fieldVarint(w, 8, i);
        fieldVarint(w, 20, 7);
        break;
    }
  };
}

function emitNode(n: NodeSpec): Emit {
  return (w) => {
    for (const i of n.inputs) fieldString(w, 1, i);
    for (const o of n.outputs) fieldString(w, 2, o);
    if (n.name) fieldString(w, 3, n.name);
    fieldString(w, 4, n.opType);
    for (const [k, v] of Object.entries(n.attributes ?? {})) fieldMessage(w, 5, emitAttribute(k, v));
    if (n.domain) fieldString(w, 7, n.domain);
  };
}

function emitValueInfo(v: ValueInfoSpec): Emit {
  return (w) => {
    fieldString(w, 1, v.name);
    fieldMessage(w, 2, (tw) =>
      fieldMessage(tw, 1, (tt) => {
        fieldVarint(tt, 1, v.type);
        fieldMessage(tt, 2, (sw) => {
          for (const d of v.dims)
            fieldMessage(sw, 1, (dw) => (typeof d === 'number' ? fieldVarint(dw, 1, d) : fieldString(dw, 2, d)));
        });
      }),
    );
  };
}

/** Serialize a model to ONNX protobuf bytes, ready for `InferenceSession.create(bytes)`. */
export function encodeModel(m: ModelSpec): Uint8Array {
  const w = new Writer();
  fieldVarint(w, 1, m.irVersion ?? 10);
  fieldString(w, 2, 'moe-quant');
  fieldMessage(w, 7, (g) => {
    for (const n of m.nodes) fieldMessage(g, 1, emitNode(n));
    fieldString(g, 2, m.graphName);
    for (const t of m.initializers) fieldMessage(g, 5, emitTensor(t));
    for (const i of m.inputs) fieldMessage(g, 11, emitValueInfo(i));
    for (const o of m.outputs) fieldMessage(g, 12, emitValueInfo(o));
  });
  for (const op of m.opsets)
    fieldMessage(w, 8, (o) => {
      if (op.domain) fieldString(o, 1, op.domain);
      fieldVarint(o, 2, op.version);
    });
  return w.finish();
}
