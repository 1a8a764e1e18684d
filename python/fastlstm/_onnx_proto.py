"""A minimal reader and writer of the ONNX protobuf messages that :mod:`fastlstm.io` needs.

Only the protobuf wire format (https://protobuf.dev/programming-guides/encoding/) and the
field numbers of onnx/onnx.proto3 for ModelProto, GraphProto, NodeProto, AttributeProto,
TensorProto and ValueInfoProto, so that importing and exporting ONNX files needs no ``onnx``
package. Every read is bounds-checked: a corrupt file raises :class:`ProtoError` (a
ValueError), never an IndexError or a crash.
"""

from __future__ import annotations

import struct

import numpy as np

__all__ = ["ProtoError", "parse_model", "Tensor", "Node", "Graph", "Model", "ModelWriter"]


class ProtoError(ValueError):
    """A malformed protobuf message."""


# ONNX TensorProto.DataType values this module decodes
FLOAT, INT32, INT64, DOUBLE = 1, 6, 7, 11
_NP = {FLOAT: np.dtype("<f4"), INT32: np.dtype("<i4"), INT64: np.dtype("<i8"),
       DOUBLE: np.dtype("<f8")}
DTYPE_NAMES = {1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32",
               7: "INT64", 8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE", 12: "UINT32",
               13: "UINT64", 16: "BFLOAT16"}

# AttributeProto.AttributeType
A_FLOAT, A_INT, A_STRING, A_TENSOR, A_GRAPH, A_FLOATS, A_INTS, A_STRINGS = 1, 2, 3, 4, 5, 6, 7, 8

_MAX_DEPTH = 64  # nested messages (graphs inside attributes); deeper is refused


# ------------------------------------------------------------------------------- wire format
def _varint(buf, pos, end):
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise ProtoError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtoError("varint longer than 10 bytes")


