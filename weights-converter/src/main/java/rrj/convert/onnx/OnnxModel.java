package rrj.convert.onnx;

import rrj.convert.FileText;
import rrj.engine.DType;
import rrj.engine.Tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A read-only view of an ONNX model file: the subset of {@code onnx.proto} (ModelProto, GraphProto,
 * NodeProto, AttributeProto, TensorProto, ValueInfoProto, OperatorSetIdProto) that a weight
 * converter needs, decoded by a small hand-written protobuf wire-format reader (varints,
 * length-delimited fields, fixed32/fixed64) over one memory mapping of the file.
 *
 * <p>Field numbers mirror onnx/onnx.proto (IR version 3 and later). Tensor data stored as
 * {@code raw_data} (or as packed {@code float_data}/{@code double_data}, whose wire layout is the
 * same little-endian array) is handed out as a zero-copy slice of the mapping; the varint-encoded
 * {@code int32_data}/{@code int64_data}/{@code uint64_data} are decoded into a copy.
 *
 * <p>Deliberately not done: writing, external data (refused with the initializer's name), chunked
 * ({@code segment}) tensors and sparse initializers (refused), subgraph attributes of
 * If/Loop/Scan (kept only as "present"), functions, training info, type information beyond
 * tensor element type and shape, and string tensors. Unknown fields are skipped as protobuf
 * requires; a wire type that contradicts a known field, a length running past its message, or a
 * file without a graph is reported as "not an ONNX model".
 */
public final class OnnxModel {

    // TensorProto.DataType
    public static final int FLOAT = 1, UINT8 = 2, INT8 = 3, UINT16 = 4, INT16 = 5, INT32 = 6, INT64 = 7,
            STRING = 8, BOOL = 9, FLOAT16 = 10, DOUBLE = 11, UINT32 = 12, UINT64 = 13, BFLOAT16 = 16;

    // AttributeProto.AttributeType
    public static final int ATTR_FLOAT = 1, ATTR_INT = 2, ATTR_STRING = 3, ATTR_TENSOR = 4, ATTR_GRAPH = 5,
            ATTR_FLOATS = 6, ATTR_INTS = 7, ATTR_STRINGS = 8;

    /** The file this model was read from. */
    public final Path path;
    public final long irVersion;
    public final String producerName;
    public final String producerVersion;
    /** Operator set versions by domain; the default ONNX domain is "" (also written "ai.onnx"). */
    public final Map<String, Long> opsets;
    public final Graph graph;

    private OnnxModel(Path path, long irVersion, String producerName, String producerVersion,
                      Map<String, Long> opsets, Graph graph) {
        this.path = path;
        this.irVersion = irVersion;
        this.producerName = producerName;
        this.producerVersion = producerVersion;
        this.opsets = Collections.unmodifiableMap(opsets);
        this.graph = graph;
    }

    /** The version of the default ("ai.onnx") operator set, or -1 when the model does not import it. */
    public long opset() {
        Long v = opsets.get("");
        if (v == null) v = opsets.get("ai.onnx");
        return v == null ? -1 : v;
    }

    /** Opens {@code path}; tensor slices keep the mapping alive (it is released by the GC). */
    public static OnnxModel open(Path path) throws IOException {
        return open(path, Arena.ofAuto());
    }

    /** Opens {@code path} with the mapping owned by {@code arena}: tensors are valid while it is open. */
    public static OnnxModel open(Path path, Arena arena) throws IOException {
        if (!Files.exists(path)) throw new NoSuchFileException(path.toString(), null, "file not found");
        MemorySegment file;
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size == 0) throw new OnnxFormatException(path + ": not an ONNX model: empty file");
            file = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
        }
        return parse(path, file);
    }

    /** Decodes a ModelProto held in {@code bytes}; {@code path} is used in messages only. */
    public static OnnxModel parse(Path path, MemorySegment bytes) {
        try {
            return new Decoder(path).model(new Pb(bytes, 0, bytes.byteSize()));
        } catch (WireException e) {
            throw new OnnxFormatException(path + ": not an ONNX model: " + e.getMessage());
        }
    }

    // ------------------------------------------------------------------------------------------
    // The decoded structure

    /** The main graph: nodes in file (topological) order, initializers by name, inputs and outputs. */
    public record Graph(String name, List<Node> nodes, Map<String, TensorData> initializers,
                        List<ValueInfo> inputs, List<ValueInfo> outputs) {

        /**
         * The initializer or Constant-node value named {@code valueName}, or null when it is computed.
         * Builds the producer index on each call; callers with many look-ups keep {@link #producers()}.
         */
        public TensorData constant(String valueName) {
            TensorData t = initializers.get(valueName);
            if (t != null) return t;
            Node n = producers().get(valueName);
            return n != null && n.opType.equals("Constant") && n.domain.isEmpty() ? n.constantValue() : null;
        }

        /** Which node writes each value (graph inputs and initializers have none). */
        public Map<String, Node> producers() {
            Map<String, Node> m = new LinkedHashMap<>();
            for (Node n : nodes) for (String o : n.outputs) if (!o.isEmpty()) m.put(o, n);
            return m;
        }

        /** Which nodes read each value, in graph order. */
        public Map<String, List<Node>> consumers() {
            Map<String, List<Node>> m = new LinkedHashMap<>();
            for (Node n : nodes) for (String i : n.inputs) if (!i.isEmpty()) m.computeIfAbsent(i, k -> new ArrayList<>()).add(n);
            return m;
        }
    }

    /** A NodeProto. Absent optional inputs appear as "". */
    public record Node(String name, String opType, String domain, List<String> inputs, List<String> outputs,
                       Map<String, Attribute> attributes) {
        public Attribute attr(String name) { return attributes.get(name); }

        public String input(int i) { return i < inputs.size() ? inputs.get(i) : ""; }

        public String output(int i) { return i < outputs.size() ? outputs.get(i) : ""; }

        /** "node 'name' (OpType)" for messages. */
        public String describe() {
            return "node " + FileText.quote(name.isEmpty() ? "<unnamed>" : name) + " ("
                    + (domain.isEmpty() ? "" : domain + ".") + opType + ")";
        }

        /** The value of a Constant node: {@code value} or one of the {@code value_*} attributes; null if none. */
        public TensorData constantValue() {
            for (Attribute a : attributes.values()) {
                switch (a.name) {
                    case "value": return a.t;
                    case "value_float": return TensorData.ofFloats(output(0), new long[0], new float[]{a.f});
                    case "value_floats": return TensorData.ofFloats(output(0), new long[]{a.floats.length}, a.floats);
                    case "value_int": return TensorData.ofLongs(output(0), new long[0], new long[]{a.i});
                    case "value_ints": return TensorData.ofLongs(output(0), new long[]{a.ints.length}, a.ints);
                    default: break;
                }
            }
            return null;
        }
    }

    /** An AttributeProto: {@code type} says which of the value fields is meaningful. */
    public record Attribute(String name, int type, float f, long i, byte[] s, TensorData t,
                            float[] floats, long[] ints, List<byte[]> strings) {
        public String string() { return s == null ? null : new String(s, StandardCharsets.UTF_8); }
    }

    /** A graph input or output: element type and shape; a dimension is -1 when symbolic or unknown. */
    public record ValueInfo(String name, int elemType, long[] dims, String[] dimParams) {
        @Override
        public String toString() {
            StringBuilder b = new StringBuilder(name).append(": ").append(dataTypeName(elemType)).append('[');
            for (int k = 0; k < dims.length; k++) {
                if (k > 0) b.append(", ");
                b.append(dims[k] >= 0 ? Long.toString(dims[k]) : dimParams[k] != null ? dimParams[k] : "?");
            }
            return b.append(']').toString();
        }
    }

    /**
     * A TensorProto: name, data type and dims, with its elements as little-endian bytes (a slice of
     * the file when the file stores them that way) or as decoded varints.
     */
    public static final class TensorData {
        public final String name;
        public final int dataType;
        private final long[] dims;
        private final MemorySegment bytes;   // little-endian elements (raw_data, packed float/double data)
        private final long[] varints;        // int32_data / int64_data / uint64_data, when bytes == null

        TensorData(String name, int dataType, long[] dims, MemorySegment bytes, long[] varints) {
            this.name = name;
            this.dataType = dataType;
            this.dims = dims;
            this.bytes = bytes;
            this.varints = varints;
        }

        static TensorData ofFloats(String name, long[] dims, float[] v) {
            MemorySegment s = Arena.ofAuto().allocate(Math.max(4, 4L * v.length), 64).asSlice(0, 4L * v.length);
            MemorySegment.copy(v, 0, s, Tensor.F32, 0, v.length);
            return new TensorData(name, FLOAT, dims, s, null);
        }

        static TensorData ofLongs(String name, long[] dims, long[] v) {
            return new TensorData(name, INT64, dims, null, v.clone());
        }

        public long[] dims() { return dims.clone(); }

        public long numel() {
            long n = 1;
            for (long d : dims) n *= d;
            return n;
        }

        /** "initializer 'name' [dims] TYPE" for messages. */
        public String describe() {
            return "tensor " + FileText.quote(name) + " " + Arrays.toString(dims) + " " + dataTypeName(dataType);
        }

        /**
         * As an engine tensor: FLOAT, FLOAT16, BFLOAT16, INT32 and INT64 are supported; raw data is a
         * zero-copy slice. Any other data type is refused naming the tensor.
         */
        public Tensor tensor() {
            DType dt = switch (dataType) {
                case FLOAT -> DType.F32;
                case FLOAT16 -> DType.F16;
                case BFLOAT16 -> DType.BF16;
                case INT32 -> DType.I32;
                case INT64 -> DType.I64;
                default -> throw new OnnxFormatException(describe()
                        + ": data type " + dataTypeName(dataType) + " is not supported (expected FLOAT, FLOAT16, BFLOAT16, INT32 or INT64)");
            };
            long n = numel();
            if (bytes != null) {
                checkByteSize(dt.bytes);
                return new Tensor(dt, dims, bytes);
            }
            checkVarintCount();
            Tensor t = new Tensor(dt, dims, Arena.ofAuto().allocate(Math.max(1, n * dt.bytes), 64).asSlice(0, n * dt.bytes));
            for (int k = 0; k < n; k++) {
                long v = varints[k];
                switch (dt) {
                    case F16, BF16 -> t.data.setAtIndex(Tensor.I16, k, (short) v);
                    case I32 -> t.data.setAtIndex(Tensor.I32, k, (int) v);
                    case I64 -> t.data.setAtIndex(Tensor.I64, k, v);
                    default -> throw new IllegalStateException();
                }
            }
            return t;
        }

        /** All elements as doubles, for any numeric (or BOOL) data type; meant for small constants. */
        public double[] toDoubles() {
            long n = numel();
            if (n > Integer.MAX_VALUE) throw new OnnxFormatException(describe() + ": too large to read as a constant");
            double[] out = new double[(int) n];
            int w = elementBytes(dataType);
            if (w == 0) throw new OnnxFormatException(describe() + ": data type " + dataTypeName(dataType) + " is not numeric");
            if (bytes != null) {
                checkByteSize(w);
                for (int k = 0; k < n; k++) {
                    long off = (long) k * w;
                    out[k] = switch (dataType) {
                        case FLOAT -> bytes.get(Tensor.F32, off);
                        case DOUBLE -> bytes.get(F64, off);
                        case FLOAT16 -> Float.float16ToFloat(bytes.get(Tensor.I16, off));
                        case BFLOAT16 -> Float.intBitsToFloat((bytes.get(Tensor.I16, off) & 0xffff) << 16);
                        case INT8 -> bytes.get(ValueLayout.JAVA_BYTE, off);
                        case UINT8, BOOL -> bytes.get(ValueLayout.JAVA_BYTE, off) & 0xff;
                        case INT16 -> bytes.get(Tensor.I16, off);
                        case UINT16 -> bytes.get(Tensor.I16, off) & 0xffff;
                        case INT32 -> bytes.get(Tensor.I32, off);
                        case UINT32 -> bytes.get(Tensor.I32, off) & 0xffffffffL;
                        case INT64 -> bytes.get(Tensor.I64, off);
                        case UINT64 -> unsigned(bytes.get(Tensor.I64, off));
                        default -> throw new IllegalStateException();
                    };
                }
                return out;
            }
            checkVarintCount();
            for (int k = 0; k < n; k++) {
                long v = varints[k];
                out[k] = switch (dataType) {
                    case FLOAT16 -> Float.float16ToFloat((short) v);
                    case BFLOAT16 -> Float.intBitsToFloat(((int) v & 0xffff) << 16);
                    case UINT64 -> unsigned(v);
                    case UINT32 -> v & 0xffffffffL;
                    case INT32, INT16, INT8 -> (int) v;
                    default -> v;
                };
            }
            return out;
        }

        /** All elements as longs (integer data types only); meant for shape constants. */
        public long[] toLongs() {
            switch (dataType) {
                case INT64, INT32, INT16, INT8, UINT8, UINT16, UINT32, BOOL -> { }
                default -> throw new OnnxFormatException(describe() + ": expected an integer tensor");
            }
            if (dataType == INT64 && bytes != null) {   // exact: a double cannot hold every int64
                checkByteSize(8);
                long[] out = new long[Math.toIntExact(numel())];
                for (int k = 0; k < out.length; k++) out[k] = bytes.get(Tensor.I64, 8L * k);
                return out;
            }
            if (dataType == INT64) {
                checkVarintCount();
                return varints.clone();
            }
            double[] d = toDoubles();   // every other integer type fits a double exactly
            long[] out = new long[d.length];
            for (int k = 0; k < out.length; k++) out[k] = (long) d[k];
            return out;
        }

        /** The single element of a one-element tensor, as a double. */
        public double scalar() {
            if (numel() != 1) throw new OnnxFormatException(describe() + ": expected a single value");
            return toDoubles()[0];
        }

        private void checkByteSize(int elementBytes) {
            long want = numel() * elementBytes;
            if (bytes.byteSize() != want)
                throw new OnnxFormatException(describe() + ": holds " + bytes.byteSize() + " data bytes, shape needs " + want);
        }

        private void checkVarintCount() {
            long have = varints == null ? 0 : varints.length;
            if (have != numel())
                throw new OnnxFormatException(describe() + ": holds " + have + " elements, shape needs " + numel()
                        + (varints == null ? " (no raw_data or typed data field)" : ""));
        }

        private static double unsigned(long v) {
            return v >= 0 ? v : (double) (v >>> 1) * 2.0 + (v & 1);
        }

        @Override
        public String toString() { return describe(); }
    }

    static final ValueLayout.OfDouble F64 = ValueLayout.JAVA_DOUBLE_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /** Bytes per element of a TensorProto data type; 0 for STRING and unknown types. */
    static int elementBytes(int dataType) {
        return switch (dataType) {
            case FLOAT, INT32, UINT32 -> 4;
            case DOUBLE, INT64, UINT64 -> 8;
            case FLOAT16, BFLOAT16, INT16, UINT16 -> 2;
            case INT8, UINT8, BOOL -> 1;
            default -> 0;
        };
    }

    /** The onnx.proto spelling of a data type, with its number. */
    public static String dataTypeName(int t) {
        String n = switch (t) {
            case 0 -> "UNDEFINED";
            case FLOAT -> "FLOAT";
            case UINT8 -> "UINT8";
            case INT8 -> "INT8";
            case UINT16 -> "UINT16";
            case INT16 -> "INT16";
            case INT32 -> "INT32";
            case INT64 -> "INT64";
            case STRING -> "STRING";
            case BOOL -> "BOOL";
            case FLOAT16 -> "FLOAT16";
            case DOUBLE -> "DOUBLE";
            case UINT32 -> "UINT32";
            case UINT64 -> "UINT64";
            case 14 -> "COMPLEX64";
            case 15 -> "COMPLEX128";
            case BFLOAT16 -> "BFLOAT16";
            case 17, 18, 19, 20 -> "FLOAT8";
            case 21 -> "UINT4";
            case 22 -> "INT4";
            default -> "unknown";
        };
        return n + "(" + t + ")";
    }

    // ------------------------------------------------------------------------------------------
    // Protobuf wire format

    /** A structural error in the protobuf encoding; becomes "not an ONNX model: ...". */
    private static final class WireException extends RuntimeException {
        WireException(String m) { super(m, null, false, false); }
    }

    private static final int VARINT = 0, I64 = 1, LEN = 2, I32 = 5;

    /** A cursor over one message: [pos, end) of the mapped file. */
    private static final class Pb {
        final MemorySegment seg;
        long pos;
        final long end;
        int field, wire;

        Pb(MemorySegment seg, long pos, long end) {
            this.seg = seg;
            this.pos = pos;
            this.end = end;
        }

        boolean next() {
            if (pos >= end) return false;
            long at = pos;
            long tag = varint();
            if (tag >>> 32 != 0 || (tag >>> 3) == 0)
                throw new WireException("bad field tag " + tag + " at byte " + at);
            field = (int) (tag >>> 3);
            wire = (int) (tag & 7);
            if (wire != VARINT && wire != I64 && wire != LEN && wire != I32)
                throw new WireException("unsupported wire type " + wire + " (field " + field + ") at byte " + at);
            return true;
        }

        long varint() {
            long r = 0;
            for (int shift = 0; shift < 70; shift += 7) {
                if (pos >= end) throw new WireException("truncated varint at byte " + pos);
                byte b = seg.get(ValueLayout.JAVA_BYTE, pos++);
                r |= (long) (b & 0x7f) << shift;
                if (b >= 0) return r;
            }
            throw new WireException("varint longer than 10 bytes at byte " + (pos - 10));
        }

        long fixed64() {
            if (end - pos < 8) throw new WireException("truncated fixed64 at byte " + pos);
            long v = seg.get(Tensor.I64, pos);
            pos += 8;
            return v;
        }

        int fixed32() {
            if (end - pos < 4) throw new WireException("truncated fixed32 at byte " + pos);
            int v = seg.get(Tensor.I32, pos);
            pos += 4;
            return v;
        }

        /** The payload of a length-delimited field as a slice; the cursor moves past it. */
        MemorySegment bytes() {
            long at = pos;
            long len = varint();
            if (len < 0 || len > end - pos)
                throw new WireException("length " + len + " at byte " + at + " runs past the end of its message (byte " + end + ")");
            MemorySegment s = seg.asSlice(pos, len);
            pos += len;
            return s;
        }

        Pb message() {
            long at = pos;
            long len = varint();
            if (len < 0 || len > end - pos)
                throw new WireException("length " + len + " at byte " + at + " runs past the end of its message (byte " + end + ")");
            Pb p = new Pb(seg, pos, pos + len);
            pos += len;
            return p;
        }

        String string() {
            return new String(bytes().toArray(ValueLayout.JAVA_BYTE), StandardCharsets.UTF_8);
        }

        void skip() {
            switch (wire) {
                case VARINT -> varint();
                case I64 -> fixed64();
                case I32 -> fixed32();
                case LEN -> bytes();
                default -> throw new IllegalStateException();
            }
        }

        void expect(int wireType, String what) {
            if (wire != wireType)
                throw new WireException(what + " (field " + field + ") has wire type " + wire + ", expected " + wireType + " near byte " + pos);
        }

        /** Appends a repeated varint field, packed or not. */
        void varints(LongList out, String what) {
            if (wire == LEN) {
                Pb p = message();
                while (p.pos < p.end) out.add(p.varint());
            } else {
                expect(VARINT, what);
                out.add(varint());
            }
        }
    }

    private static final class LongList {
        long[] a = new long[8];
        int n;

        void add(long v) {
            if (n == a.length) a = Arrays.copyOf(a, n * 2);
            a[n++] = v;
        }

        long[] toArray() { return Arrays.copyOf(a, n); }
    }

    /** Decodes the messages; keeps the path for semantic (not wire) errors. */
    private static final class Decoder {
        final Path path;

        Decoder(Path path) { this.path = path; }

        OnnxModel model(Pb p) {
            long ir = -1;
            String producer = "", producerVersion = "";
            Map<String, Long> opsets = new LinkedHashMap<>();
            Graph graph = null;
            while (p.next()) {
                switch (p.field) {
                    case 1 -> { p.expect(VARINT, "ModelProto.ir_version"); ir = p.varint(); }
                    case 2 -> { p.expect(LEN, "ModelProto.producer_name"); producer = p.string(); }
                    case 3 -> { p.expect(LEN, "ModelProto.producer_version"); producerVersion = p.string(); }
                    case 7 -> { p.expect(LEN, "ModelProto.graph"); graph = graph(p.message()); }
                    case 8 -> {
                        p.expect(LEN, "ModelProto.opset_import");
                        Pb o = p.message();
                        String domain = "";
                        long version = -1;
                        while (o.next()) {
                            switch (o.field) {
                                case 1 -> { o.expect(LEN, "OperatorSetIdProto.domain"); domain = o.string(); }
                                case 2 -> { o.expect(VARINT, "OperatorSetIdProto.version"); version = o.varint(); }
                                default -> o.skip();
                            }
                        }
                        opsets.put(domain, version);
                    }
                    case 4, 6 -> { p.expect(LEN, "ModelProto string field"); p.skip(); }
                    case 5 -> { p.expect(VARINT, "ModelProto.model_version"); p.skip(); }
                    default -> p.skip();
                }
            }
            if (ir < 0) throw new WireException("no ir_version field");
            if (graph == null) throw new WireException("no graph field");
            if (opsets.isEmpty()) throw new WireException("no opset_import field");
            return new OnnxModel(path, ir, producer, producerVersion, opsets, graph);
        }

        Graph graph(Pb p) {
            String name = "";
            List<Node> nodes = new ArrayList<>();
            Map<String, TensorData> inits = new LinkedHashMap<>();
            List<ValueInfo> inputs = new ArrayList<>(), outputs = new ArrayList<>();
            while (p.next()) {
                switch (p.field) {
                    case 1 -> { p.expect(LEN, "GraphProto.node"); nodes.add(node(p.message())); }
                    case 2 -> { p.expect(LEN, "GraphProto.name"); name = p.string(); }
                    case 5 -> {
                        p.expect(LEN, "GraphProto.initializer");
                        TensorData t = tensor(p.message(), "initializer");
                        inits.put(t.name, t);
                    }
                    case 11 -> { p.expect(LEN, "GraphProto.input"); inputs.add(valueInfo(p.message())); }
                    case 12 -> { p.expect(LEN, "GraphProto.output"); outputs.add(valueInfo(p.message())); }
                    case 15 -> throw new OnnxFormatException(path + ": graph " + FileText.quote(name)
                            + " has sparse initializers, which are not supported");
                    default -> p.skip();
                }
            }
            return new Graph(name, Collections.unmodifiableList(nodes), Collections.unmodifiableMap(inits),
                    List.copyOf(inputs), List.copyOf(outputs));
        }

        Node node(Pb p) {
            List<String> in = new ArrayList<>(), out = new ArrayList<>();
            String name = "", op = "", domain = "";
            Map<String, Attribute> attrs = new LinkedHashMap<>();
            while (p.next()) {
                switch (p.field) {
                    case 1 -> { p.expect(LEN, "NodeProto.input"); in.add(p.string()); }
                    case 2 -> { p.expect(LEN, "NodeProto.output"); out.add(p.string()); }
                    case 3 -> { p.expect(LEN, "NodeProto.name"); name = p.string(); }
                    case 4 -> { p.expect(LEN, "NodeProto.op_type"); op = p.string(); }
                    case 5 -> { p.expect(LEN, "NodeProto.attribute"); Attribute a = attribute(p.message()); attrs.put(a.name, a); }
                    case 7 -> { p.expect(LEN, "NodeProto.domain"); domain = p.string(); }
                    default -> p.skip();
                }
            }
            if (op.isEmpty()) throw new WireException("node " + FileText.quote(name) + " has no op_type");
            if (domain.equals("ai.onnx")) domain = "";
            return new Node(name, op, domain, List.copyOf(in), List.copyOf(out), Collections.unmodifiableMap(attrs));
        }

        Attribute attribute(Pb p) {
            String name = "";
            int type = 0;
            float f = 0;
            long i = 0;
            byte[] s = null;
            TensorData t = null;
            List<Float> floats = new ArrayList<>();
            LongList ints = new LongList();
            List<byte[]> strings = new ArrayList<>();
            boolean hasGraph = false;
            while (p.next()) {
                switch (p.field) {
                    case 1 -> { p.expect(LEN, "AttributeProto.name"); name = p.string(); }
                    case 20 -> { p.expect(VARINT, "AttributeProto.type"); type = (int) p.varint(); }
                    case 2 -> { p.expect(I32, "AttributeProto.f"); f = Float.intBitsToFloat(p.fixed32()); }
                    case 3 -> { p.expect(VARINT, "AttributeProto.i"); i = p.varint(); }
                    case 4 -> { p.expect(LEN, "AttributeProto.s"); s = p.bytes().toArray(ValueLayout.JAVA_BYTE); }
                    case 5 -> { p.expect(LEN, "AttributeProto.t"); t = tensor(p.message(), "attribute tensor"); }
                    case 6 -> { p.expect(LEN, "AttributeProto.g"); p.skip(); hasGraph = true; }
                    case 7 -> {
                        if (p.wire == LEN) {
                            Pb q = p.message();
                            while (q.pos < q.end) floats.add(Float.intBitsToFloat(q.fixed32()));
                        } else {
                            p.expect(I32, "AttributeProto.floats");
                            floats.add(Float.intBitsToFloat(p.fixed32()));
                        }
                    }
                    case 8 -> p.varints(ints, "AttributeProto.ints");
                    case 9 -> { p.expect(LEN, "AttributeProto.strings"); strings.add(p.bytes().toArray(ValueLayout.JAVA_BYTE)); }
                    default -> p.skip();
                }
            }
            if (type == 0) {   // IR < 0.0.2 did not write the type: infer it from the field present
                if (t != null) type = ATTR_TENSOR;
                else if (hasGraph) type = ATTR_GRAPH;
                else if (s != null) type = ATTR_STRING;
                else if (!floats.isEmpty()) type = ATTR_FLOATS;
                else if (ints.n > 0) type = ATTR_INTS;
                else if (!strings.isEmpty()) type = ATTR_STRINGS;
            }
            float[] fa = new float[floats.size()];
            for (int k = 0; k < fa.length; k++) fa[k] = floats.get(k);
            return new Attribute(name, type, f, i, s, t, fa, ints.toArray(), List.copyOf(strings));
        }

        TensorData tensor(Pb p, String role) {
            String name = "";
            int dataType = 0;
            LongList dims = new LongList();
            MemorySegment raw = null;
            MemorySegment packed = null;          // packed float_data / double_data
            LongList floatsUnpacked = null;       // float bits, when float_data is not packed
            LongList doublesUnpacked = null;
            LongList varints = null;
            boolean external = false, segment = false;
            String location = null;
            while (p.next()) {
                switch (p.field) {
                    case 1 -> p.varints(dims, "TensorProto.dims");
                    case 2 -> { p.expect(VARINT, "TensorProto.data_type"); dataType = (int) p.varint(); }
                    case 3 -> { p.skip(); segment = true; }
                    case 4 -> {
                        if (p.wire == LEN) packed = concat(packed, p.bytes());
                        else {
                            p.expect(I32, "TensorProto.float_data");
                            if (floatsUnpacked == null) floatsUnpacked = new LongList();
                            floatsUnpacked.add(p.fixed32());
                        }
                    }
                    case 10 -> {
                        if (p.wire == LEN) packed = concat(packed, p.bytes());
                        else {
                            p.expect(I64, "TensorProto.double_data");
                            if (doublesUnpacked == null) doublesUnpacked = new LongList();
                            doublesUnpacked.add(p.fixed64());
                        }
                    }
                    case 5, 7, 11 -> {
                        if (varints == null) varints = new LongList();
                        p.varints(varints, "TensorProto typed data");
                    }
                    case 8 -> { p.expect(LEN, "TensorProto.name"); name = p.string(); }
                    case 9 -> { p.expect(LEN, "TensorProto.raw_data"); raw = p.bytes(); }
                    case 13 -> {
                        p.expect(LEN, "TensorProto.external_data");
                        external = true;
                        Pb e = p.message();
                        String key = null, value = null;
                        while (e.next()) {
                            if (e.field == 1 && e.wire == LEN) key = e.string();
                            else if (e.field == 2 && e.wire == LEN) value = e.string();
                            else e.skip();
                        }
                        if ("location".equals(key)) location = value;
                    }
                    case 14 -> { p.expect(VARINT, "TensorProto.data_location"); if (p.varint() == 1) external = true; }
                    default -> p.skip();
                }
            }
            String what = role + " " + FileText.quote(name);
            if (external)
                throw new OnnxFormatException(path + ": " + what + " keeps its data in an external file"
                        + (location != null ? " (" + FileText.quote(location) + ")" : "")
                        + ", which is not supported; save the model with all tensors inside the .onnx file");
            if (segment)
                throw new OnnxFormatException(path + ": " + what + " is a segmented (chunked) tensor, which is not supported");
            for (int k = 0; k < dims.n; k++)
                if (dims.a[k] < 0) throw new OnnxFormatException(path + ": " + what + " has a negative dimension " + dims.a[k]);
            MemorySegment bytes = raw;
            if (bytes == null && packed != null) bytes = packed;
            if (bytes == null && floatsUnpacked != null) {
                bytes = Arena.ofAuto().allocate(4L * floatsUnpacked.n, 8);
                for (int k = 0; k < floatsUnpacked.n; k++) bytes.setAtIndex(Tensor.I32, k, (int) floatsUnpacked.a[k]);
            }
            if (bytes == null && doublesUnpacked != null) {
                bytes = Arena.ofAuto().allocate(8L * doublesUnpacked.n, 8);
                for (int k = 0; k < doublesUnpacked.n; k++) bytes.setAtIndex(Tensor.I64, k, doublesUnpacked.a[k]);
            }
            long[] vs = bytes == null && varints != null ? varints.toArray() : bytes == null ? new long[0] : null;
            return new TensorData(name, dataType, dims.toArray(), bytes, vs);
        }

        static MemorySegment concat(MemorySegment a, MemorySegment b) {
            if (a == null) return b;
            MemorySegment c = Arena.ofAuto().allocate(a.byteSize() + b.byteSize(), 8);
            MemorySegment.copy(a, 0, c, 0, a.byteSize());
            MemorySegment.copy(b, 0, c, a.byteSize(), b.byteSize());
            return c;
        }

        ValueInfo valueInfo(Pb p) {
            String name = "";
            int elem = 0;
            List<Long> dims = new ArrayList<>();
            List<String> params = new ArrayList<>();
            while (p.next()) {
                switch (p.field) {
                    case 1 -> { p.expect(LEN, "ValueInfoProto.name"); name = p.string(); }
                    case 2 -> {
                        p.expect(LEN, "ValueInfoProto.type");
                        Pb type = p.message();
                        while (type.next()) {
                            if (type.field != 1 || type.wire != LEN) { type.skip(); continue; }   // tensor_type only
                            Pb tt = type.message();
                            while (tt.next()) {
                                if (tt.field == 1 && tt.wire == VARINT) elem = (int) tt.varint();
                                else if (tt.field == 2 && tt.wire == LEN) {
                                    Pb shape = tt.message();
                                    while (shape.next()) {
                                        if (shape.field != 1 || shape.wire != LEN) { shape.skip(); continue; }
                                        Pb d = shape.message();
                                        long v = -1;
                                        String param = null;
                                        while (d.next()) {
                                            if (d.field == 1 && d.wire == VARINT) v = d.varint();
                                            else if (d.field == 2 && d.wire == LEN) param = d.string();
                                            else d.skip();
                                        }
                                        dims.add(v);
                                        params.add(param);
                                    }
                                } else tt.skip();
                            }
                        }
                    }
                    default -> p.skip();
                }
            }
            long[] da = new long[dims.size()];
            for (int k = 0; k < da.length; k++) da[k] = dims.get(k);
            return new ValueInfo(name, elem, da, params.toArray(new String[0]));
        }
    }
}
