package rrj.engine.cuda;

import jcuda.Pointer;
import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUdevice_attribute;
import jcuda.driver.CUmodule;
import jcuda.driver.CUresult;
import jcuda.driver.CUstream_flags;
import rrj.engine.Backend;
import rrj.engine.Batch;
import rrj.engine.DType;
import rrj.engine.Lora;
import rrj.engine.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.ref.Cleaner;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;

import static jcuda.driver.JCudaDriver.cuCtxSetCurrent;
import static jcuda.driver.JCudaDriver.cuDeviceGet;
import static jcuda.driver.JCudaDriver.cuDeviceGetAttribute;
import static jcuda.driver.JCudaDriver.cuDeviceGetCount;
import static jcuda.driver.JCudaDriver.cuDeviceGetName;
import static jcuda.driver.JCudaDriver.cuDevicePrimaryCtxRelease;
import static jcuda.driver.JCudaDriver.cuDevicePrimaryCtxRetain;
import static jcuda.driver.JCudaDriver.cuDeviceTotalMem;
import static jcuda.driver.JCudaDriver.cuDriverGetVersion;
import static jcuda.driver.JCudaDriver.cuInit;
import static jcuda.driver.JCudaDriver.cuMemAlloc;
import static jcuda.driver.JCudaDriver.cuMemFree;
import static jcuda.driver.JCudaDriver.cuMemcpyDtoDAsync;
import static jcuda.driver.JCudaDriver.cuMemcpyDtoH;
import static jcuda.driver.JCudaDriver.cuMemcpyHtoD;
import static jcuda.driver.JCudaDriver.cuMemsetD32Async;
import static jcuda.driver.JCudaDriver.cuModuleLoadData;
import static jcuda.driver.JCudaDriver.cuModuleUnload;
import static jcuda.driver.JCudaDriver.cuStreamCreate;
import static jcuda.driver.JCudaDriver.cuStreamDestroy;
import static jcuda.driver.JCudaDriver.cuStreamSynchronize;
import static rrj.engine.cuda.Kernels.ATT_MAX_D;
import static rrj.engine.cuda.Kernels.ATT_TILE;
import static rrj.engine.cuda.Kernels.ATT_WARPS;
import static rrj.engine.cuda.Kernels.EXPAND_ROWS;
import static rrj.engine.cuda.Kernels.ROW_THREADS;
import static rrj.engine.cuda.Kernels.SHRINK_ROWS;

/**
 * The CUDA backend: JCuda's driver API for memory, streams and our kernels (PTX compiled from
 * engine/src/main/cuda, listed in {@link Kernels}), cuBLAS for every GEMM of the forward pass
 * ({@link Blas}: JCublas2, or libcublas.so.13 through FFM). Open it with {@link Cuda#open}
 * ({@code --backend cuda}).
 *
 * <p><b>Tensors.</b> Activations live on the device only: {@link #allocate} returns a tensor
 * with no host data whose {@code device} field is a {@link Mem} (a device allocation);
 * {@link #read} and {@link #write} copy in and out. Weights keep their host memory (mapped
 * file, or a converted fp32 copy) and get a {@link Resident} handle; they are uploaded once,
 * at first use, and assumed frozen from then on, like the CPU backend's packed panels. LoRA
 * matrices are the exception: they may change between calls (a trainer updates them in
 * place), so each use compares them with a host shadow of what was uploaded
 * ({@link MemorySegment#mismatch}, microseconds per matrix) and re-uploads on a change. Device
 * memory is freed when its tensor becomes unreachable (a {@link Cleaner} queues it, the
 * backend frees it at its next allocation) and all of it at {@link #close}. A forward pass
 * moves only token ids (and, when the batch layout changes, its row offsets) to the device,
 * and nothing back until the caller reads the pooled rows.
 *
 * <p><b>GEMMs.</b> cuBLAS is column-major; our row-major [rows, cols] matrices are its
 * [cols, rows] with leading dimension cols. So y[rows, out] = x·Wᵀ with W [out, in] is
 * {@code sgemm(T, N, m=out, n=rows, k=in, W (ld in), x (ld in), y (ld out))}, and linear's
 * backward dx = dy·W is {@code sgemm(N, N, m=in, n=rows, k=out, W (ld in), dy (ld out), dx (ld in))}.
 * The bias (and GELU) follow in one epilogue kernel, after the LoRA expand so that GELU sees
 * the adapted value.
 *
 * <p><b>Attention.</b> When every sequence of the batch has the same length, scores go through
 * cuBLAS strided-batched GEMMs: per (sequence, head), S = K_hᵀ·Q_h·(1/√D) as
 * {@code sgemm(T, N, len, len, D)} reading the head's columns in place (ld C), written as
 * row-major [query, key] blocks; a softmax kernel over the rows; then O_h = V_h·P as
 * {@code sgemm(N, N, D, len, len)} straight into the output's head columns. The batched index
 * runs over sequences (one call per head) or over heads (one call per sequence), whichever
 * makes fewer calls. A packed batch of mixed lengths has no uniform stride between sequences,
 * so it runs {@code attention_packed} instead: one launch for all (sequence, head) pairs, keys
 * streamed through shared memory with an online softmax. Heads wider than 128 with mixed
 * lengths (not BERT) take the cuBLAS path per run of equal lengths.
 *
 * <p><b>LoRA</b> (SGMV): one {@code lora_shrink} and one {@code lora_expand} launch for all
 * segments of a linear ({@link LoraSegments}), any rank per segment.
 *
 * <p>Not thread-safe: one op at a time per instance (any thread; each op makes the context
 * current). Ops are asynchronous on one stream; {@link #read} waits for them.
 */