def _fields(buf, start, end):
    """Yields (field number, wire type, value) of one message in buf[start:end]; value is an int
    for varint/fixed wire types and a (begin, end) pair for length-delimited fields."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wt = key >> 3, key & 7
        if field == 0:
            raise ProtoError("field number 0")
        if wt == 0:
            value, pos = _varint(buf, pos, end)
        elif wt == 1:
            if pos + 8 > end:
                raise ProtoError("truncated fixed64 field")
            value = int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        elif wt == 5:
            if pos + 4 > end:
                raise ProtoError("truncated fixed32 field")
            value = int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        elif wt == 2:
            n, pos = _varint(buf, pos, end)
            if n > end - pos:
                raise ProtoError(f"length-delimited field {field} runs past its message "
                                 f"({n} bytes, {end - pos} left)")
            value = (pos, pos + n)
            pos += n
        else:
            raise ProtoError(f"unsupported wire type {wt} (field {field})")
        yield field, wt, value
    if pos != end:  # pragma: no cover - the loop only exits at end
        raise ProtoError("message overruns its bounds")


def _signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def _text(buf, span):
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtoError("string field is not valid UTF-8") from None


def _need_len(wt, what):
    if wt != 2:
        raise ProtoError(f"{what} has wire type {wt}, expected length-delimited")


def _repeated_ints(buf, wt, value, out):
    """Appends a repeated int64 field, packed (one LEN field) or not (one varint per element)."""
    if wt == 0:
        out.append(_signed(value))
    elif wt == 2:
        pos, end = value
        while pos < end:
            v, pos = _varint(buf, pos, end)
            out.append(_signed(v))
    else:
        raise ProtoError(f"repeated integer field with wire type {wt}")


def _repeated_fixed(buf, wt, value, out, size, fmt):
    if wt == (5 if size == 4 else 1):
        out.append(struct.unpack(fmt, value.to_bytes(size, "little"))[0])
    elif wt == 2:
        pos, end = value
        if (end - pos) % size:
            raise ProtoError("packed fixed-size field with a partial element")
        out.extend(struct.unpack(f"<{(end - pos) // size}{fmt[1]}", bytes(buf[pos:end])))
    else:
        raise ProtoError(f"repeated fixed-size field with wire type {wt}")


# ------------------------------------------------------------------------------- messages
class Tensor:
    """A TensorProto: name, dims, data_type and its values (decoded on demand)."""

    def __init__(self, name="", dims=(), data_type=0):
        self.name = name
        self.dims = list(dims)
        self.data_type = data_type
        self._raw = None
        self._typed = []  # float_data / double_data / int32_data / int64_data
        self.external = False

    def numpy(self):
        """The values as a NumPy array of shape ``dims``; ProtoError if the type is not one of
        FLOAT, DOUBLE, INT32, INT64 or the data does not fill the shape."""
        where = f"tensor {self.name!r}"
        if self.external:
            raise ProtoError(f"{where} keeps its data in an external file, which is not supported")
        if self.data_type not in _NP:
            raise ProtoError(f"{where} has data_type "
                             f"{DTYPE_NAMES.get(self.data_type, self.data_type)}; "
                             "supported: FLOAT, DOUBLE, INT32, INT64")
        if any(d < 0 for d in self.dims):
            raise ProtoError(f"{where} has a negative dimension {self.dims}")
        count = 1
        for d in self.dims:
            count *= d
        dt = _NP[self.data_type]
        if self._raw is not None:
            if len(self._raw) != count * dt.itemsize:
                raise ProtoError(f"{where}: raw_data holds {len(self._raw)} bytes, dims "
                                 f"{self.dims} of {DTYPE_NAMES[self.data_type]} need "
                                 f"{count * dt.itemsize}")
            arr = np.frombuffer(self._raw, dtype=dt).copy()
        else:
            if len(self._typed) != count:
                raise ProtoError(f"{where}: holds {len(self._typed)} values, dims {self.dims} "
                                 f"need {count}")
            arr = np.array(self._typed, dtype=dt)
        return arr.reshape(self.dims).astype(dt.newbyteorder("="))


class Node:
    def __init__(self):
        self.op_type = ""
        self.name = ""
        self.domain = ""
        self.inputs = []
        self.outputs = []
        self.attributes = {}

    def __repr__(self):
        return f"Node({self.op_type} {self.name!r})"


class Graph:
    def __init__(self):
        self.name = ""
        self.nodes = []
        self.initializers = {}
        self.inputs = []  # names
        self.outputs = []


class Model:
    def __init__(self):
        self.ir_version = 0
        self.opset = {}  # domain -> version
        self.graph = None
        self.producer_name = ""


def _parse_tensor(buf, start, end):
    t = Tensor()
    for field, wt, value in _fields(buf, start, end):
        if field == 1:
            _repeated_ints(buf, wt, value, t.dims)
        elif field == 2:
            t.data_type = value if wt == 0 else -1
        elif field == 8:
            _need_len(wt, "TensorProto.name")
            t.name = _text(buf, value)
        elif field == 9:
            _need_len(wt, "TensorProto.raw_data")
            t._raw = bytes(buf[value[0]:value[1]])
        elif field == 4:
            _repeated_fixed(buf, wt, value, t._typed, 4, "<f")
        elif field == 10:
            _repeated_fixed(buf, wt, value, t._typed, 8, "<d")
        elif field in (5, 7):
            _repeated_ints(buf, wt, value, t._typed)
        elif field == 14:
            t.external = value == 1
        elif field == 13:
            t.external = True
    return t


def _parse_attribute(buf, start, end, depth):
    name, atype = "", 0
    vals = {}
    ints, floats, strings = [], [], []
    for field, wt, value in _fields(buf, start, end):
        if field == 1:
            _need_len(wt, "AttributeProto.name")
            name = _text(buf, value)
        elif field == 20:
            atype = value
        elif field == 2:
            if wt != 5:
                raise ProtoError("AttributeProto.f is not fixed32")
            vals[A_FLOAT] = struct.unpack("<f", value.to_bytes(4, "little"))[0]
        elif field == 3:
            if wt != 0:
                raise ProtoError("AttributeProto.i is not a varint")
            vals[A_INT] = _signed(value)
        elif field == 4:
            _need_len(wt, "AttributeProto.s")
            vals[A_STRING] = bytes(buf[value[0]:value[1]])
        elif field == 5:
            _need_len(wt, "AttributeProto.t")
            vals[A_TENSOR] = _parse_tensor(buf, *value)
        elif field == 6:
            _need_len(wt, "AttributeProto.g")
            vals[A_GRAPH] = _parse_graph(buf, *value, depth + 1)
        elif field == 7:
            _repeated_fixed(buf, wt, value, floats, 4, "<f")
        elif field == 8:
            _repeated_ints(buf, wt, value, ints)
        elif field == 9:
            _need_len(wt, "AttributeProto.strings")
            strings.append(bytes(buf[value[0]:value[1]]))
    if floats:
        vals[A_FLOATS] = floats
    if ints:
        vals[A_INTS] = ints
    if strings:
        vals[A_STRINGS] = strings
    if atype == 0:  # IR < 3 files may leave the type out: infer it from the one field set
        atype = next(iter(vals)) if len(vals) == 1 else 0
    if atype in vals:
        value = vals[atype]
    elif atype in (A_FLOATS, A_INTS, A_STRINGS):
        value = []
    else:
        raise ProtoError(f"attribute {name!r} has type {atype} but no value of that type")
    return name, value


def _parse_node(buf, start, end, depth):
    n = Node()
    for field, wt, value in _fields(buf, start, end):
        if field in (1, 2, 3, 4, 7):
            _need_len(wt, "NodeProto string field")
            s = _text(buf, value)
            if field == 1:
                n.inputs.append(s)
            elif field == 2:
                n.outputs.append(s)
            elif field == 3:
                n.name = s
            elif field == 4:
                n.op_type = s
            else:
                n.domain = s
        elif field == 5:
            _need_len(wt, "NodeProto.attribute")
            k, v = _parse_attribute(buf, *value, depth)
            n.attributes[k] = v
    return n


def _value_info_name(buf, start, end):
    for field, wt, value in _fields(buf, start, end):
        if field == 1:
            _need_len(wt, "ValueInfoProto.name")
            return _text(buf, value)
    return ""


def _parse_graph(buf, start, end, depth=0):
    if depth > _MAX_DEPTH:
        raise ProtoError("graphs nested too deeply")
    g = Graph()
    for field, wt, value in _fields(buf, start, end):
        if field == 1:
            _need_len(wt, "GraphProto.node")
            g.nodes.append(_parse_node(buf, *value, depth))
        elif field == 2:
            _need_len(wt, "GraphProto.name")
            g.name = _text(buf, value)
        elif field == 5:
            _need_len(wt, "GraphProto.initializer")
            t = _parse_tensor(buf, *value)
            g.initializers[t.name] = t
        elif field == 11:
            _need_len(wt, "GraphProto.input")
            g.inputs.append(_value_info_name(buf, *value))
        elif field == 12:
            _need_len(wt, "GraphProto.output")
            g.outputs.append(_value_info_name(buf, *value))
    return g


def parse_model(data):
    """Parses a serialized ModelProto (bytes) into a :class:`Model`."""
    buf = memoryview(data)
    m = Model()
    for field, wt, value in _fields(buf, 0, len(buf)):
        if field == 1:
            m.ir_version = value
        elif field == 2:
            _need_len(wt, "ModelProto.producer_name")
            m.producer_name = _text(buf, value)
        elif field == 7:
            _need_len(wt, "ModelProto.graph")
            m.graph = _parse_graph(buf, *value)
        elif field == 8:
            _need_len(wt, "ModelProto.opset_import")
            domain, version = "", 0
            for f2, wt2, v2 in _fields(buf, *value):
                if f2 == 1 and wt2 == 2:
                    domain = _text(buf, v2)
                elif f2 == 2 and wt2 == 0:
                    version = _signed(v2)
            m.opset[domain] = version
    if m.graph is None:
        raise ProtoError("no graph in the model (not an ONNX ModelProto?)")
    return m


# ------------------------------------------------------------------------------- writer
def _enc_varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field, wt):
    return _enc_varint((field << 3) | wt)


def _len_field(field, payload):
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return _key(field, 2) + _enc_varint(len(payload)) + payload


def _int_field(field, v):
    return _key(field, 0) + _enc_varint(v)


def tensor_proto(name, array):
    """Serialized TensorProto of a float32/float64/int32/int64 array (raw_data, little-endian)."""
    arr = np.ascontiguousarray(array)
    code = {np.dtype("float32"): FLOAT, np.dtype("float64"): DOUBLE,
            np.dtype("int32"): INT32, np.dtype("int64"): INT64}[arr.dtype]
    out = b"".join(_int_field(1, d) for d in arr.shape)
    out += _int_field(2, code) + _len_field(8, name)
    out += _len_field(9, arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    return out


def attribute_proto(name, value):
    out = _len_field(1, name)
    if isinstance(value, bool) or isinstance(value, int):
        return out + _int_field(20, A_INT) + _int_field(3, int(value))
    if isinstance(value, float):
        return out + _int_field(20, A_FLOAT) + _key(2, 5) + struct.pack("<f", value)
    if isinstance(value, (str, bytes)):
        s = value.encode("utf-8") if isinstance(value, str) else value
        return out + _int_field(20, A_STRING) + _len_field(4, s)
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        packed = b"".join(_enc_varint(v) for v in value)
        return out + _int_field(20, A_INTS) + _len_field(8, packed)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return out + _int_field(20, A_STRINGS) + b"".join(_len_field(9, v) for v in value)
    raise TypeError(f"attribute {name!r}: unsupported value {value!r}")


def _value_info(name, elem_type, dims):
    """ValueInfoProto with a tensor type; dims are ints or strings (symbolic)."""
    shape = b""
    for d in dims:
        dim = _int_field(1, d) if isinstance(d, int) else _len_field(2, d)
        shape += _len_field(1, dim)
    tensor_type = _int_field(1, elem_type) + _len_field(2, shape)
    return _len_field(1, name) + _len_field(2, _len_field(1, tensor_type))


class ModelWriter:
    """Collects nodes, initializers, inputs and outputs and serializes one ModelProto."""

    def __init__(self, graph_name, opset=14, ir_version=7, producer="fastlstm", version=""):
        self.graph_name = graph_name
        self.opset = opset
        self.ir_version = ir_version
        self.producer = producer
        self.version = version
        self._nodes = []
        self._inits = []
        self._inputs = []
        self._outputs = []

    def initializer(self, name, array):
        self._inits.append(tensor_proto(name, array))
        return name

    def node(self, op_type, inputs, outputs, name, **attrs):
        out = b"".join(_len_field(1, i) for i in inputs)
        out += b"".join(_len_field(2, o) for o in outputs)
        out += _len_field(3, name) + _len_field(4, op_type)
        for k, v in attrs.items():
            out += _len_field(5, attribute_proto(k, v))
        self._nodes.append(out)

    def input(self, name, elem_type, dims):
        self._inputs.append(_value_info(name, elem_type, dims))

    def output(self, name, elem_type, dims):
        self._outputs.append(_value_info(name, elem_type, dims))

    def to_bytes(self):
        graph = b"".join(_len_field(1, n) for n in self._nodes)
        graph += _len_field(2, self.graph_name)
        graph += b"".join(_len_field(5, t) for t in self._inits)
        graph += b"".join(_len_field(11, v) for v in self._inputs)
        graph += b"".join(_len_field(12, v) for v in self._outputs)
        opset = _len_field(1, "") + _int_field(2, self.opset)
        model = _int_field(1, self.ir_version) + _len_field(2, self.producer)
        if self.version:
            model += _len_field(3, self.version)
        model += _len_field(7, graph) + _len_field(8, opset)
        return model
