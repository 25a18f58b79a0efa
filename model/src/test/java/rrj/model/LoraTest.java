package rrj.model;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.engine.Check;
import rrj.engine.ReferenceBackend;
import rrj.engine.Tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * LoRA experts: fused (CpuBackend) = merged weights = ReferenceBackend's literal
 * {@code W·x + b + s·B·(A·x)}, for ranks 1, 8, 64, every target module, rsLoRA on and off;
 * mixed-expert batches equal to each text run alone; PEFT files in and out; bad adapters.
 */
class LoraTest {
    static final BertConfig CFG = new BertConfig(30522, 48, 2, 4, 80, 64, 2, 1e-12);
    static Path tmp, modelDir;
    static Backend cpu;

    @BeforeAll
    static void setUp() throws IOException {
        tmp = Files.createTempDirectory("lora");
        modelDir = tmp.resolve("model");
        Files.createDirectories(modelDir);
        Safetensors.write(modelDir.resolve("model.safetensors"), RandomBert.weights(CFG, 21), null);
        Files.writeString(modelDir.resolve("config.json"), Json.writePretty(CFG.toMap()));
        Files.copy(Path.of("../data/test-fixtures/vocab.txt"), modelDir.resolve("vocab.txt"));
        cpu = Backends.create("cpu", 2);
    }

    @AfterAll
    static void tearDown() { cpu.close(); }

    static final List<String> ALL_TARGETS = List.of("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense");

    /** Writes a random PEFT adapter directory with PEFT's key names; returns it. */
    static Path writeAdapter(String name, BertConfig c, int r, double alpha, boolean rslora, List<String> targets, boolean bertPrefix,
                             long seed) throws IOException {
        SplittableRandom rnd = new SplittableRandom(seed);
        Map<String, Tensor> t = new LinkedHashMap<>();
        for (int l = 0; l < c.numLayers(); l++)
            for (Bert.Target tg : Bert.Target.values()) {
                String module = "encoder.layer." + l + "." + tg.module;
                boolean on = false;
                for (String x : targets) if (module.equals(x) || module.endsWith("." + x)) on = true;
                if (!on) continue;
                int in = tg == Bert.Target.OUTPUT ? c.intermediateSize() : c.hiddenSize();
                int out = tg == Bert.Target.INTERMEDIATE ? c.intermediateSize() : c.hiddenSize();
                String key = "base_model.model." + (bertPrefix ? "bert." : "") + module;
                // B is nonzero (a trained adapter); scaled so the LoRA term is a visible but moderate change
                t.put(key + ".lora_A.weight", RandomBert.normal(Arena.ofAuto(), rnd, 0, 1.0 / Math.sqrt(in), r, in));
                t.put(key + ".lora_B.weight", RandomBert.normal(Arena.ofAuto(), rnd, 0, 0.05, out, r));
            }
        Path dir = tmp.resolve(name);
        Files.createDirectories(dir);
        Safetensors.write(dir.resolve("adapter_model.safetensors"), t, Map.of("format", "pt"));
        Files.writeString(dir.resolve("adapter_config.json"), Json.writePretty(LoraAdapter.peftConfig(r, alpha, rslora, targets, "test")));
        return dir;
    }

    static List<String> texts() {
        return List.of("a short one", "the second text is a little longer than the first", "x",
                "retrieval with routing over experts", "café naïve 中文", "one more text for the batch");
    }

