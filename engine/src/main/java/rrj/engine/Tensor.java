package rrj.engine;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.Arrays;

/**
 * A dense, row-major tensor: a dtype, a shape and a {@link MemorySegment} holding the
 * little-endian elements. Weights are slices of a memory-mapped file (no copy); activations
 * are allocated once by a {@link Backend}.
 *
 * <p>{@code data} is host memory; a device backend keeps its own copy in {@code device}
 * (an opaque handle) and may leave {@code data} null for tensors that live only on the device.
 * Deliberately no arithmetic here: ops belong to backends.
 */
public final class Tensor {
    public static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    public static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    public static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    public static final ValueLayout.OfLong I64 = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    public static final ValueLayout.OfDouble F64 = ValueLayout.JAVA_DOUBLE_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    public final DType dtype;
    private final long[] shape;
    public final MemorySegment data;
    /** Backend-private device handle (e.g. a CUDA pointer), null on the CPU. */
    public Object device;

    public Tensor(DType dtype, long[] shape, MemorySegment data) {
        this.dtype = dtype;
        this.shape = shape.clone();
        this.data = data;
        for (long d : shape) if (d < 0) throw new IllegalArgumentException("negative dimension in " + Arrays.toString(shape));
        if (data != null && data.byteSize() != numel() * dtype.bytes)
            throw new IllegalArgumentException("tensor of shape " + Arrays.toString(shape) + " " + dtype
                    + " needs " + numel() * dtype.bytes + " bytes, segment has " + data.byteSize());
    }

    /** A new zeroed fp32 tensor in the given arena (the global arena when null). */
    public static Tensor allocate(Arena arena, long... shape) {
        long n = 1;
        for (long d : shape) n *= d;
        MemorySegment seg = (arena == null ? Arena.global() : arena).allocate(Math.max(1, n) * 4, 64);
        return new Tensor(DType.F32, shape, n == 0 ? seg.asSlice(0, 0) : seg.asSlice(0, n * 4));
    }

    /** An fp32 tensor holding a copy of {@code values}. */
    public static Tensor of(float[] values, long... shape) {
        Tensor t = allocate(Arena.ofAuto(), shape);
        if (t.numel() != values.length)
            throw new IllegalArgumentException(values.length + " values for shape " + Arrays.toString(shape));
        MemorySegment.copy(values, 0, t.data, F32, 0, values.length);
        return t;
    }

    public long[] shape() { return shape.clone(); }
    public int rank() { return shape.length; }
    public long dim(int i) { return shape[i < 0 ? shape.length + i : i]; }

    public long numel() {
        long n = 1;
        for (long d : shape) n *= d;
        return n;
    }

    public float getFloat(long i) {
        return switch (dtype) {
            case F32 -> data.getAtIndex(F32, i);
            case F16 -> Float.float16ToFloat(data.getAtIndex(I16, i));
            case BF16 -> Float.intBitsToFloat((data.getAtIndex(I16, i) & 0xffff) << 16);
            case I32 -> data.getAtIndex(I32, i);
            case I64 -> data.getAtIndex(I64, i);
            case F64 -> (float) data.getAtIndex(F64, i);
        };
    }

    /** Element i as a double (exact for F64 tensors). */
    public double getDouble(long i) {
        return dtype == DType.F64 ? data.getAtIndex(F64, i) : getFloat(i);
    }

    /** A new zeroed fp64 tensor (the float64 reference run). */
    public static Tensor allocateF64(Arena arena, long... shape) {
        long n = 1;
        for (long d : shape) n *= d;
        MemorySegment seg = (arena == null ? Arena.global() : arena).allocate(Math.max(1, n) * 8, 64);
        return new Tensor(DType.F64, shape, n == 0 ? seg.asSlice(0, 0) : seg.asSlice(0, n * 8));
    }

    public void setFloat(long i, float v) {
        if (dtype != DType.F32) throw new IllegalStateException("setFloat on " + dtype + " tensor");
        data.setAtIndex(F32, i, v);
    }

    /** This tensor as fp32: itself when already fp32, else a converted copy (fp16/bf16 storage). */
    public Tensor toF32() {
        if (dtype == DType.F32) return this;
        Tensor t = allocate(Arena.ofAuto(), shape);
        long n = numel();
        for (long i = 0; i < n; i++) t.data.setAtIndex(F32, i, getFloat(i));
        return t;
    }

    /** All elements as a Java float array (copies). */
    public float[] toFloatArray() {
        long n = numel();
        if (n > Integer.MAX_VALUE) throw new IllegalStateException("tensor too large for an array");
        float[] out = new float[(int) n];
        if (dtype == DType.F32) MemorySegment.copy(data, F32, 0, out, 0, (int) n);
        else for (int i = 0; i < n; i++) out[i] = getFloat(i);
        return out;
    }

    /** The same bytes viewed with another shape of equal element count. */
    public Tensor reshape(long... newShape) {
        Tensor t = new Tensor(dtype, newShape, data);
        if (t.numel() != numel()) throw new IllegalArgumentException("cannot reshape " + Arrays.toString(shape) + " to " + Arrays.toString(newShape));
        return t;
    }

    @Override
    public String toString() { return "Tensor" + Arrays.toString(shape) + " " + dtype; }
}
