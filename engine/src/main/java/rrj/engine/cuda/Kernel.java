package rrj.engine.cuda;

import jcuda.Pointer;
import jcuda.driver.CUfunction;
import jcuda.driver.CUmodule;
import jcuda.driver.CUresult;
import jcuda.driver.CUstream;

import static jcuda.driver.JCudaDriver.cuLaunchKernel;
import static jcuda.driver.JCudaDriver.cuModuleGetFunction;

/**
 * One loaded kernel and its argument slots. The {@code kernelParams} array is built once: each
 * scalar parameter points at its own 8-byte slot (a 4-byte parameter reads the low half, which
 * is where a little-endian long keeps it), the struct parameter at {@link LoraSegments#struct}.
 * A launch sets the slots in order with {@link #p}, {@link #l}, {@link #i}, {@link #f},
 * {@link #s}, each checked against the entry's signature, so a host/kernel mismatch is an
 * error naming the kernel, not a corrupted launch. No allocation per launch.
 */
final class Kernel {
    final Kernels.Entry entry;
    private final CUfunction function = new CUfunction();
    private final String sig;
    private final long[][] slots;
    private final Pointer params;
    private int at;

    Kernel(CUmodule module, Kernels.Entry entry, byte[] struct) {
        this.entry = entry;
        this.sig = entry.signature();
        int rc = cuModuleGetFunction(function, module, entry.name());
        if (rc != CUresult.CUDA_SUCCESS)
            throw new CudaError("kernel '" + entry.name() + "' not found in " + entry.module() + ".ptx: " + CUresult.stringFor(rc));
        slots = new long[sig.length()][];
        Pointer[] ps = new Pointer[sig.length()];
        for (int k = 0; k < sig.length(); k++) {
            if (sig.charAt(k) == 'S') ps[k] = Pointer.to(struct);
            else { slots[k] = new long[1]; ps[k] = Pointer.to(slots[k]); }
        }
        params = Pointer.to(ps);
    }

    private void put(char type, long bits) {
        if (at >= sig.length() || sig.charAt(at) != type) {
            int bad = at;
            at = 0;
            throw new IllegalStateException(entry.name() + ": argument " + bad + " is '" + type + "', the signature is " + sig);
        }
        if (type != 'S') slots[at][0] = bits;
        at++;
    }

    Kernel p(DevPtr d) { put('p', d.address()); return this; }

    /** A pointer argument that may be null (0). */
    Kernel p(long address) { put('p', address); return this; }

    Kernel l(long v) { put('l', v); return this; }

    Kernel i(int v) { put('i', v & 0xffffffffL); return this; }

    Kernel f(float v) { put('f', Float.floatToRawIntBits(v) & 0xffffffffL); return this; }

    /** The struct argument: whatever {@link LoraSegments#pack} last wrote. */
    Kernel s() { put('S', 0); return this; }

    void launch(int gridX, int gridY, int gridZ, int threads, int sharedBytes, CUstream stream) {
        int set = at;
        at = 0;
        if (set != sig.length())
            throw new IllegalStateException(entry.name() + ": " + set + " arguments set, the signature " + sig + " has " + sig.length());
        if (gridX <= 0 || gridY <= 0 || gridZ <= 0) return; // nothing to do
        if (gridY > 65535 || gridZ > 65535)
            throw new IllegalArgumentException(entry.name() + ": grid " + gridX + "×" + gridY + "×" + gridZ + " exceeds CUDA's 65535 limit on y/z");
        int rc = cuLaunchKernel(function, gridX, gridY, gridZ, threads, 1, 1, sharedBytes, stream, params, null);
        if (rc != CUresult.CUDA_SUCCESS) throw new CudaError("launching " + entry.name() + ": " + CUresult.stringFor(rc));
    }
}