public final class CudaBackend implements Backend {
    private static final Cleaner CLEANER = Cleaner.create();

    private final CUdevice device = new CUdevice();
    private final CUcontext context = new CUcontext();
    private final StreamHandle stream = new StreamHandle();
    private final List<CUmodule> modules = new ArrayList<>();
    private final Blas blas;
    private final String description;
    private final LoraSegments segs = new LoraSegments();
    private final Kernel embedK, biasActK, addLnK, softmaxK, attentionK, poolK, l2K;
    private final Kernel shrinkK, expandK, gradAK, gradBK;
    private final Kernel geluBackK, addLnBackK, poolBackK, l2BackK, addK, attProbsK, attGradsK;

    private final Set<Mem> live = ConcurrentHashMap.newKeySet();
    private final ConcurrentLinkedQueue<Mem> unreachable = new ConcurrentLinkedQueue<>();
    private boolean closed;

    // scratch, grown on demand, freed at close
    private Mem tokens;           // [3N] ints: ids, positions, token types
    private Mem layout;           // [2(B+1)] ints: row starts, then Σ_{b'<b} len² (attention backward)
    private Mem scores;           // cuBLAS attention: [R·H·len·len]
    private Mem loraU, loraV;     // LoRA shrink outputs [rows, maxRank]
    private Mem attP, attDS;      // attention backward: P and dS, [H·Σ len²]
    private int[] tokHost = new int[0], layoutHost = new int[0], layoutNext = new int[0];
    private int layoutInts = -1;  // length of the layout on the device (-1: none)
    private long layoutSquares;   // Σ len² of that layout
    private long[] segA = new long[4], segB = new long[4], segGA = new long[4], segGB = new long[4];

