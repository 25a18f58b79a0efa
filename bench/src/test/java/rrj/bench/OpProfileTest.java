package rrj.bench;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The ORT side of {@code rr bench --profile}: which profile events count, and how they are grouped. */
class OpProfileTest {
    @TempDir Path dir;

    static String node(String name, String op, double ts, double dur) {
        return "{\"cat\": \"Node\", \"name\": \"" + name + "\", \"ts\": " + ts + ", \"dur\": " + dur + ", \"args\": {\"op_name\": \"" + op + "\"}}";
    }

    static String run(double ts, double dur) {
        return "{\"cat\": \"Session\", \"name\": \"model_run\", \"ts\": " + ts + ", \"dur\": " + dur + "}";
    }

    @Test
    void countsTheKernelTimesOfTheLastRunsAndFoldsTheLayers() throws Exception {
        Path f = dir.resolve("ort.json");
        Files.writeString(f, "[" + String.join(",\n",
                run(0, 100), run(200, 100), run(400, 100),
                node("/encoder/layer.0/attention/self/query/MatMul_kernel_time", "MatMul", 50, 1000),  // the untimed first run
                node("/encoder/layer.0/attention/self/query/MatMul_kernel_time", "MatMul", 250, 10),
                node("/encoder/layer.1/attention/self/query/MatMul_kernel_time", "MatMul", 260, 20.5),
                node("/encoder/layer.0/attention/self/query/MatMul_fence_before", "MatMul", 251, 7),   // not a kernel time
                node("BiasGelu_token_5_kernel_time", "BiasGelu", 450, 5),
                node("BiasGelu_kernel_time", "BiasGelu", 460, 4),
                node("/encoder/layer.2/output/Add_kernel_time", "Add", 350, 9)) + "]");       // between two runs
        Map<String, OpProfile.Sum> rows = new HashMap<>();
        OpProfile.ortNodes(f, 2, rows);
        assertEquals(2, rows.size(), rows.keySet().toString());
        OpProfile.Sum q = rows.get("MatMul encoder/layer.N/attention/self/query/MatMul");
        assertEquals(30_500, q.nanos);
        assertEquals(2, q.calls);
        OpProfile.Sum g = rows.get("BiasGelu BiasGelu");
        assertEquals(9_000, g.nanos);
        assertEquals(2, g.calls);
    }

    @Test
    void aProfileThatIsNotWhatOrtWritesIsAnErrorNamingTheFile() throws Exception {
        Path f = dir.resolve("bad.json");
        Files.writeString(f, "{\"cat\": \"Node\"}");
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> OpProfile.ortNodes(f, 1, new HashMap<>()));
        assertTrue(e.getMessage().contains(f.toString()), e.getMessage());
        Files.writeString(f, "[" + run(0, 10) + "]");
        e = assertThrows(IllegalStateException.class, () -> OpProfile.ortNodes(f, 2, new HashMap<>()));
        assertTrue(e.getMessage().contains("1 model runs, expected at least 2"), e.getMessage());
    }
}