    @Test
    void fusedEqualsMergedEqualsReferenceForEveryRankTargetAndScale() throws IOException {
        try (Encoder ref = Encoder.open(modelDir, new ReferenceBackend(), null, null, 64);
             Encoder fast = Encoder.open(modelDir, cpu, null, null, 64)) {
            List<String> texts = texts();
            float[][] base = fast.embed(texts);
            int seed = 100;
            for (int r : new int[]{1, 8, 64}) {
                for (String target : ALL_TARGETS) {
                    for (boolean rs : new boolean[]{false, true}) {
                        Path dir = writeAdapter("a" + seed, CFG, r, 32, rs, List.of(target), false, seed++);
                        LoraAdapter onRef = LoraAdapter.load("x", dir, CFG, ref.bert.backend(), Arena.ofAuto());
                        LoraAdapter onCpu = LoraAdapter.load("x", dir, CFG, cpu, Arena.ofAuto());
                        float expectedScale = (float) (rs ? 32 / Math.sqrt(r) : 32.0 / r);
                        assertEquals(expectedScale, onCpu.scale[0][onCpu.targets().get(0).ordinal()], 1e-6);
                        LoraAdapter[] all = new LoraAdapter[texts.size()];
                        java.util.Arrays.fill(all, onRef);
                        float[][] want = ref.embed(texts, all);
                        java.util.Arrays.fill(all, onCpu);
                        fast.loraMode = Encoder.LoraMode.FUSED;
                        float[][] fused = fast.embed(texts, all);
                        fast.loraMode = Encoder.LoraMode.MERGED;
                        float[][] merged = fast.embed(texts, all);
                        fast.loraMode = Encoder.LoraMode.FUSED;
                        String what = "r=" + r + " target=" + target + " rslora=" + rs;
                        double change = 0;
                        for (int i = 0; i < texts.size(); i++) {
                            Check.close(what + " fused vs reference, text " + i, fused[i], want[i], 1e-5, 1e-5);
                            Check.close(what + " merged vs reference, text " + i, merged[i], want[i], 1e-5, 1e-5);
                            change = Math.max(change, Check.maxAbsDiff(fused[i], base[i]));
                        }
                        assertTrue(change > 1e-3, what + ": the adapter did not change the output (max change " + change + ")");
                    }
                }
            }
        }
    }

    @Test
    void mixedBatchOfThreeExpertsAndBaseRowsEqualsEachTextAlone() throws IOException {
        try (Encoder enc = Encoder.open(modelDir, cpu, null, null, 64);
             Encoder ref = Encoder.open(modelDir, new ReferenceBackend(), null, null, 64)) {
            LoraAdapter e1 = LoraAdapter.load("e1", writeAdapter("m1", CFG, 8, 32, false, List.of("query", "value"), false, 1), CFG, cpu, Arena.ofAuto());
            LoraAdapter e2 = LoraAdapter.load("e2", writeAdapter("m2", CFG, 1, 16, true, List.of("key", "output.dense"), true, 2), CFG, cpu, Arena.ofAuto());
            LoraAdapter e3 = LoraAdapter.load("e3", writeAdapter("m3", CFG, 64, 32, false, ALL_TARGETS, false, 3), CFG, cpu, Arena.ofAuto());
            List<String> texts = new ArrayList<>(texts());
            texts.addAll(List.of("seventh", "eighth text here", "ninth"));
            LoraAdapter[] choice = {e2, null, e1, e3, e1, null, e3, e2, e1}; // interleaved on purpose
            float[][] mixed = enc.embed(texts, choice);
            for (int i = 0; i < texts.size(); i++) {
                float[] alone = enc.embed(List.of(texts.get(i)), new LoraAdapter[]{choice[i]})[0];
                Check.close("text " + i + " (" + (choice[i] == null ? "base" : choice[i].name) + ") in a mixed batch vs alone", mixed[i], alone, 1e-6, 1e-6);
            }
            // and against the reference backend running the same mixed batch
            LoraAdapter[] refChoice = new LoraAdapter[choice.length];
            Map<LoraAdapter, LoraAdapter> onRef = new java.util.IdentityHashMap<>();
            for (int i = 0; i < choice.length; i++)
                if (choice[i] != null)
                    refChoice[i] = onRef.computeIfAbsent(choice[i], a -> {
                        try { return LoraAdapter.load(a.name, a.dir, CFG, ref.bert.backend(), Arena.ofAuto()); }
                        catch (IOException x) { throw new RuntimeException(x); }
                    });
            float[][] want = ref.embed(texts, refChoice);
            for (int i = 0; i < texts.size(); i++) Check.close("mixed batch text " + i + " vs reference", mixed[i], want[i], 1e-5, 1e-5);
            // and a small token budget splits the same work into several batches without changing anything
            enc.maxBatchTokens = 12;
            float[][] split = enc.embed(texts, choice);
            for (int i = 0; i < texts.size(); i++) Check.close("text " + i + " in small batches", split[i], mixed[i], 1e-6, 1e-6);
        }
    }

