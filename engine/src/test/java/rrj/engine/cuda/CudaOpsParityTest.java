package rrj.engine.cuda;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import rrj.engine.Backend;
import rrj.engine.Batch;
import rrj.engine.Check;
import rrj.engine.Lora;
import rrj.engine.ReferenceBackend;
import rrj.engine.Tensor;

import java.util.Arrays;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static rrj.engine.cuda.GpuFixtures.all;
import static rrj.engine.cuda.GpuFixtures.copyTo;
import static rrj.engine.cuda.GpuFixtures.rand;
import static rrj.engine.cuda.GpuFixtures.rows;

/**
 * Every forward op of CudaBackend against ReferenceBackend (the spec) on awkward shapes:
 * tails past every tile size, length-1 sequences, rank-1 and rank-64 LoRA, overlapping and
 * gapped segments, more segments than one launch takes, both attention paths. Needs a GPU
 * ({@code -Pgpu}); fails without one.
 */
@Tag("gpu")
class CudaOpsParityTest {
    static Backend cuda;
    static final Backend REF = new ReferenceBackend();

    @BeforeAll
    static void open() { cuda = GpuFixtures.cuda(); }

    @AfterAll
    static void close() { if (cuda != null) cuda.close(); }

    static float[] runLinear(Backend be, Tensor x, Tensor w, Tensor bias, int m, int out, boolean gelu, Lora lora) {
        Tensor y = be.allocate(m + 3, out); // spare rows: the op must leave rows ≥ m alone
        be.linear(y, copyTo(be, x), m, be.weight(w), bias == null ? null : be.weight(bias), lora, gelu);
        return rows(be, y, m);
    }

    /** The same segments with A and B made resident on {@code be}. */
    static Lora on(Backend be, Lora l) {
        Lora c = new Lora(l.count);
        for (int s = 0; s < l.count; s++) c.add(l.rowStart[s], l.rowEnd[s], be.weight(l.a[s]), be.weight(l.b[s]), l.scale[s]);
        c.dropout = l.dropout;
        c.seed = l.seed;
        return c;
    }

    @Test
    void linearMatchesReferenceOnOddShapes() {
        Random r = new Random(1);
        int[][] shapes = {{1, 1, 1}, {1, 7, 3}, {2, 9, 5}, {5, 17, 13}, {6, 16, 16}, {7, 64, 66}, {12, 33, 32},
                {16, 384, 384}, {13, 100, 129}, {31, 768, 67}, {97, 48, 200}, {130, 65, 17}, {50, 1700, 40}, {3, 768, 3072}};
        for (int[] s : shapes) {
            int m = s[0], in = s[1], out = s[2];
            Tensor x = rand(r, 1, m, in), w = rand(r, 0.2f, out, in), b = rand(r, 1, out);
            for (boolean gelu : new boolean[]{false, true})
                for (Tensor bias : new Tensor[]{null, b})
                    Check.close("linear " + m + "x" + in + "x" + out + " gelu=" + gelu + " bias=" + (bias != null),
                            runLinear(cuda, x, w, bias, m, out, gelu, null), runLinear(REF, x, w, bias, m, out, gelu, null), 1e-4, 1e-4);
        }
    }

    @Test
    void linearWithLoraSegmentsMatchesReference() {
        Random r = new Random(2);
        for (int in : new int[]{29, 768})
            for (int out : new int[]{37, 300}) {
                int m = 70;
                Tensor x = rand(r, 1, m, in), w = rand(r, 0.2f, out, in), b = rand(r, 1, out);
                Lora l = new Lora(1);
                l.add(0, 1, rand(r, 0.3f, 1, in), rand(r, 0.3f, out, 1), 4f);       // rank 1, one row
                l.add(3, 37, rand(r, 0.3f, 8, in), rand(r, 0.3f, out, 8), 2f);      // rank 8 over three 16-row tiles, after a gap
                l.add(30, 50, rand(r, 0.1f, 64, in), rand(r, 0.1f, out, 64), 0.5f); // rank 64, overlaps: rows 30-36 stay with the first
                l.add(60, 99, rand(r, 0.3f, 3, in), rand(r, 0.3f, out, 3), 9f);     // runs past the rows given
                for (boolean gelu : new boolean[]{false, true})
                    Check.close("lora in=" + in + " out=" + out + " gelu=" + gelu,
                            runLinear(cuda, x, w, b, m, out, gelu, on(cuda, l)), runLinear(REF, x, w, b, m, out, gelu, l), 1e-4, 1e-4);
                // fewer rows than the segments cover
                Check.close("lora rows=2", runLinear(cuda, x, w, b, 2, out, false, on(cuda, l)), runLinear(REF, x, w, b, 2, out, false, l), 1e-4, 1e-4);
            }
    }