    CudaBackend(int threads) {
        int init = cuInit(0);
        if (init != CUresult.CUDA_SUCCESS)
            throw new CudaError("the CUDA driver is installed but cuInit failed: " + CUresult.stringFor(init) + " (no GPU visible to this process?)");
        int[] count = new int[1];
        check(cuDeviceGetCount(count), "cuDeviceGetCount");
        if (count[0] == 0) throw new CudaError("no CUDA device visible (cuDeviceGetCount = 0)");
        int ordinal = deviceOrdinal(count[0]);
        check(cuDeviceGet(device, ordinal), "cuDeviceGet(" + ordinal + ")");
        check(cuDevicePrimaryCtxRetain(context, device), "cuDevicePrimaryCtxRetain");
        try {
            check(cuCtxSetCurrent(context), "cuCtxSetCurrent");
            check(cuStreamCreate(stream, CUstream_flags.CU_STREAM_DEFAULT), "cuStreamCreate");
            int[] driver = new int[1];
            check(cuDriverGetVersion(driver), "cuDriverGetVersion");
            String isa = "?", target = "?";
            for (String m : Kernels.MODULES) {
                String ptx = Kernels.ptx(m);
                isa = Kernels.isaVersion(ptx);
                target = Kernels.target(ptx);
                CUmodule mod = new CUmodule();
                int rc = cuModuleLoadData(mod, (ptx + '\0').getBytes(StandardCharsets.US_ASCII));
                if (rc != CUresult.CUDA_SUCCESS)
                    throw new CudaError("loading " + m + ".ptx (PTX ISA " + isa + ", " + target + ") with driver CUDA "
                            + version(driver[0]) + ": " + CUresult.stringFor(rc)
                            + (rc == CUresult.CUDA_ERROR_UNSUPPORTED_PTX_VERSION ? " (the driver is older than the PTX: update it, or rebuild the PTX with -Pptx and an older nvcc)" : ""));
                modules.add(mod);
            }
            embedK = kernel(Kernels.EMBED_LAYERNORM);
            biasActK = kernel(Kernels.BIAS_ACT);
            addLnK = kernel(Kernels.ADD_LAYERNORM);
            softmaxK = kernel(Kernels.SOFTMAX_ROWS);
            attentionK = kernel(Kernels.ATTENTION_PACKED);
            poolK = kernel(Kernels.POOL_ROWS);
            l2K = kernel(Kernels.L2_NORMALIZE);
            shrinkK = kernel(Kernels.LORA_SHRINK);
            expandK = kernel(Kernels.LORA_EXPAND);
            gradAK = kernel(Kernels.LORA_GRAD_A);
            gradBK = kernel(Kernels.LORA_GRAD_B);
            geluBackK = kernel(Kernels.GELU_BACKWARD);
            addLnBackK = kernel(Kernels.ADD_LAYERNORM_BACKWARD);
            poolBackK = kernel(Kernels.POOL_BACKWARD);
            l2BackK = kernel(Kernels.L2_NORMALIZE_BACKWARD);
            addK = kernel(Kernels.ADD_INPLACE);
            attProbsK = kernel(Kernels.ATTENTION_BACKWARD_PROBS);
            attGradsK = kernel(Kernels.ATTENTION_BACKWARD_GRADS);
            blas = Blas.open(stream);
            byte[] name = new byte[256];
            check(cuDeviceGetName(name, name.length, device), "cuDeviceGetName");
            int len = 0;
            while (len < name.length && name[len] != 0) len++;
            long[] mem = new long[1];
            check(cuDeviceTotalMem(mem, device), "cuDeviceTotalMem");
            description = "backend=cuda device=" + ordinal + " (" + new String(name, 0, len, StandardCharsets.US_ASCII)
                    + ", sm_" + attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
                    + attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
                    + ", " + attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT) + " SMs, "
                    + mem[0] / (1L << 20) + " MiB) driver=CUDA " + version(driver[0]) + " ptx=ISA " + isa + "/" + target
                    + " cublas=" + blas.describe() + " (threads=" + threads + " unused: one host thread drives the GPU)";
        } catch (RuntimeException | LinkageError e) {
            for (CUmodule m : modules) cuModuleUnload(m);
            cuStreamDestroy(stream);
            cuDevicePrimaryCtxRelease(device);
            throw e;
        }
    }

    private static int deviceOrdinal(int count) {
        String s = System.getenv("RRJ_CUDA_DEVICE");
        if (s == null || s.isBlank()) return 0;
        try {
            int d = Integer.parseInt(s.strip());
            if (d >= 0 && d < count) return d;
        } catch (NumberFormatException ignored) {
            // reported below
        }
        throw new CudaError("RRJ_CUDA_DEVICE=" + s + " is not a device ordinal below " + count);
    }

    private static String version(int v) { return v / 1000 + "." + v % 1000 / 10; }

    private int attribute(int attr) {
        int[] v = new int[1];
        check(cuDeviceGetAttribute(v, attr, device), "cuDeviceGetAttribute(" + attr + ")");
        return v[0];
    }

    private Kernel kernel(Kernels.Entry e) {
        return new Kernel(modules.get(Kernels.MODULES.indexOf(e.module())), e, segs.struct);
    }

    static void check(int rc, String call) {
        if (rc != CUresult.CUDA_SUCCESS) throw new CudaError(call + ": " + CUresult.stringFor(rc));
    }

    @Override public String name() { return "cuda"; }

    @Override public String describe() { return description; }

    /** Every op starts here: the backend open, its context current on the calling thread. */
    private void enter() {
        if (closed) throw new IllegalStateException("the CUDA backend is closed");
        check(cuCtxSetCurrent(context), "cuCtxSetCurrent");
    }

    /** Waits until every op queued so far has run (benchmarks; {@link #read} does it by itself). */
    public void synchronize() {
        enter();
        check(cuStreamSynchronize(stream), "cuStreamSynchronize");
    }

    // ------------------------------------------------------------------ memory

    /** A device allocation. As a {@link Cleaner} action it queues itself for freeing by the owner. */
    static final class Mem implements Runnable {
        final CudaBackend owner;
        final DevPtr ptr;
        final long bytes;
        volatile boolean freed;

        Mem(CudaBackend owner, DevPtr ptr, long bytes) {
            this.owner = owner;
            this.ptr = ptr;
            this.bytes = bytes;
        }

        @Override public void run() { if (!freed) owner.unreachable.add(this); }
    }

    /** A weight's handle: its fp32 host memory, and the device copy once uploaded. */
    static final class Resident implements Runnable {
        final CudaBackend owner;
        final MemorySegment host;
        volatile Mem mem;        // null until first use
        MemorySegment shadow;    // LoRA matrices: what was uploaded, to detect in-place updates

        Resident(CudaBackend owner, MemorySegment host) {
            this.owner = owner;
            this.host = host;
        }

        @Override public void run() {
            Mem m = mem;
            if (m != null && !m.freed) owner.unreachable.add(m);
        }
    }

    private Mem alloc(long bytes) {
        drain();
        long n = Math.max(4, (bytes + 3) / 4 * 4);
        DevPtr p = new DevPtr();
        int rc = cuMemAlloc(p, n);
        if (rc == CUresult.CUDA_ERROR_OUT_OF_MEMORY) { // tensors the GC has not yet found unreachable may hold memory
            System.gc();
            for (int i = 0; i < 20 && unreachable.isEmpty(); i++) {
                try { Thread.sleep(10); } catch (InterruptedException e) { Thread.currentThread().interrupt(); break; }
            }
            drain();
            rc = cuMemAlloc(p, n);
        }
        check(rc, "cuMemAlloc(" + n + " bytes)");
        Mem m = new Mem(this, p, n);
        live.add(m);
        return m;
    }

    private void free(Mem m) {
        if (m == null || m.freed) return;
        m.freed = true;
        live.remove(m);
        check(cuMemFree(m.ptr), "cuMemFree");
    }

    /** Frees the device memory of tensors found unreachable, once the queued work that may use it is done. */
    private void drain() {
        if (unreachable.isEmpty()) return;
        check(cuStreamSynchronize(stream), "cuStreamSynchronize");
        for (Mem m; (m = unreachable.poll()) != null; ) free(m);
    }

    /** {@code m} if it holds {@code bytes}, else a new, larger scratch buffer (the old one freed after the queued work). */
    private Mem ensure(Mem m, long bytes) {
        if (m != null && m.bytes >= bytes) return m;
        if (m != null) {
            check(cuStreamSynchronize(stream), "cuStreamSynchronize");
            free(m);
        }
        return alloc(Math.max(bytes, m == null ? 0 : m.bytes + m.bytes / 2));
    }

    private void upload(Mem dst, MemorySegment src) {
        long n = src.byteSize();
        for (long off = 0; off < n; off += 1L << 30) {
            long len = Math.min(1L << 30, n - off);
            check(cuMemcpyHtoD(dst.ptr.at(off), Pointer.to(src.asSlice(off, len).asByteBuffer()), len), "cuMemcpyHtoD(weight)");
        }
    }

    @Override
    public Tensor allocate(long... shape) {
        enter();
        long n = 1;
        for (long d : shape) {
            if (d < 0) throw new IllegalArgumentException("negative dimension in " + Arrays.toString(shape));
            n *= d;
        }
        Mem m = alloc(n * 4);
        check(cuMemsetD32Async(m.ptr, 0, m.bytes / 4, stream), "cuMemsetD32Async");
        Tensor t = new Tensor(DType.F32, shape, null);
        t.device = m;
        CLEANER.register(t, m);
        return t;
    }

    @Override
    public Tensor weight(Tensor hostWeight) {
        if (hostWeight.device instanceof Mem m && m.owner == this) return hostWeight;      // already on this device
        if (hostWeight.device instanceof Resident r && r.owner == this) return hostWeight; // already one of our weights
        if (hostWeight.data == null) throw new IllegalArgumentException(hostWeight + " has no host data (a tensor of another device backend?)");
        MemorySegment host = hostWeight.toF32().data;
        if (!host.isNative()) { // a heap segment: copy once into native memory so it can be uploaded
            MemorySegment copy = Arena.ofAuto().allocate(host.byteSize(), 64);
            copy.copyFrom(host);
            host = copy;
        }
        Tensor t = new Tensor(DType.F32, hostWeight.shape(), host);
        Resident r = new Resident(this, host);
        t.device = r;
        CLEANER.register(t, r);
        return t;
    }

    /** The device memory of an activation of this backend. */
    private Mem act(Tensor t) {
        if (t.device instanceof Mem m && m.owner == this && !m.freed) return m;
        throw new IllegalArgumentException(t + " is not an activation of this CUDA backend (make it with allocate())");
    }

    /** The device copy of a weight, uploaded on first use. */
    private Mem weightMem(Tensor w) {
        if (w.device instanceof Resident r && r.owner == this) {
            if (r.mem == null) {
                Mem m = alloc(r.host.byteSize());
                upload(m, r.host);
                r.mem = m;
            }
            return r.mem;
        }
        if (w.device instanceof Mem m && m.owner == this && !m.freed) return m;
        throw new IllegalArgumentException(w + " was not made resident by this CUDA backend (pass it through weight() once)");
    }

    /** A LoRA matrix on the device, re-uploaded when its host memory changed since the last upload. */
    private Mem loraMem(Tensor t) {
        Mem m = weightMem(t);
        if (t.device instanceof Resident r) {
            if (r.shadow == null) {
                r.shadow = Arena.ofAuto().allocate(r.host.byteSize(), 64);
                r.shadow.copyFrom(r.host);
            } else if (r.host.mismatch(r.shadow) != -1) {
                upload(m, r.host);
                r.shadow.copyFrom(r.host);
            }
        }
        return m;
    }

    @Override
    public void read(Tensor src, long srcOffset, float[] dst, int dstOffset, int n) {
        if (n == 0) return;
        if (src.device instanceof Resident r && r.owner == this) { // a weight: its host memory is the truth
            MemorySegment.copy(r.host, Tensor.F32, srcOffset * 4, dst, dstOffset, n);
            return;
        }
        enter();
        Mem m = act(src);
        inBounds(src, srcOffset, n);
        check(cuMemcpyDtoH(Pointer.to(dst).withByteOffset(dstOffset * 4L), m.ptr.at(srcOffset * 4), n * 4L), "cuMemcpyDtoH");
    }

    @Override
    public void write(float[] src, int srcOffset, Tensor dst, long dstOffset, int n) {
        if (n == 0) return;
        enter();
        Mem m = act(dst);
        inBounds(dst, dstOffset, n);
        check(cuMemcpyHtoD(m.ptr.at(dstOffset * 4), Pointer.to(src).withByteOffset(srcOffset * 4L), n * 4L), "cuMemcpyHtoD");
    }

    private static void inBounds(Tensor t, long offset, long n) {
        if (offset < 0 || n < 0 || offset + n > t.numel())
            throw new IndexOutOfBoundsException("[" + offset + ", " + (offset + n) + ") outside " + t);
    }

    /** Device code has no bounds checks: every op first checks that its rows fit the tensors. */
    private static void fits(Tensor t, long rows, long width, String what) {
        if (rows * width > t.numel())
            throw new IllegalArgumentException(what + ": " + rows + " rows of " + width + " do not fit " + t);
    }

    private static int width(Tensor t) { return (int) (t.numel() / t.dim(0)); }

    private static int blocks(long n, int per) { return (int) Math.min(Integer.MAX_VALUE, (n + per - 1) / per); }

    private static int rowBlockWidth(int c) {
        if ((long) c * 4 > 48 * 1024) throw new IllegalArgumentException("row width " + c + " exceeds the 12288 floats the row kernels keep in shared memory");
        return c * 4;
    }

    /**
     * The batch layout on the device: row starts [B+1], then per sequence Σ_{b'<b} len_b'² [B+1]
     * (where the attention backward keeps each sequence's H·len² probabilities). Uploaded only
     * when it differs from the last one (a forward pass uploads it once, not per layer).
     */
    private Mem layout(Batch batch) {
        int b = batch.size, ints = 2 * (b + 1);
        if (layoutNext.length < ints) layoutNext = new int[ints];
        long sq = 0;
        for (int i = 0; i <= b; i++) {
            layoutNext[i] = batch.start[i];
            if (sq > Integer.MAX_VALUE) throw new IllegalArgumentException("batch too large for the attention backward's scratch");
            layoutNext[b + 1 + i] = (int) sq;
            if (i < b) sq += (long) batch.length(i) * batch.length(i);
        }
        if (ints != layoutInts || !Arrays.equals(layoutNext, 0, ints, layoutHost, 0, ints)) {
            layout = ensure(layout, ints * 4L);
            check(cuMemcpyHtoD(layout.ptr, Pointer.to(layoutNext), ints * 4L), "cuMemcpyHtoD(layout)");
            int[] t = layoutHost;
            layoutHost = layoutNext;
            layoutNext = t.length >= ints ? t : new int[ints];
            layoutInts = ints;
            layoutSquares = sq;
        }
        return layout;
    }

    // ------------------------------------------------------------------ forward ops

    @Override
    public void embed(Tensor out, int[] ids, int[] positions, int[] types, Batch batch,
                      Tensor word, Tensor pos, Tensor type, Tensor gamma, Tensor beta, float eps) {
        enter();
        int n = batch.tokens, c = (int) word.dim(1);
        if (n == 0) return;
        fits(out, n, c, "embed");
        long vocab = word.dim(0), maxPos = pos.dim(0), types0 = type.dim(0);
        if (tokHost.length < 3 * n) tokHost = new int[3 * n];
        for (int i = 0; i < n; i++) {
            if (ids[i] < 0 || ids[i] >= vocab || positions[i] < 0 || positions[i] >= maxPos || types[i] < 0 || types[i] >= types0)
                throw new IllegalArgumentException("token " + i + ": id " + ids[i] + ", position " + positions[i] + ", type " + types[i]
                        + " outside the embedding tables (" + vocab + ", " + maxPos + ", " + types0 + ")");
            tokHost[i] = ids[i];
            tokHost[n + i] = positions[i];
            tokHost[2 * n + i] = types[i];
        }
        tokens = ensure(tokens, 12L * n);
        check(cuMemcpyHtoD(tokens.ptr, Pointer.to(tokHost), 12L * n), "cuMemcpyHtoD(tokens)");
        embedK.p(act(out).ptr).p(tokens.ptr).i(n).p(weightMem(word).ptr).p(weightMem(pos).ptr).p(weightMem(type).ptr)
                .p(weightMem(gamma).ptr).p(weightMem(beta).ptr).i(c).f(eps)
                .launch(n, 1, 1, ROW_THREADS, rowBlockWidth(c), stream);
    }

    @Override
    public void linear(Tensor y, Tensor x, int rows, Tensor w, Tensor bias, Lora lora, boolean gelu) {
        enter();
        if (rows <= 0) return;
        int out = (int) w.dim(0), in = (int) w.dim(1);
        fits(y, rows, out, "linear y"); fits(x, rows, in, "linear x");
        Mem ym = act(y), xm = act(x);
        blas.sgemm(true, false, out, rows, in, 1f, weightMem(w).ptr, 0, in, xm.ptr, 0, in, 0f, ym.ptr, 0, out);
        if (segs.plan(lora, rows) > 0) {
            int vld = Math.max(1, segs.maxRank);
            loraV = ensure(loraV, (long) rows * vld * 4);
            addresses(lora, in, out, false);
            for (int from = 0; from < segs.runs; from += LoraSegments.MAX_SEGS) {
                int n = segs.pack(from, lora, segA, segB, segGA, segGB);
                shrink(loraV, xm, in, vld, 0, lora.dropout, lora.seed, n);
                expand(ym, loraV, out, vld, 2, 0f, 0, n);
            }
        }
        if (bias != null || gelu) epilogue(ym, ym, bias == null ? null : weightMem(bias), rows, out, (bias != null ? 1 : 0) | (gelu ? 2 : 0));
    }

    /** Device addresses of each segment's A, B (and gradient accumulators when {@code grads}), shapes checked. */
    private void addresses(Lora lora, int in, int out, boolean grads) {
        int n = lora.count;
        if (segA.length < n) { segA = new long[n]; segB = new long[n]; segGA = new long[n]; segGB = new long[n]; }
        for (int s = 0; s < n; s++) {
            Tensor a = lora.a[s], b = lora.b[s];
            if (a.rank() != 2 || b.rank() != 2 || a.dim(1) != in || b.dim(0) != out || b.dim(1) != a.dim(0))
                throw new IllegalArgumentException("LoRA segment " + s + ": A " + a + " and B " + b + " do not fit a linear of "
                        + in + " → " + out + " (A [r, " + in + "], B [" + out + ", r])");
            segA[s] = loraMem(a).ptr.address();
            segB[s] = loraMem(b).ptr.address();
            boolean g = grads && lora.gradA != null && lora.gradA[s] != null;
            if (g) {
                fits(lora.gradA[s], a.dim(0), in, "LoRA dA"); fits(lora.gradB[s], out, a.dim(0), "LoRA dB");
            }
            segGA[s] = g ? act(lora.gradA[s]).ptr.address() : 0;
            segGB[s] = g ? act(lora.gradB[s]).ptr.address() : 0;
        }
    }

    private void shrink(Mem v, Mem x, int width, int vld, int mode, float p, long seed, int n) {
        shrinkK.p(v.ptr).p(x.ptr).s().i(width).i(vld).i(mode).f(p).l(seed)
                .launch(1, blocks(segs.chunkMaxRows, SHRINK_ROWS), n, 256, 0, stream);
    }

    private void expand(Mem y, Mem v, int width, int vld, int mode, float p, long seed, int n) {
        expandK.p(y.ptr).p(v.ptr).s().i(width).i(vld).i(mode).f(p).l(seed)
                .launch(blocks(width, 256), blocks(segs.chunkMaxRows, EXPAND_ROWS), n, 256, EXPAND_ROWS * Math.max(1, segs.chunkMaxRank) * 4, stream);
    }

    private void epilogue(Mem dst, Mem src, Mem bias, int rows, int cols, int flags) {
        biasActK.p(dst.ptr).p(src.ptr).p(bias == null ? 0 : bias.ptr.address()).i(rows).i(cols).i(flags)
                .launch(blocks(cols, 256), Math.min(rows, 65535), 1, 256, 0, stream);
    }

    @Override
    public void attention(Tensor out, Tensor q, Tensor k, Tensor v, Batch batch, int heads) {
        enter();
        int n = batch.tokens;
        if (n == 0) return;
        int c = width(q), d = c / heads;
        if (d * heads != c) throw new IllegalArgumentException("width " + c + " is not a multiple of " + heads + " heads");
        fits(out, n, c, "attention"); fits(q, n, c, "attention"); fits(k, n, c, "attention"); fits(v, n, c, "attention");
        Mem om = act(out), qm = act(q), km = act(k), vm = act(v);
        float scale = (float) (1.0 / Math.sqrt(d));
        if (n == batch.size * batch.maxLen) { // every sequence the same length: cuBLAS, one run
            attentionGemm(om, qm, km, vm, 0, batch.size, batch.maxLen, heads, c, d, scale);
        } else if (d <= ATT_MAX_D) {
            Mem lay = layout(batch);
            attentionK.p(om.ptr).p(qm.ptr).p(km.ptr).p(vm.ptr).p(lay.ptr).i(c).i(d).f(scale)
                    .launch(blocks(batch.maxLen, ATT_WARPS), heads, batch.size, ATT_WARPS * 32, (2 * ATT_TILE * (d + 1) + ATT_WARPS * d) * 4, stream);
        } else { // wide heads and mixed lengths: cuBLAS per run of equal lengths
            for (int b = 0; b < batch.size; ) {
                int len = batch.length(b), e = b;
                while (e < batch.size && batch.length(e) == len) e++;
                attentionGemm(om, qm, km, vm, batch.start[b], e - b, len, heads, c, d, scale);
                b = e;
            }
        }
    }

    /** Attention of R consecutive sequences of length len starting at row row0, through cuBLAS (see the class comment). */
    private void attentionGemm(Mem o, Mem q, Mem k, Mem v, int row0, int r, int len, int heads, int c, int d, float scale) {
        long per = (long) len * len, seqRows = (long) len * c;
        scores = ensure(scores, (long) r * heads * per * 4);
        boolean overSequences = r >= heads; // batch index = sequence (one call per head), else = head (one call per sequence)
        int calls = overSequences ? heads : r, batch = overSequences ? r : heads;
        long strideX = overSequences ? seqRows : d, strideS = overSequences ? heads * per : per;
        for (int t = 0; t < calls; t++) {
            long x0 = overSequences ? (long) row0 * c + (long) t * d : (long) (row0 + (long) t * len) * c;
            long s0 = overSequences ? t * per : t * heads * per;
            // S = Kᵀ·Q·scale: column-major [len_k, len_q] = row-major [query][key]
            blas.sgemmStridedBatched(true, false, len, len, d, scale, k.ptr, x0, c, strideX, q.ptr, x0, c, strideX,
                    0f, scores.ptr, s0, len, strideS, batch);
        }
        long rows = (long) r * heads * len;
        softmaxK.p(scores.ptr).l(rows).i(len).launch(blocks(rows, 8), 1, 1, 256, 0, stream);
        for (int t = 0; t < calls; t++) {
            long x0 = overSequences ? (long) row0 * c + (long) t * d : (long) (row0 + (long) t * len) * c;
            long s0 = overSequences ? t * per : t * heads * per;
            // O = V·P: column-major [D, len_q] into the head's columns of out (ld C)
            blas.sgemmStridedBatched(false, false, d, len, len, 1f, v.ptr, x0, c, strideX, scores.ptr, s0, len, strideS,
                    0f, o.ptr, x0, c, strideX, batch);
        }
    }

    @Override
    public void addLayerNorm(Tensor out, Tensor x, Tensor residual, int rows, Tensor gamma, Tensor beta, float eps) {
        enter();
        if (rows <= 0) return;
        int c = (int) gamma.numel();
        fits(out, rows, c, "addLayerNorm"); fits(x, rows, c, "addLayerNorm"); fits(residual, rows, c, "addLayerNorm");
        addLnK.p(act(out).ptr).p(act(x).ptr).p(act(residual).ptr).p(weightMem(gamma).ptr).p(weightMem(beta).ptr).i(c).f(eps)
                .launch(rows, 1, 1, ROW_THREADS, rowBlockWidth(c), stream);
    }

    @Override
    public void pool(Tensor out, Tensor hidden, Batch batch, Pooling mode) {
        enter();
        if (batch.size == 0) return;
        int c = width(hidden);
        fits(hidden, batch.tokens, c, "pool hidden"); fits(out, batch.size, c, "pool out");
        Mem lay = layout(batch);
        poolK.p(act(out).ptr).p(act(hidden).ptr).p(lay.ptr).i(c).i(mode == Pooling.CLS ? 1 : 0)
                .launch(blocks(c, 256), batch.size, 1, 256, 0, stream);
    }

    @Override
    public void l2Normalize(Tensor x, int rows) {
        enter();
        if (rows <= 0) return;
        int c = width(x);
        fits(x, rows, c, "l2Normalize");
        l2K.p(act(x).ptr).i(c).launch(rows, 1, 1, ROW_THREADS, 0, stream);
    }

    // ------------------------------------------------------------------ training (backward)

    @Override
    public void gelu(Tensor out, Tensor x, int rows) {
        enter();
        if (rows <= 0) return;
        int c = width(x);
        fits(out, rows, c, "gelu"); fits(x, rows, c, "gelu");
        epilogue(act(out), act(x), null, rows, c, 2);
    }

    @Override
    public void geluBackward(Tensor dx, Tensor dy, Tensor x, int rows) {
        enter();
        long n = (long) rows * width(x);
        if (n <= 0) return;
        fits(dx, rows, width(x), "geluBackward"); fits(dy, rows, width(x), "geluBackward"); fits(x, rows, width(x), "geluBackward");
        geluBackK.p(act(dx).ptr).p(act(dy).ptr).p(act(x).ptr).l(n).launch((int) Math.min(blocks(n, 256), 65536), 1, 1, 256, 0, stream);
    }

    @Override
    public void linearBackward(Tensor dx, boolean accumulate, Tensor dy, Tensor x, int rows, Tensor w, Lora lora) {
        enter();
        if (rows <= 0) return;
        int out = (int) w.dim(0), in = (int) w.dim(1);
        fits(dx, rows, in, "linearBackward dx"); fits(x, rows, in, "linearBackward x"); fits(dy, rows, out, "linearBackward dy");
        Mem dxm = act(dx), dym = act(dy), xm = act(x);
        blas.sgemm(false, false, in, rows, out, 1f, weightMem(w).ptr, 0, in, dym.ptr, 0, out, accumulate ? 1f : 0f, dxm.ptr, 0, in);
        if (segs.plan(lora, rows) == 0) return;
        int vld = Math.max(1, segs.maxRank);
        loraU = ensure(loraU, (long) rows * vld * 4);
        loraV = ensure(loraV, (long) rows * vld * 4);
        addresses(lora, in, out, true);
        for (int from = 0; from < segs.runs; from += LoraSegments.MAX_SEGS) {
            int n = segs.pack(from, lora, segA, segB, segGA, segGB);
            shrink(loraU, dym, out, vld, 1 | 2, 0f, 0, n);                 // u = s·dy·B
            expand(dxm, loraU, in, vld, 1 | 4, lora.dropout, lora.seed, n); // dx += (u·A) ⊙ mask
            if (!segs.chunkGrads) continue;
            shrink(loraV, xm, in, vld, 0, lora.dropout, lora.seed, n);     // v = x̃·Aᵀ
            gradAK.s().p(loraU.ptr).p(xm.ptr).i(in).i(vld).f(lora.dropout).l(lora.seed)
                    .launch(blocks(in, 256), Math.max(1, segs.chunkMaxRank), n, 256, 0, stream);
            gradBK.s().p(dym.ptr).p(loraV.ptr).i(out).i(vld)
                    .launch(blocks(out, 256), Math.max(1, segs.chunkMaxRank), n, 256, 0, stream);
        }
    }

    @Override
    public void attentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor q, Tensor k, Tensor v, Batch batch, int heads) {
        enter();
        int n = batch.tokens;
        if (n == 0) return;
        int c = width(q), d = c / heads;
        if (d * heads != c) throw new IllegalArgumentException("width " + c + " is not a multiple of " + heads + " heads");
        fits(dq, n, c, "attentionBackward"); fits(dk, n, c, "attentionBackward"); fits(dv, n, c, "attentionBackward");
        fits(dout, n, c, "attentionBackward"); fits(q, n, c, "attentionBackward"); fits(k, n, c, "attentionBackward");
        fits(v, n, c, "attentionBackward");
        Mem lay = layout(batch);
        long total = heads * layoutSquares;
        attP = ensure(attP, total * 4);
        attDS = ensure(attDS, total * 4);
        int gx = blocks(batch.maxLen, ATT_WARPS);
        attProbsK.p(attP.ptr).p(attDS.ptr).p(act(q).ptr).p(act(k).ptr).p(act(v).ptr).p(act(dout).ptr).p(lay.ptr)
                .i(batch.size).i(c).i(d).f((float) (1.0 / Math.sqrt(d)))
                .launch(gx, heads, batch.size, ATT_WARPS * 32, 0, stream);
        attGradsK.p(act(dq).ptr).p(act(dk).ptr).p(act(dv).ptr).p(attP.ptr).p(attDS.ptr).p(act(q).ptr).p(act(k).ptr).p(act(dout).ptr)
                .p(lay.ptr).i(batch.size).i(c).i(d)
                .launch(gx, heads, batch.size, ATT_WARPS * 32, 0, stream);
    }

    @Override
    public void addLayerNormBackward(Tensor dsum, Tensor dy, Tensor x, Tensor residual, int rows, Tensor gamma, float eps) {
        enter();
        if (rows <= 0) return;
        int c = (int) gamma.numel();
        fits(dsum, rows, c, "addLayerNormBackward"); fits(dy, rows, c, "addLayerNormBackward"); fits(x, rows, c, "addLayerNormBackward");
        fits(residual, rows, c, "addLayerNormBackward");
        addLnBackK.p(act(dsum).ptr).p(act(dy).ptr).p(act(x).ptr).p(act(residual).ptr).p(weightMem(gamma).ptr).i(c).f(eps)
                .launch(rows, 1, 1, ROW_THREADS, rowBlockWidth(c), stream);
    }

    @Override
    public void poolBackward(Tensor dh, Tensor dpooled, Batch batch, Pooling mode) {
        enter();
        if (batch.size == 0) return;
        int c = width(dh);
        fits(dh, batch.tokens, c, "poolBackward dh"); fits(dpooled, batch.size, c, "poolBackward dpooled");
        Mem lay = layout(batch);
        poolBackK.p(act(dh).ptr).p(act(dpooled).ptr).p(lay.ptr).i(c).i(mode == Pooling.CLS ? 1 : 0)
                .launch(blocks(c, 256), batch.size, 1, 256, 0, stream);
    }

    @Override
    public void l2NormalizeBackward(Tensor dx, Tensor dy, Tensor x, int rows) {
        enter();
        if (rows <= 0) return;
        int c = width(x);
        fits(dx, rows, c, "l2NormalizeBackward"); fits(dy, rows, c, "l2NormalizeBackward"); fits(x, rows, c, "l2NormalizeBackward");
        l2BackK.p(act(dx).ptr).p(act(dy).ptr).p(act(x).ptr).i(c).launch(rows, 1, 1, ROW_THREADS, 0, stream);
    }

    @Override
    public void add(Tensor dst, Tensor src, long n) {
        enter();
        if (n <= 0) return;
        inBounds(dst, 0, n);
        inBounds(src, 0, n);
        addK.p(act(dst).ptr).p(act(src).ptr).l(n).launch((int) Math.min(blocks(n, 256), 65536), 1, 1, 256, 0, stream);
    }

    @Override
    public void copy(Tensor dst, Tensor src, long n) {
        enter();
        if (n <= 0) return;
        inBounds(dst, 0, n);
        inBounds(src, 0, n);
        check(cuMemcpyDtoDAsync(act(dst).ptr, act(src).ptr, n * 4, stream), "cuMemcpyDtoDAsync");
    }

    // ------------------------------------------------------------------ benchmark support

    /**
     * The floor our kernels add to: the cuBLAS calls alone that {@link #linear} and the
     * uniform-length {@link #attention} make for one BERT forward pass of {@code seqs}
     * sequences of {@code len} tokens (per layer: Q, K, V and attention-output GEMMs, FFN up
     * and down, scores and context batched GEMMs), on buffers of random values. Returns the
     * wall time of each of {@code reps} passes in milliseconds, each ending with a stream sync.
     */
    public double[] gemmFloorMillis(int seqs, int len, int hidden, int ffn, int heads, int layers, int reps) {
        enter();
        int n = seqs * len, c = hidden, d = c / heads;
        SplittableRandom r = new SplittableRandom(7);
        Tensor x = filled(r, n, Math.max(c, ffn)), y = filled(r, n, Math.max(c, ffn)), w = filled(r, Math.max(c, ffn), c);
        Tensor w2 = filled(r, c, ffn);
        Mem xm = act(x), ym = act(y), wm = act(w), w2m = act(w2);
        scores = ensure(scores, (long) seqs * heads * len * len * 4);
        boolean overSequences = seqs >= heads;
        int calls = overSequences ? heads : seqs, batch = overSequences ? seqs : heads;
        long per = (long) len * len, strideX = overSequences ? (long) len * c : d, strideS = overSequences ? heads * per : per;
        double[] ms = new double[reps];
        for (int rep = 0; rep < reps; rep++) {
            synchronize();
            long t0 = System.nanoTime();
            for (int l = 0; l < layers; l++) {
                for (int g = 0; g < 4; g++) blas.sgemm(true, false, c, n, c, 1f, wm.ptr, 0, c, xm.ptr, 0, c, 0f, ym.ptr, 0, c);
                for (int t = 0; t < calls; t++) {
                    long x0 = overSequences ? (long) t * d : (long) t * len * c, s0 = overSequences ? t * per : t * heads * per;
                    blas.sgemmStridedBatched(true, false, len, len, d, 1f, xm.ptr, x0, c, strideX, ym.ptr, x0, c, strideX, 0f, scores.ptr, s0, len, strideS, batch);
                }
                for (int t = 0; t < calls; t++) {
                    long x0 = overSequences ? (long) t * d : (long) t * len * c, s0 = overSequences ? t * per : t * heads * per;
                    blas.sgemmStridedBatched(false, false, d, len, len, 1f, xm.ptr, x0, c, strideX, scores.ptr, s0, len, strideS, 0f, ym.ptr, x0, c, strideX, batch);
                }
                blas.sgemm(true, false, ffn, n, c, 1f, wm.ptr, 0, c, xm.ptr, 0, c, 0f, ym.ptr, 0, ffn);
                blas.sgemm(true, false, c, n, ffn, 1f, w2m.ptr, 0, ffn, ym.ptr, 0, ffn, 0f, xm.ptr, 0, c);
            }
            synchronize();
            ms[rep] = (System.nanoTime() - t0) / 1e6;
        }
        return ms;
    }

    private Tensor filled(SplittableRandom r, int rows, int cols) {
        Tensor t = allocate(rows, cols);
        long n = (long) rows * cols;
        float[] chunk = new float[(int) Math.min(n, 1 << 20)];
        for (long at = 0; at < n; at += chunk.length) {
            int len = (int) Math.min(chunk.length, n - at);
            for (int j = 0; j < len; j++) chunk[j] = (float) (r.nextDouble() - 0.5) * 0.1f;
            write(chunk, 0, t, at, len);
        }
        return t;
    }

    @Override
    public void close() {
        if (closed) return;
        check(cuCtxSetCurrent(context), "cuCtxSetCurrent");
        cuStreamSynchronize(stream);
        unreachable.clear();
        for (Mem m : List.copyOf(live)) {
            m.freed = true;
            cuMemFree(m.ptr);
        }
        live.clear();
        blas.close();
        cuStreamDestroy(stream);
        for (CUmodule m : modules) cuModuleUnload(m);
        cuDevicePrimaryCtxRelease(device);
        closed = true;
    }
}
