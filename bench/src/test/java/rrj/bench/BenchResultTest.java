package rrj.bench;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** rr bench's summary: the ratio of the medians and the paired (same-round) ratios. */
class BenchResultTest {
    @TempDir Path dir;

    @Test
    void pairedRatiosComeFromTheSameRoundNotFromTheMedians() {
        // the machine slows down mid-run: both engines' times double together
        BenchMain.Result r = new BenchMain.Result("b", "batch", 32, 1e9,
                new double[]{10, 10, 20, 20, 20}, new double[]{8, 8, 16, 16, 16}, 0, 0, null);
        assertArrayEquals(new double[]{0.8, 0.8, 0.8, 0.8, 0.8}, r.paired(), 1e-12);
        assertEquals(0.8, r.ratio(), 1e-12);
        // rounds out of step: the ratio of medians and the paired median differ
        BenchMain.Result s = new BenchMain.Result("b", "batch", 32, 1e9,
                new double[]{10, 20, 30}, new double[]{30, 10, 15}, 0, 0, null);
        assertEquals(15 / 20.0, s.ratio(), 1e-12);
        assertArrayEquals(new double[]{3, 0.5, 0.5}, s.paired(), 1e-12);
        // the corpus: its per-batch ratios are the pairs
        double[] perBatch = {1.1, 0.9};
        BenchMain.Result d = new BenchMain.Result("d", "corpus", 64, 1e9, new double[]{5, 6}, new double[]{5.5, 5.4}, 11, 10.9, perBatch);
        assertArrayEquals(perBatch, d.paired());
    }

    @Test
    void jsonCarriesThePairedRatio() throws Exception {
        BenchMain.Result r = new BenchMain.Result("c", "batch", 32, 1e9,
                new double[]{10, 20, 40}, new double[]{5, 30, 40}, 0, 0, null);
        Path f = dir.resolve("out.json");
        BenchMain.writeJson(f, List.of(r), 2, "cpu");
        String j = Files.readString(f);
        assertTrue(j.contains("\"ratio\": 1.5"), j);          // 30 / 20
        assertTrue(j.contains("\"paired_ratio\": 1,"), j);    // median of 0.5, 1.5, 1.0
        assertTrue(j.contains("\"paired_ratio_p25\""), j);
    }
}
