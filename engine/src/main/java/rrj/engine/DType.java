package rrj.engine;

/** Storage types a tensor may have. Compute is always fp32; F16/BF16 exist for storage only. */
public enum DType {
    F32(4), F16(2), BF16(2), I32(4), I64(8),
    /** Only the float64 reference run (gradient checks) uses it. */
    F64(8);

    public final int bytes;

    DType(int bytes) { this.bytes = bytes; }

    /** The safetensors spelling ("F32", "F16", "BF16", "I32", "I64"). */
    public String safetensorsName() { return name(); }

    public static DType fromSafetensors(String s) {
        for (DType t : values()) if (t.name().equals(s)) return t;
        return null;
    }
}
