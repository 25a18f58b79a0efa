package rrj.convert;

import org.junit.jupiter.api.Test;
import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.engine.Check;
import rrj.engine.ReferenceBackend;
import rrj.engine.Tensor;
import rrj.model.Bert;
import rrj.model.BertConfig;
import rrj.model.Encoder;
import rrj.model.Json;
import rrj.model.LoraAdapter;
import rrj.model.RandomBert;
import rrj.model.Safetensors;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/** LoRA on a real model (all-MiniLM-L6-v2): fused = merged = reference, and a mixed batch equals each text alone. */
class LoraRealModelTest {

    static Path adapter(Path dir, BertConfig c, int r, List<String> targets, long seed) throws IOException {
        SplittableRandom rnd = new SplittableRandom(seed);
        Map<String, Tensor> t = new LinkedHashMap<>();
        for (int l = 0; l < c.numLayers(); l++)
            for (Bert.Target tg : Bert.Target.values()) {
                String module = "encoder.layer." + l + "." + tg.module;
                if (targets.stream().noneMatch(x -> module.endsWith("." + x))) continue;
                int in = tg == Bert.Target.OUTPUT ? c.intermediateSize() : c.hiddenSize();
                int out = tg == Bert.Target.INTERMEDIATE ? c.intermediateSize() : c.hiddenSize();
                t.put("base_model.model." + module + ".lora_A.weight", RandomBert.normal(Arena.ofAuto(), rnd, 0, 1 / Math.sqrt(in), r, in));
                t.put("base_model.model." + module + ".lora_B.weight", RandomBert.normal(Arena.ofAuto(), rnd, 0, 0.02, out, r));
            }
        Files.createDirectories(dir);
        Safetensors.write(dir.resolve("adapter_model.safetensors"), t, null);
        Files.writeString(dir.resolve("adapter_config.json"), Json.writePretty(LoraAdapter.peftConfig(r, 32, false, targets, "all-minilm-l6-v2")));
        return dir;
    }

    @Test
    void miniLmWithExperts() throws IOException {
        TestModels.Model m = TestModels.get("all-minilm-l6-v2", Backend.Pooling.MEAN, true);
        Path tmp = Files.createTempDirectory("lora-real");
        List<String> texts = List.of("what causes apoptosis", "a", "routing queries to experts improves retrieval",
                "Café au lait 中文", "the fourth text", "and the fifth one, a little longer than the rest of them");
        try (Backend cpu = Backends.create("cpu", 2);
             Encoder fast = Encoder.open(m.dir(), cpu, null, null, 128);
             Encoder ref = Encoder.open(m.dir(), new ReferenceBackend(), null, null, 128)) {
            BertConfig c = fast.bert.config;
            Path qv = adapter(tmp.resolve("qv"), c, 8, List.of("query", "value"), 1);
            Path all = adapter(tmp.resolve("all"), c, 64, List.of("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"), 2);
            for (Path p : List.of(qv, all)) {
                LoraAdapter onCpu = LoraAdapter.load("x", p, c, cpu, Arena.ofAuto());
                LoraAdapter onRef = LoraAdapter.load("x", p, c, ref.bert.backend(), Arena.ofAuto());
                LoraAdapter[] a = new LoraAdapter[texts.size()], b = new LoraAdapter[texts.size()];
                java.util.Arrays.fill(a, onCpu);
                java.util.Arrays.fill(b, onRef);
                float[][] want = ref.embed(texts, b);
                float[][] fused = fast.embed(texts, a);
                fast.loraMode = Encoder.LoraMode.MERGED;
                float[][] merged = fast.embed(texts, a);
                fast.loraMode = Encoder.LoraMode.FUSED;
                for (int i = 0; i < texts.size(); i++) {
                    Check.close(p.getFileName() + " fused vs reference, text " + i, fused[i], want[i], 1e-5, 1e-5);
                    Check.close(p.getFileName() + " merged vs reference, text " + i, merged[i], want[i], 1e-5, 1e-5);
                }
            }
            LoraAdapter e1 = LoraAdapter.load("e1", qv, c, cpu, Arena.ofAuto());
            LoraAdapter e2 = LoraAdapter.load("e2", all, c, cpu, Arena.ofAuto());
            LoraAdapter e3 = LoraAdapter.load("e3", adapter(tmp.resolve("k1"), c, 1, List.of("key"), 3), c, cpu, Arena.ofAuto());
            LoraAdapter[] mix = {e1, null, e3, e2, null, e1};
            float[][] mixed = fast.embed(texts, mix);
            for (int i = 0; i < texts.size(); i++)
                Check.close("mixed batch text " + i, mixed[i], fast.embed(List.of(texts.get(i)), new LoraAdapter[]{mix[i]})[0], 1e-6, 1e-6);
        }
    }
}