    @Test
    void zeroBGivesTheBaseModelExactly() throws IOException {
        Path dir = writeAdapter("zero", CFG, 8, 32, false, List.of("query", "value"), false, 9);
        Safetensors.File f = Safetensors.open(dir.resolve("adapter_model.safetensors"), Arena.ofAuto());
        Map<String, Tensor> zeroB = new LinkedHashMap<>();
        for (var e : f.tensors().entrySet())
            zeroB.put(e.getKey(), e.getKey().contains("lora_B") ? Tensor.allocate(null, e.getValue().shape()) : Tensor.of(e.getValue().toFloatArray(), e.getValue().shape()));
        Safetensors.write(dir.resolve("adapter_model.safetensors"), zeroB, null);
        try (Encoder enc = Encoder.open(modelDir, cpu, null, null, 64)) {
            LoraAdapter a = LoraAdapter.load("zero", dir, CFG, cpu, Arena.ofAuto());
            List<String> texts = texts();
            float[][] base = enc.embed(texts);
            LoraAdapter[] all = new LoraAdapter[texts.size()];
            java.util.Arrays.fill(all, a);
            float[][] with = enc.embed(texts, all);
            for (int i = 0; i < texts.size(); i++) assertArrayEquals(base[i], with[i], "text " + i);
        }
    }

    @Test
    void peftRoundTripAndHandBuiltFixture() throws IOException {
        // hand-built: PEFT's key names for a bert.-prefixed model, rank_pattern, alpha_pattern, layers_to_transform
        SplittableRandom rnd = new SplittableRandom(5);
        Map<String, Tensor> t = new LinkedHashMap<>();
        Tensor a0q = RandomBert.normal(Arena.ofAuto(), rnd, 0, 0.1, 4, 48), b0q = RandomBert.normal(Arena.ofAuto(), rnd, 0, 0.1, 48, 4);
        Tensor a0v = RandomBert.normal(Arena.ofAuto(), rnd, 0, 0.1, 2, 48), b0v = RandomBert.normal(Arena.ofAuto(), rnd, 0, 0.1, 48, 2);
        t.put("base_model.model.bert.encoder.layer.1.attention.self.query.lora_A.weight", a0q);
        t.put("base_model.model.bert.encoder.layer.1.attention.self.query.lora_B.weight", b0q);
        t.put("base_model.model.bert.encoder.layer.1.attention.self.value.lora_A.weight", a0v);
        t.put("base_model.model.bert.encoder.layer.1.attention.self.value.lora_B.weight", b0v);
        Path dir = tmp.resolve("fixture");
        Files.createDirectories(dir);
        Safetensors.write(dir.resolve("adapter_model.safetensors"), t, null);
        Files.writeString(dir.resolve("adapter_config.json"), """
                {"peft_type": "LORA", "task_type": null, "r": 4, "lora_alpha": 16, "lora_dropout": 0.1,
                 "target_modules": ["query", "value"], "bias": "none", "fan_in_fan_out": false,
                 "layers_to_transform": [1], "rank_pattern": {"value": 2}, "alpha_pattern": {"value": 8},
                 "modules_to_save": null, "use_rslora": false, "use_dora": false}""");
        LoraAdapter a = LoraAdapter.load("fixture", dir, CFG, cpu, Arena.ofAuto());
        assertEquals(List.of(Bert.Target.QUERY, Bert.Target.VALUE), a.targets());
        assertEquals(4, a.rank(1, Bert.Target.QUERY));
        assertEquals(2, a.rank(1, Bert.Target.VALUE));
        assertEquals(0, a.rank(0, Bert.Target.QUERY));
        assertEquals(16f / 4, a.scale[1][Bert.Target.QUERY.ordinal()]);
        assertEquals(8f / 2, a.scale[1][Bert.Target.VALUE.ordinal()]);
        assertArrayEquals(a0q.toFloatArray(), a.a[1][Bert.Target.QUERY.ordinal()].toFloatArray());
        assertArrayEquals(b0v.toFloatArray(), a.b[1][Bert.Target.VALUE.ordinal()].toFloatArray());

        // saved here and loaded back: identical tensors, PEFT key layout
        Path saved = tmp.resolve("saved");
        LoraAdapter u = LoraAdapter.load("u", writeAdapter("uniform", CFG, 8, 32, true, List.of("query", "value", "intermediate.dense"), false, 77), CFG, cpu, Arena.ofAuto());
        u.save(saved);
        Safetensors.File sf = Safetensors.open(saved.resolve("adapter_model.safetensors"), Arena.ofAuto());
        assertTrue(sf.tensors().containsKey("base_model.model.encoder.layer.0.attention.self.query.lora_A.weight"), sf.tensors().keySet().toString());
        assertTrue(sf.tensors().containsKey("base_model.model.encoder.layer.1.intermediate.dense.lora_B.weight"));
        LoraAdapter back = LoraAdapter.load("back", saved, CFG, cpu, Arena.ofAuto());
        for (int l = 0; l < CFG.numLayers(); l++)
            for (Bert.Target tg : Bert.Target.values()) {
                assertEquals(u.has(l, tg), back.has(l, tg));
                if (!u.has(l, tg)) continue;
                assertArrayEquals(u.a[l][tg.ordinal()].toFloatArray(), back.a[l][tg.ordinal()].toFloatArray());
                assertArrayEquals(u.b[l][tg.ordinal()].toFloatArray(), back.b[l][tg.ordinal()].toFloatArray());
                assertEquals(u.scale[l][tg.ordinal()], back.scale[l][tg.ordinal()]);
            }
    }

