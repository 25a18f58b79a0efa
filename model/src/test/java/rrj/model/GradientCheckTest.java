package rrj.model;

import org.junit.jupiter.api.Test;
import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.engine.Batch;
import rrj.engine.Lora;
import rrj.engine.ReferenceBackend;
import rrj.engine.Tensor;

import java.lang.foreign.Arena;
import java.util.Map;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The backward pass against central finite differences: a tiny random BERT (2 layers, 32
 * hidden), LoRA on every target module, InfoNCE over fixed documents. In a float64 reference
 * run every LoRA gradient element and the input-activation gradient agree within 1e-4
 * relative; CpuBackend's fp32 gradients agree with the same finite differences within 1e-2.
 */
class GradientCheckTest {
    static final BertConfig CFG = new BertConfig(60, 32, 2, 4, 64, 16, 2, 1e-12);
    static final double TAU = 0.05;
    static final int[] LENS = {5, 3, 6};
    static final int[] IDS = {2, 17, 33, 5, 8, 2, 40, 8, 2, 11, 59, 23, 7, 8};

    /** A model + LoRA setup on one backend; loss(…) runs forward + InfoNCE, grads(…) also backward. */
    static final class Setup {
        final Backend be;
        final Bert bert;
        final Lora[][] lora;
        final Tensor[][] gA, gB; // [layer][target]
        final Bert.Trace tr;
        final Batch batch = new Batch(3).set(LENS, 3);
        final double[][] docs;
        final boolean normalize;
        final Backend.Pooling mode;

        Setup(Backend be, Map<String, Tensor> weights, Tensor[][][] ab, float dropout, boolean normalize, Backend.Pooling mode, double[][] docs) {
            this.be = be;
            this.normalize = normalize;
            this.mode = mode;
            this.docs = docs;
            bert = Bert.load(CFG, weights, "tiny", be);
            int L = CFG.numLayers(), T = Bert.Target.values().length;
            lora = new Lora[L][T];
            gA = new Tensor[L][T];
            gB = new Tensor[L][T];
            for (int l = 0; l < L; l++)
                for (int t = 0; t < T; t++) {
                    Tensor a = be.weight(ab[l][t][0]), b = be.weight(ab[l][t][1]);
                    lora[l][t] = new Lora(1);
                    lora[l][t].add(0, 14, a, b, 2.5f);
                    lora[l][t].dropout = dropout;
                    lora[l][t].seed = 1000 + 17L * (l * T + t);
                    gA[l][t] = be.allocate(a.shape());
                    gB[l][t] = be.allocate(b.shape());
                    lora[l][t].setGrad(0, gA[l][t], gB[l][t]);
                }
            tr = bert.newTrace(14, 3);
        }

        double[][] pooled() {
            Tensor p = bert.pool(tr, batch, mode, normalize);
            double[][] q = new double[3][32];
            for (int i = 0; i < 3; i++) for (int k = 0; k < 32; k++) q[i][k] = p.getDouble(i * 32L + k);
            return q;
        }

        double loss() {
            bert.forward(IDS, batch, lora, bert.weights, tr);
            return InfoNce.lossAndGrad(pooled(), docs, TAU, null);
        }

        /** Runs forward + backward; LoRA gradients land in gA/gB; returns dL/d(input). */
        double[] grads() {
            for (Tensor[] row : gA) for (Tensor t : row) zero(t);
            for (Tensor[] row : gB) for (Tensor t : row) zero(t);
            bert.forward(IDS, batch, lora, bert.weights, tr);
            double[][] dq = new double[3][32];
            InfoNce.lossAndGrad(pooled(), docs, TAU, dq);
            float[] flat = new float[96];
            for (int i = 0; i < 3; i++) for (int k = 0; k < 32; k++) flat[i * 32 + k] = (float) dq[i][k];
            if (be instanceof ReferenceBackend) { // keep double precision in the f64 run
                for (int i = 0; i < 96; i++) tr.dPooled.data.setAtIndex(Tensor.F64, i, dq[i / 32][i % 32]);
            } else be.write(flat, 0, tr.dPooled, 0, 96);
            Tensor dIn = bert.backward(tr, batch, lora, bert.weights, mode, normalize);
            double[] out = new double[14 * 32];
            for (int i = 0; i < out.length; i++) out[i] = dIn.getDouble(i);
            return out;
        }

        void zero(Tensor t) { for (long i = 0; i < t.numel(); i++) setD(t, i, 0); }

        static void setD(Tensor t, long i, double v) {
            if (t.dtype == rrj.engine.DType.F64) t.data.setAtIndex(Tensor.F64, i, v); else t.data.setAtIndex(Tensor.F32, i, (float) v);
        }
    }

    @Test
    void loraAndInputGradientsMatchFiniteDifferences() {
        for (float dropout : new float[]{0f, 0.1f}) {
            for (boolean normalize : new boolean[]{true, false}) {
                Backend.Pooling mode = normalize ? Backend.Pooling.MEAN : Backend.Pooling.CLS;
                check(dropout, normalize, mode);
            }
        }
    }

