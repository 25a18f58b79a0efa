package rrj.router;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Slow (minutes): all-MiniLM-L6-v2's published MTEB nDCG@10 on SciFact and ArguAna within
 * ±0.5, through {@link MtebCheck}. Needs the converted model (`./rr embed x` converts it into
 * the cache on first use; or -Drrj.minilm=DIR); fails, never skips, when it is missing.
 * Run with {@code mvn -pl router -am test -Pslow -Dtest=MtebCheckTest}.
 */
@Tag("slow")
class MtebCheckTest {
    @Test
    void miniLmMatchesPublishedFigures() throws Exception {
        Path model = Path.of(System.getProperty("rrj.minilm",
                Path.of(System.getProperty("user.home"), ".cache", "rrj", "models", "all-minilm-l6-v2").toString()));
        assertTrue(Files.isRegularFile(model.resolve("model.safetensors")),
                model + " has no converted model: run `./rr embed hello` once (it converts all-MiniLM-L6-v2 into the cache) or pass -Drrj.minilm=DIR");
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        int code = MtebCheck.run(new String[]{"--model", model.toString(), "--scifact", "../data/scifact", "--arguana", "../data/arguana"},
                new PrintStream(out, true, StandardCharsets.UTF_8), System.err);
        System.out.print(out.toString(StandardCharsets.UTF_8));
        assertEquals(0, code, out.toString(StandardCharsets.UTF_8));
    }
}