    @Test
    void regexTargetModulesMatchLikePeft() throws IOException {
        Path dir = writeAdapter("regex", CFG, 2, 4, false, List.of("attention.output.dense"), false, 8);
        Map<String, Object> c = LoraAdapter.peftConfig(2, 4, false, List.of(), "test");
        c.put("target_modules", ".*attention\\.output\\.dense");
        Files.writeString(dir.resolve("adapter_config.json"), Json.writePretty(c));
        LoraAdapter a = LoraAdapter.load("regex", dir, CFG, cpu, Arena.ofAuto());
        assertEquals(List.of(Bert.Target.ATTENTION_OUTPUT), a.targets());
        // the list form "output.dense" is a suffix of both attention.output.dense and output.dense (PEFT semantics)
        Path both = writeAdapter("suffix", CFG, 2, 4, false, List.of("output.dense"), false, 10);
        assertEquals(List.of(Bert.Target.ATTENTION_OUTPUT, Bert.Target.OUTPUT), LoraAdapter.load("s", both, CFG, cpu, Arena.ofAuto()).targets());
    }

    @Test
    void badAdaptersNameTheAdapterAndKey() throws IOException {
        // missing files
        Path empty = tmp.resolve("empty");
        Files.createDirectories(empty);
        var nf = assertThrows(java.nio.file.NoSuchFileException.class, () -> LoraAdapter.load("empty", empty, CFG, cpu, Arena.ofAuto()));
        assertTrue(nf.getMessage().contains("adapter_config.json"), nf.getMessage());
        Path noWeights = writeAdapter("noweights", CFG, 8, 32, false, List.of("query"), false, 1);
        Files.delete(noWeights.resolve("adapter_model.safetensors"));
        nf = assertThrows(java.nio.file.NoSuchFileException.class, () -> LoraAdapter.load("noweights", noWeights, CFG, cpu, Arena.ofAuto()));
        assertTrue(nf.getMessage().contains("adapter_model.safetensors") && nf.getMessage().contains("noweights"), nf.getMessage());

        // rank mismatch between config and tensors
        Path rank = writeAdapter("rank", CFG, 8, 32, false, List.of("query", "value"), false, 2);
        Files.writeString(rank.resolve("adapter_config.json"), Json.writePretty(LoraAdapter.peftConfig(4, 32, false, List.of("query", "value"), "t")));
        var e = assertThrows(LoraAdapter.AdapterException.class, () -> LoraAdapter.load("rank", rank, CFG, cpu, Arena.ofAuto()));
        assertTrue(e.getMessage().contains("'rank'") && e.getMessage().contains("rank mismatch") && e.getMessage().contains("lora_A.weight"), e.getMessage());

        // a target module the base model does not have (layer 5 of a 2-layer model; an embedding module)
        Path deep = writeAdapter("deep", new BertConfig(30522, 48, 6, 4, 80, 64, 2, 1e-12), 8, 32, false, List.of("query"), false, 3);
        e = assertThrows(LoraAdapter.AdapterException.class, () -> LoraAdapter.load("deep", deep, CFG, cpu, Arena.ofAuto()));
        assertTrue(e.getMessage().contains("'deep'") && e.getMessage().contains("encoder.layer.2.attention.self.query.lora_"), e.getMessage());
        Path emb = writeAdapter("emb", CFG, 8, 32, false, List.of("query"), false, 4);
        Map<String, Tensor> t = new LinkedHashMap<>(Safetensors.open(emb.resolve("adapter_model.safetensors"), Arena.ofAuto()).tensors());
        t.put("base_model.model.embeddings.word_embeddings.lora_embedding_A", Tensor.allocate(null, 8, 30522));
        Map<String, Tensor> copy = new LinkedHashMap<>();
        for (var x : t.entrySet()) copy.put(x.getKey(), Tensor.of(x.getValue().toFloatArray(), x.getValue().shape()));
        Safetensors.write(emb.resolve("adapter_model.safetensors"), copy, null);
        e = assertThrows(LoraAdapter.AdapterException.class, () -> LoraAdapter.load("emb", emb, CFG, cpu, Arena.ofAuto()));
        assertTrue(e.getMessage().contains("embeddings.word_embeddings.lora_embedding_A"), e.getMessage());

        // an adapter for a different hidden size
        Path wide = writeAdapter("wide", new BertConfig(30522, 64, 2, 4, 80, 64, 2, 1e-12), 8, 32, false, List.of("query"), false, 5);
        e = assertThrows(LoraAdapter.AdapterException.class, () -> LoraAdapter.load("wide", wide, CFG, cpu, Arena.ofAuto()));
        assertTrue(e.getMessage().contains("'wide'") && e.getMessage().contains("different hidden size") && e.getMessage().contains("query.lora_"), e.getMessage());

        // unsupported features
        for (String[] kv : new String[][]{{"use_dora", "true"}, {"bias", "\"all\""}, {"modules_to_save", "[\"classifier\"]"}}) {
            Path d = writeAdapter("unsup-" + kv[0], CFG, 8, 32, false, List.of("query"), false, 6);
            String cfg = Files.readString(d.resolve("adapter_config.json")).replaceFirst("\"" + kv[0] + "\": [^,\\n]*", "\"" + kv[0] + "\": " + kv[1]);
            Files.writeString(d.resolve("adapter_config.json"), cfg);
            e = assertThrows(LoraAdapter.AdapterException.class, () -> LoraAdapter.load("u", d, CFG, cpu, Arena.ofAuto()));
            assertTrue(e.getMessage().contains(kv[0]), e.getMessage());
        }
    }