    void check(float dropout, boolean normalize, Backend.Pooling mode) {
        String what = "dropout=" + dropout + " normalize=" + normalize + " pooling=" + mode;
        Map<String, Tensor> w = RandomBert.weights(CFG, 5);
        SplittableRandom r = new SplittableRandom(6);
        int L = CFG.numLayers(), T = Bert.Target.values().length;
        Tensor[][][] ab = new Tensor[L][T][2];
        for (int l = 0; l < L; l++)
            for (Bert.Target t : Bert.Target.values()) {
                int in = t == Bert.Target.OUTPUT ? 64 : 32, out = t == Bert.Target.INTERMEDIATE ? 64 : 32;
                int rank = 1 + (l + t.ordinal()) % 3;
                ab[l][t.ordinal()][0] = RandomBert.normal(Arena.ofAuto(), r, 0, 0.3, rank, in);
                ab[l][t.ordinal()][1] = RandomBert.normal(Arena.ofAuto(), r, 0, 0.3, out, rank);
            }
        double[][] docs = new double[3][32];
        for (double[] d : docs) for (int k = 0; k < 32; k++) d[k] = r.nextGaussian() * (normalize ? 0.2 : 0.02);

        Setup f64 = new Setup(new ReferenceBackend(true), w, ab, dropout, normalize, mode, docs);
        double[] dIn = f64.grads();
        try (Backend cpu = Backends.create("cpu", 2)) {
            Setup f32 = new Setup(cpu, w, ab, dropout, normalize, mode, docs);
            double[] dIn32 = f32.grads();
            double h = 1e-5;
            double worst64 = 0, worst32 = 0;
            int checked = 0;
            for (int l = 0; l < L; l++)
                for (int t = 0; t < T; t++)
                    for (int which = 0; which < 2; which++) {
                        Tensor p = f64.lora[l][t].a[0];
                        if (which == 1) p = f64.lora[l][t].b[0];
                        Tensor g64 = which == 0 ? f64.gA[l][t] : f64.gB[l][t], g32 = which == 0 ? f32.gA[l][t] : f32.gB[l][t];
                        double scaleRef = 0;
                        double[] fd = new double[(int) p.numel()];
                        for (int i = 0; i < fd.length; i++) {
                            double x0 = p.getDouble(i);
                            Setup.setD(p, i, x0 + h);
                            double lp = f64.loss();
                            Setup.setD(p, i, x0 - h);
                            double lm = f64.loss();
                            Setup.setD(p, i, x0);
                            fd[i] = (lp - lm) / (2 * h);
                            scaleRef = Math.max(scaleRef, Math.abs(fd[i]));
                        }
                        for (int i = 0; i < fd.length; i++) {
                            double floor = Math.max(Math.abs(fd[i]), 1e-3 * scaleRef) + 1e-12;
                            double e64 = Math.abs(g64.getDouble(i) - fd[i]) / floor, e32 = Math.abs(g32.getDouble(i) - fd[i]) / floor;
                            String at = what + " layer " + l + " " + Bert.Target.values()[t] + (which == 0 ? " dA" : " dB") + "[" + i + "]";
                            assertTrue(e64 <= 1e-4, at + ": f64 analytic " + g64.getDouble(i) + " vs finite difference " + fd[i] + " (rel " + e64 + ")");
                            assertTrue(e32 <= 1e-2, at + ": fp32 cpu " + g32.getDouble(i) + " vs finite difference " + fd[i] + " (rel " + e32 + ")");
                            worst64 = Math.max(worst64, e64);
                            worst32 = Math.max(worst32, e32);
                            checked++;
                        }
                    }
            // the input-activation gradient: perturb the embedding output element by element
            Tensor delta = f64.be.allocate(14, 32);
            f64.tr.inputDelta = delta;
            double scaleRef = 0;
            double[] fd = new double[dIn.length];
            for (int i = 0; i < fd.length; i++) {
                Setup.setD(delta, i, h);
                double lp = f64.loss();
                Setup.setD(delta, i, -h);
                double lm = f64.loss();
                Setup.setD(delta, i, 0);
                fd[i] = (lp - lm) / (2 * h);
                scaleRef = Math.max(scaleRef, Math.abs(fd[i]));
            }
            for (int i = 0; i < fd.length; i++) {
                double floor = Math.max(Math.abs(fd[i]), 1e-3 * scaleRef) + 1e-12;
                assertTrue(Math.abs(dIn[i] - fd[i]) / floor <= 1e-4, what + " dInput[" + i + "]: f64 " + dIn[i] + " vs finite difference " + fd[i]);
                assertTrue(Math.abs(dIn32[i] - fd[i]) / floor <= 1e-2, what + " dInput[" + i + "]: fp32 " + dIn32[i] + " vs finite difference " + fd[i]);
                worst64 = Math.max(worst64, Math.abs(dIn[i] - fd[i]) / floor);
                worst32 = Math.max(worst32, Math.abs(dIn32[i] - fd[i]) / floor);
            }
            System.out.printf("%s: %d LoRA + %d input gradient elements, worst relative error f64 %.2e, fp32 %.2e%n",
                    what, checked, fd.length, worst64, worst32);
        }
    }

    @Test
    void zeroBGivesTheBaseModelExactly() {
        Map<String, Tensor> w = RandomBert.weights(CFG, 5);
        try (Backend cpu = Backends.create("cpu", 2)) {
            Bert bert = Bert.load(CFG, w, "tiny", cpu);
            Batch batch = new Batch(3).set(LENS, 3);
            float[] base = new float[14 * 32], with = new float[14 * 32];
            cpu.read(bert.forward(IDS, batch, null), 0, base, 0, base.length);
            Lora[][] lora = new Lora[2][Bert.Target.values().length];
            SplittableRandom r = new SplittableRandom(1);
            for (Lora[] row : lora)
                for (Bert.Target t : Bert.Target.values()) {
                    int in = t == Bert.Target.OUTPUT ? 64 : 32, out = t == Bert.Target.INTERMEDIATE ? 64 : 32;
                    row[t.ordinal()] = new Lora(1);
                    row[t.ordinal()].add(0, 14, cpu.weight(RandomBert.normal(Arena.ofAuto(), r, 0, 1, 8, in)), cpu.allocate(out, 8), 4f);
                }
            cpu.read(bert.forward(IDS, batch, lora), 0, with, 0, with.length);
            org.junit.jupiter.api.Assertions.assertArrayEquals(base, with);
        }
    }
}
