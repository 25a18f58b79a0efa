package rrj.engine.cuda;

import jcuda.driver.CUdeviceptr;

/**
 * A device pointer whose numeric address we can read: JCuda keeps it in a protected field,
 * and the FFM path to cuBLAS ({@link FfmBlas}) and the kernel arguments ({@link Kernel}) need
 * it as a long. {@code cuMemAlloc} fills a {@code new DevPtr()}; {@link #at} makes offsets
 * the way JCuda's own {@code withByteOffset} does.
 */
final class DevPtr extends CUdeviceptr {
    DevPtr() {}

    private DevPtr(DevPtr base, long byteOffset) { super(base, byteOffset); }

    /** This pointer plus {@code byteOffset} bytes. */
    DevPtr at(long byteOffset) { return byteOffset == 0 ? this : new DevPtr(this, byteOffset); }

    /** The device address. */
    long address() { return getNativePointer() + getByteOffset(); }
}