    @Test
    void expertTableAddsAndRemovesWhileRunning() throws IOException {
        Path experts = tmp.resolve("experts");
        Files.createDirectories(experts);
        Files.move(writeAdapter("tA", CFG, 8, 32, false, List.of("query", "value"), false, 31), experts.resolve("scifact"));
        Files.move(writeAdapter("tB", CFG, 8, 32, false, List.of("query", "value"), false, 32), experts.resolve("arguana"));
        Files.writeString(experts.resolve("experts.json"), "{\"order\": [\"scifact\", \"arguana\"]}");
        ExpertTable table = ExpertTable.open(experts, CFG, cpu);
        assertEquals(List.of("scifact", "arguana"), table.names());
        try (Encoder enc = Encoder.open(modelDir, cpu, null, null, 64)) {
            float[] before = enc.embed(List.of("q"), new LoraAdapter[]{table.get("scifact")})[0];
            table.add("third", writeAdapter("tC", CFG, 2, 8, false, List.of("key"), false, 33));
            assertEquals(List.of("scifact", "arguana", "third"), table.names());
            assertTrue(table.remove("arguana"));
            assertArrayEquals(before, enc.embed(List.of("q"), new LoraAdapter[]{table.get("scifact")})[0]);
            var e = assertThrows(IllegalArgumentException.class, () -> table.get("arguana"));
            assertTrue(e.getMessage().contains("unknown expert 'arguana'") && e.getMessage().contains("scifact, third"), e.getMessage());
        }
    }
}
