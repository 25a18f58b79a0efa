package rrj.bench;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Map;

/**
 * ONNX Runtime's GEMM (MLAS) on one projection shape, for a kernel-level baseline: a one-node
 * ONNX graph {@code Y = MatMul(X[M, K], W[K, N]) + b} with W and b as initializers (ORT prepacks
 * a constant B once, as our backend packs W), written here with a minimal protobuf encoder.
 * Y is a pinned output: ORT writes into one direct buffer allocated here, as our linear writes
 * into a y the caller allocated. (Before, ORT allocated a fresh Y on every run and the Java side
 * copied all of it out with {@code getFloatBuffer()}, inside the timed call; at 4,096 × 384 →
 * 1,536 that cost ORT's side 13 % — measured 2026-11-27, one JVM, alternating.)
 */
final class OrtGemm implements AutoCloseable {
    final OrtEnvironment env = OrtEnvironment.getEnvironment();
    final OrtSession session;
    final int m, k, n;
    final OnnxTensor x, y;
    private final FloatBuffer yBuffer; // y's memory: ORT writes here (getFloatBuffer() would copy all of y)
    private final Map<String, OnnxTensor> inputs, outputs;

    OrtGemm(int m, int k, int n, int threads, float[] xValues, float[] wKn, float[] bias) throws OrtException {
        this.m = m; this.k = k; this.n = n;
        try (OrtSession.SessionOptions so = BenchMain.ortOptions(threads)) {
            session = env.createSession(model(k, n, wKn, bias), so);
        }
        x = OnnxTensor.createTensor(env, FloatBuffer.wrap(xValues), new long[]{m, k});
        yBuffer = ByteBuffer.allocateDirect(4 * m * n).order(ByteOrder.nativeOrder()).asFloatBuffer();
        y = OnnxTensor.createTensor(env, yBuffer, new long[]{m, n});
        inputs = Map.of("x", x);
        outputs = Map.of("y", y);
    }

    /** Runs once into the pinned y; returns its first value (so the call cannot be elided). */
    float run() throws OrtException {
        try (OrtSession.Result r = session.run(inputs, outputs)) {
            return yBuffer.get(0);
        }
    }

    /** A copy of y as the last run left it. */
    float[] output() {
        float[] v = new float[m * n];
        yBuffer.get(0, v);
        return v;
    }

    @Override
    public void close() throws OrtException {
        x.close();
        y.close();
        session.close();
    }

    static byte[] model(int k, int n, float[] w, float[] b) {
        Pb graph = new Pb()
                .msg(1, node("mm", "MatMul", new String[]{"x", "w"}, "xw"))
                .msg(1, node("add", "Add", new String[]{"xw", "b"}, "y"))
                .str(2, "gemm")
                .msg(5, tensor("w", new long[]{k, n}, w))
                .msg(5, tensor("b", new long[]{n}, b))
                .msg(11, valueInfo("x", "m", String.valueOf(k)))
                .msg(12, valueInfo("y", "m", String.valueOf(n)));
        return new Pb().varint(1, 8).str(2, "rrj-bench")
                .msg(8, new Pb().str(1, "").varint(2, 17))
                .msg(7, graph).out.toByteArray();
    }

    static Pb node(String name, String op, String[] inputs, String output) {
        Pb p = new Pb();
        for (String i : inputs) p.str(1, i);
        return p.str(2, output).str(3, name).str(4, op);
    }

    static Pb tensor(String name, long[] dims, float[] v) {
        Pb t = new Pb();
        for (long d : dims) t.varint(1, d);
        ByteBuffer bb = ByteBuffer.allocate(4 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        for (float f : v) bb.putFloat(f);
        return t.varint(2, 1).str(8, name).bytes(9, bb.array());
    }

    /** A float tensor of shape [dims]; a dim that is not a number is symbolic. */
    static Pb valueInfo(String name, String... dims) {
        Pb shape = new Pb();
        for (String d : dims) {
            Pb dim = new Pb();
            if (d.chars().allMatch(Character::isDigit)) dim.varint(1, Long.parseLong(d));
            else dim.str(2, d);
            shape.msg(1, dim);
        }
        return new Pb().str(1, name).msg(2, new Pb().msg(1, new Pb().varint(1, 1).msg(2, shape)));
    }

    /** Protobuf wire format, the few field kinds ONNX needs. */
    static final class Pb {
        final ByteArrayOutputStream out = new ByteArrayOutputStream();

        Pb raw(long v) {
            while ((v & ~0x7fL) != 0) { out.write((int) (v & 0x7f) | 0x80); v >>>= 7; }
            out.write((int) v);
            return this;
        }

        Pb varint(int field, long v) { return raw((long) field << 3).raw(v); }

        Pb bytes(int field, byte[] b) { raw((long) field << 3 | 2).raw(b.length); out.writeBytes(b); return this; }

        Pb str(int field, String s) { return bytes(field, s.getBytes(StandardCharsets.UTF_8)); }

        Pb msg(int field, Pb m) { return bytes(field, m.out.toByteArray()); }
    }
}