    @Test
    void moreSegmentsThanOneLaunchTakes() {
        Random r = new Random(3);
        int m = 90, in = 40, out = 24;
        Tensor x = rand(r, 1, m, in), w = rand(r, 0.2f, out, in);
        Lora l = new Lora(1);
        for (int s = 0; s < 45; s++) l.add(2 * s, 2 * s + 1 + s % 2, rand(r, 0.3f, 1 + s % 5, in), rand(r, 0.3f, out, 1 + s % 5), 1f + s);
        Check.close("45 segments", runLinear(cuda, x, w, null, m, out, false, on(cuda, l)), runLinear(REF, x, w, null, m, out, false, l), 1e-4, 1e-4);
    }

    @Test
    void loraMatricesChangedInPlaceAreSeen() {
        Random r = new Random(4);
        int m = 9, in = 24, out = 40;
        Tensor x = rand(r, 1, m, in), w = rand(r, 0.2f, out, in);
        Tensor a = rand(r, 0.3f, 8, in), b = rand(r, 0.3f, out, 8);
        Tensor ca = cuda.weight(a), cb = cuda.weight(b);
        Lora onCuda = new Lora(1), onRef = new Lora(1);
        onCuda.add(0, m, ca, cb, 4f);
        onRef.add(0, m, a, b, 4f);
        Check.close("before", runLinear(cuda, x, w, null, m, out, false, onCuda), runLinear(REF, x, w, null, m, out, false, onRef), 1e-4, 1e-4);
        for (long i = 0; i < b.numel(); i++) { b.setFloat(i, b.getFloat(i) * -2f + 0.01f); cb.setFloat(i, b.getFloat(i)); } // a trainer's in-place step
        Check.close("after an in-place update", runLinear(cuda, x, w, null, m, out, false, onCuda),
                runLinear(REF, x, w, null, m, out, false, onRef), 1e-4, 1e-4);
    }

    @Test
    void weightLeavesTheCallersTensorAlone() {
        Random r = new Random(5);
        Tensor w = rand(r, 0.2f, 5, 4);
        float[] before = w.toFloatArray();
        runLinear(cuda, rand(r, 1, 3, 4), w, null, 3, 5, false, null);
        assertNull(w.device, "weight() must not mutate the caller's tensor");
        assertArrayEquals(before, w.toFloatArray());
    }

    @Test
    void attentionMatchesReferenceOnBothPaths() {
        Random r = new Random(6);
        int[][] uniform = {{1}, {1, 1, 1}, {5}, {7, 7, 7}, {64, 64}, {130}, {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9}}; // cuBLAS path
        int[][] mixed = {{3, 1, 17, 2}, {64, 9}, {4, 8, 12, 33}, {1, 40}, {33, 32, 31}};                                 // packed kernel
        for (int[] hd : new int[][]{{1, 7}, {2, 7}, {12, 32}, {3, 64}, {2, 33}, {1, 12}, {2, 128}, {1, 160}}) {
            int heads = hd[0], d = hd[1], c = heads * d;
            for (int[][] set : new int[][][]{uniform, mixed})
                for (int[] lens : set) {
                    Batch batch = new Batch(lens.length).set(lens, lens.length);
                    int n = batch.tokens;
                    Tensor q = rand(r, 1, n, c), k = rand(r, 1, n, c), v = rand(r, 1, n, c);
                    Check.close("attention heads=" + heads + " d=" + d + " lens=" + Arrays.toString(lens),
                            runAttention(cuda, q, k, v, batch, heads), runAttention(REF, q, k, v, batch, heads), 1e-4, 1e-4);
                }
        }
    }

    static float[] runAttention(Backend be, Tensor q, Tensor k, Tensor v, Batch batch, int heads) {
        Tensor out = be.allocate(q.shape());
        be.attention(out, copyTo(be, q), copyTo(be, k), copyTo(be, v), batch, heads);
        return rows(be, out, batch.tokens);
    }

