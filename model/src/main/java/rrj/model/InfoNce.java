package rrj.model;

/**
 * InfoNCE with in-batch negatives over dot products (DESIGN.md §2; Contriever's loss):
 * {@code s_ij = q_i·d_j / τ}, {@code loss = mean_i (logsumexp_j s_ij − s_ii)}, where document
 * {@code i} is query {@code i}'s positive and every other document of the batch a negative.
 * Computed in double on the host: B × B logits are tiny next to the encoder.
 */
public final class InfoNce {
    private InfoNce() {}

    /**
     * Returns the loss and writes dL/dq into {@code dq} [B][C] (documents get no gradient: the
     * document encoder is frozen).
     */
    public static double lossAndGrad(double[][] q, double[][] d, double temperature, double[][] dq) {
        int b = q.length, nd = d.length, c = q[0].length;
        double loss = 0;
        double[] p = new double[nd];
        for (int i = 0; i < b; i++) {
            double max = Double.NEGATIVE_INFINITY;
            for (int j = 0; j < nd; j++) {
                double s = 0;
                for (int k = 0; k < c; k++) s += q[i][k] * d[j][k];
                p[j] = s / temperature;
                max = Math.max(max, p[j]);
            }
            double sum = 0;
            for (int j = 0; j < nd; j++) sum += Math.exp(p[j] - max);
            double lse = max + Math.log(sum);
            loss += lse - p[i];
            if (dq != null) {
                java.util.Arrays.fill(dq[i], 0);
                for (int j = 0; j < nd; j++) {
                    double g = (Math.exp(p[j] - lse) - (i == j ? 1 : 0)) / (temperature * b);
                    for (int k = 0; k < c; k++) dq[i][k] += g * d[j][k];
                }
            }
        }
        return loss / b;
    }
}
