package rrj.engine.cuda;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.List;

/**
 * The table of every kernel the CUDA backend launches: PTX module, entry name and parameter
 * signature. {@link CudaBackend} loads exactly these entries and {@link Kernel} checks each
 * launch's arguments against the signature; {@code PtxTest} checks the committed PTX against
 * this table (names and parameter types), so a renamed kernel or a changed parameter list
 * fails a test that runs without a GPU. No JCuda here, on purpose.
 *
 * <p>Signature letters, one per parameter: {@code p} device pointer, {@code l} 64-bit integer,
 * {@code i} 32-bit integer, {@code f} float, {@code S} the LoRA segment struct passed by value
 * ({@link LoraSegments#STRUCT_BYTES} bytes).
 */
final class Kernels {
    private Kernels() {}

    /** PTX modules: sources in engine/src/main/cuda/NAME.cu, PTX in resources rrj/engine/cuda/NAME.ptx. */
    static final String FORWARD = "forward", LORA = "lora", BACKWARD = "backward";
    static final List<String> MODULES = List.of(FORWARD, LORA, BACKWARD);

    record Entry(String module, String name, String signature) {}

    // forward.cu
    static final Entry EMBED_LAYERNORM = new Entry(FORWARD, "embed_layernorm", "ppipppppif");
    static final Entry BIAS_ACT = new Entry(FORWARD, "bias_act", "pppiii");
    static final Entry ADD_LAYERNORM = new Entry(FORWARD, "add_layernorm", "pppppif");
    static final Entry SOFTMAX_ROWS = new Entry(FORWARD, "softmax_rows", "pli");
    static final Entry ATTENTION_PACKED = new Entry(FORWARD, "attention_packed", "pppppiif");
    static final Entry POOL_ROWS = new Entry(FORWARD, "pool_rows", "pppii");
    static final Entry L2_NORMALIZE = new Entry(FORWARD, "l2_normalize", "pi");
    // lora.cu
    static final Entry LORA_SHRINK = new Entry(LORA, "lora_shrink", "ppSiiifl");
    static final Entry LORA_EXPAND = new Entry(LORA, "lora_expand", "ppSiiifl");
    static final Entry LORA_GRAD_A = new Entry(LORA, "lora_grad_a", "Sppiifl");
    static final Entry LORA_GRAD_B = new Entry(LORA, "lora_grad_b", "Sppii");
    // backward.cu
    static final Entry GELU_BACKWARD = new Entry(BACKWARD, "gelu_backward", "pppl");
    static final Entry ADD_LAYERNORM_BACKWARD = new Entry(BACKWARD, "add_layernorm_backward", "pppppif");
    static final Entry POOL_BACKWARD = new Entry(BACKWARD, "pool_backward", "pppii");
    static final Entry L2_NORMALIZE_BACKWARD = new Entry(BACKWARD, "l2_normalize_backward", "pppi");
    static final Entry ADD_INPLACE = new Entry(BACKWARD, "add_inplace", "ppl");
    static final Entry ATTENTION_BACKWARD_PROBS = new Entry(BACKWARD, "attention_backward_probs", "pppppppiiif");
    static final Entry ATTENTION_BACKWARD_GRADS = new Entry(BACKWARD, "attention_backward_grads", "pppppppppiii");

    static final List<Entry> ALL = List.of(
            EMBED_LAYERNORM, BIAS_ACT, ADD_LAYERNORM, SOFTMAX_ROWS, ATTENTION_PACKED, POOL_ROWS, L2_NORMALIZE,
            LORA_SHRINK, LORA_EXPAND, LORA_GRAD_A, LORA_GRAD_B,
            GELU_BACKWARD, ADD_LAYERNORM_BACKWARD, POOL_BACKWARD, L2_NORMALIZE_BACKWARD, ADD_INPLACE,
            ATTENTION_BACKWARD_PROBS, ATTENTION_BACKWARD_GRADS);

    // Launch geometry shared with the .cu sources (same names there).
    static final int ROW_THREADS = 256;    // forward.cu / backward.cu: threads per row block
    static final int ATT_WARPS = 8;        // query rows per attention block
    static final int ATT_TILE = 32;        // keys per shared-memory tile in attention_packed
    static final int ATT_MAX_D = 128;      // largest head width attention_packed handles
    static final int SHRINK_ROWS = 16;     // lora.cu
    static final int EXPAND_ROWS = 16;     // lora.cu

    /** Class-path resource of a module's PTX. */
    static String resource(String module) { return "/rrj/engine/cuda/" + module + ".ptx"; }

    /** A module's PTX text, as committed. */
    static String ptx(String module) {
        try (InputStream in = Kernels.class.getResourceAsStream(resource(module))) {
            if (in == null) throw new IllegalStateException("missing class-path resource " + resource(module) + " (the engine jar is incomplete)");
            return new String(in.readAllBytes(), StandardCharsets.US_ASCII);
        } catch (IOException e) {
            throw new UncheckedIOException("reading " + resource(module), e);
        }
    }

    /** The PTX ISA version a module declares (its {@code .version} line), e.g. "9.0". */
    static String isaVersion(String ptx) { return directive(ptx, ".version"); }

    /** The target a module declares (its {@code .target} line), e.g. "sm_80". */
    static String target(String ptx) { return directive(ptx, ".target"); }

    private static String directive(String ptx, String name) {
        for (String line : ptx.split("\n")) {
            String t = line.strip();
            if (t.startsWith(name + " ")) return t.substring(name.length()).strip();
        }
        return "?";
    }
}