    @Test
    void rowOpsMatchReference() {
        Random r = new Random(7);
        for (int c : new int[]{1, 3, 37, 384, 768, 1000}) {
            int[] lens = {1, 4, 2, 9, 1};
            Batch batch = new Batch(5).set(lens, 5);
            int n = batch.tokens;
            Tensor x = rand(r, 2, n, c), res = rand(r, 2, n, c), g = rand(r, 1, c), b = rand(r, 1, c);
            float[][] got = new float[2][];
            for (int i = 0; i < 2; i++) {
                Backend be = i == 0 ? cuda : REF;
                Tensor out = be.allocate(n, c);
                be.addLayerNorm(out, copyTo(be, x), copyTo(be, res), n, be.weight(g), be.weight(b), 1e-12f);
                got[i] = rows(be, out, n);
            }
            Check.close("addLayerNorm c=" + c, got[0], got[1], 1e-4, 1e-4);
            Tensor resCopy = copyTo(cuda, res); // in place on the residual, as Bert.forward uses it
            cuda.addLayerNorm(resCopy, copyTo(cuda, x), resCopy, n, cuda.weight(g), cuda.weight(b), 1e-12f);
            Check.close("addLayerNorm in place c=" + c, rows(cuda, resCopy, n), got[1], 1e-4, 1e-4);
            for (Backend.Pooling mode : Backend.Pooling.values()) {
                for (int i = 0; i < 2; i++) {
                    Backend be = i == 0 ? cuda : REF;
                    Tensor p = be.allocate(5, c);
                    be.pool(p, copyTo(be, x), batch, mode);
                    got[i] = rows(be, p, 5);
                }
                Check.close("pool " + mode + " c=" + c, got[0], got[1], 1e-5, 1e-5);
            }
            Tensor z = x.toF32();
            for (int j = 0; j < c; j++) z.setFloat(j, 0f); // a zero row stays zero
            for (int i = 0; i < 2; i++) {
                Backend be = i == 0 ? cuda : REF;
                Tensor p = copyTo(be, z);
                be.l2Normalize(p, n - 1);
                got[i] = all(be, p);
            }
            Check.close("l2 c=" + c, got[0], got[1], 1e-6, 1e-5);
        }
    }

    @Test
    void embedMatchesReference() {
        Random r = new Random(8);
        int vocab = 50, c = 769, maxPos = 16;
        Tensor word = rand(r, 1, vocab, c), pos = rand(r, 1, maxPos, c), type = rand(r, 1, 2, c), g = rand(r, 1, c), b = rand(r, 1, c);
        int[] lens = {3, 1, 5};
        Batch batch = new Batch(3).set(lens, 3);
        int[] ids = new int[9], positions = new int[9], types = new int[9];
        for (int i = 0; i < 9; i++) { ids[i] = r.nextInt(vocab); types[i] = r.nextInt(2); }
        for (int s = 0, p = 0; s < 3; s++) for (int i = 0; i < lens[s]; i++) positions[p++] = i;
        float[][] got = new float[2][];
        for (int i = 0; i < 2; i++) {
            Backend be = i == 0 ? cuda : REF;
            Tensor out = be.allocate(9, c);
            be.embed(out, ids, positions, types, batch, be.weight(word), be.weight(pos), be.weight(type), be.weight(g), be.weight(b), 1e-12f);
            got[i] = rows(be, out, 9);
        }
        Check.close("embed", got[0], got[1], 1e-4, 1e-4);
        ids[4] = vocab;
        assertThrows(IllegalArgumentException.class, () -> cuda.embed(cuda.allocate(9, c), ids, positions, types, batch,
                cuda.weight(word), cuda.weight(pos), cuda.weight(type), cuda.weight(g), cuda.weight(b), 1e-12f), "id past the vocabulary");
    }

    @Test
    void readWriteCopyAddAtOffsets() {
        Tensor t = cuda.allocate(4, 5), u = cuda.allocate(4, 5);
        assertArrayEquals(new float[20], all(cuda, t), "allocate zeroes");
        float[] src = new float[30];
        for (int i = 0; i < src.length; i++) src[i] = i + 0.5f;
        cuda.write(src, 3, t, 7, 9);
        float[] got = new float[12];
        cuda.read(t, 5, got, 1, 11);
        float[] want = new float[12];
        for (int i = 0; i < 9; i++) want[1 + 2 + i] = src[3 + i];
        assertArrayEquals(want, got);
        cuda.copy(u, t, 20);
        cuda.add(u, t, 20);
        float[] tv = all(cuda, t), uv = all(cuda, u);
        for (int i = 0; i < 20; i++) assertArrayEquals(new float[]{2 * tv[i]}, new float[]{uv[i]}, "element " + i);
        assertThrows(IndexOutOfBoundsException.class, () -> cuda.read(t, 15, new float[10], 0, 10));
        assertThrows(IllegalArgumentException.class, () -> cuda.l2Normalize(Tensor.allocate(null, 2, 2), 2), "a host tensor is not an activation");
        assertThrows(IllegalArgumentException.class,
                () -> cuda.linear(cuda.allocate(2, 2), cuda.allocate(2, 2), 2, Tensor.allocate(null, 2, 2), null, null, false),
                "a weight that did not go through weight()");
    }
}
