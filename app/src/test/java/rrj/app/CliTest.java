package rrj.app;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import rrj.engine.Tensor;
import rrj.model.BertConfig;
import rrj.model.Json;
import rrj.model.RandomBert;
import rrj.model.Safetensors;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The command line on good and bad input: every failure is one line on stderr naming what is
 * wrong, a non-zero exit code, and no output directory left behind by the converter.
 */
class CliTest {
    static Path tmp;
    static Path model; // a small random BERT in our format

    record Result(int code, String out, String err) {}

    static Result rr(String... argv) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        int code = Main.execute(argv, new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8));
        return new Result(code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }

    static void assertOneLineError(Result r, String... mustContain) {
        assertNotEquals(0, r.code(), "exit code; stderr: " + r.err());
        String e = r.err().strip();
        List<String> lines = e.lines().filter(l -> !l.startsWith("rr: backend=") && !l.startsWith("run 'rr help'")).toList();
        assertEquals(1, lines.size(), "expected exactly one error line, got:\n" + e);
        assertFalse(e.contains("\tat "), "stack trace leaked:\n" + e);
        for (String s : mustContain) assertTrue(lines.get(0).contains(s), "error line lacks '" + s + "': " + lines.get(0));
    }

    @BeforeAll
    static void makeModel() throws IOException {
        tmp = Files.createTempDirectory("rr-cli");
        model = tmp.resolve("tiny");
        Files.createDirectories(model);
        BertConfig c = new BertConfig(30522, 32, 2, 4, 64, 64, 2, 1e-12);
        Safetensors.write(model.resolve("model.safetensors"), RandomBert.weights(c, 3), null);
        Files.writeString(model.resolve("config.json"), Json.writePretty(c.toMap()));
        Files.copy(Path.of("../data/test-fixtures/vocab.txt"), model.resolve("vocab.txt"));
    }

    @Test
    void embedPrintsOneJsonObjectPerText() {
        Result r = rr("embed", "--model", model.toString(), "--backend", "ref", "hello world", "second text");
        assertEquals(0, r.code(), r.err());
        List<String> lines = r.out().lines().toList();
        assertEquals(2, lines.size(), r.out());
        Map<String, Object> o = Json.parseObject(lines.get(0));
        assertEquals("hello world", o.get("text"));
        assertEquals(32, ((List<?>) o.get("embedding")).size());
    }

    @Test
    void stdinLinesMayBeJsonObjects() {
        assertEquals("plain", Main.textOf("plain", 1));
        assertEquals("from json", Main.textOf("{\"text\": \"from json\", \"id\": 3}", 2));
        IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> Main.textOf("{\"text\": ", 7));
        assertTrue(e.getMessage().contains("stdin line 7"), e.getMessage());
    }

    @Test
    void missingModelDirectory() {
        assertOneLineError(rr("embed", "--model", tmp.resolve("nope").toString(), "x"), "nope", "not found");
    }

    @Test
    void truncatedSafetensors() throws IOException {
        Path d = copyModel("truncated");
        Path f = d.resolve("model.safetensors");
        byte[] all = Files.readAllBytes(f);
        Files.write(f, java.util.Arrays.copyOf(all, all.length / 2));
        assertOneLineError(rr("embed", "--model", d.toString(), "x"), "model.safetensors", "truncated");
    }

    @Test
    void wrongTensorShape() throws IOException {
        Path d = copyModel("wrongshape");
        BertConfig c = new BertConfig(30522, 32, 2, 4, 64, 64, 2, 1e-12);
        Map<String, Tensor> w = RandomBert.weights(c, 3);
        w.put("encoder.layer.0.attention.self.key.weight", Tensor.allocate(null, 32, 31));
        Safetensors.write(d.resolve("model.safetensors"), w, null);
        assertOneLineError(rr("embed", "--model", d.toString(), "x"), "encoder.layer.0.attention.self.key.weight", "[32, 31]");
    }

    @Test
    void nonBertModelType() throws IOException {
        Path d = copyModel("gpt");
        Files.writeString(d.resolve("config.json"), Files.readString(d.resolve("config.json")).replace("\"bert\"", "\"gpt2\""));
        assertOneLineError(rr("embed", "--model", d.toString(), "x"), "config.json", "model_type 'gpt2'");
    }

    @Test
    void unreadableTokenizer() throws IOException {
        Path d = copyModel("badtok");
        Files.delete(d.resolve("vocab.txt"));
        Files.writeString(d.resolve("tokenizer.json"), "{\"model\": {\"type\": ");
        assertOneLineError(rr("embed", "--model", d.toString(), "x"), "tokenizer.json");
    }

    @Test
    void convertRefusesNonBertOnnxAndLeavesNothing() throws IOException {
        Path bad = tmp.resolve("not-bert.onnx");
        Files.write(bad, new byte[]{0x08, 0x07, 0x12, 0x03, 'a', 'b', 'c'}); // a valid protobuf, no graph
        Path out = tmp.resolve("out-onnx");
        assertOneLineError(rr("convert", bad.toString(), "--out", out.toString(), "--tokenizer", model.resolve("vocab.txt").toString()), "not-bert.onnx");
        assertFalse(Files.exists(out), "partial output left at " + out);
        try (var s = Files.list(tmp)) {
            assertTrue(s.noneMatch(p -> p.getFileName().toString().contains("partial")), "temporary directory left behind");
        }
    }

    @Test
    void convertRefusesNonBertConfigAndLeavesNothing() throws IOException {
        Path d = copyModel("conv-gpt");
        Files.writeString(d.resolve("config.json"), Files.readString(d.resolve("config.json")).replace("\"bert\"", "\"gpt2\""));
        Path out = tmp.resolve("out-gpt");
        assertOneLineError(rr("convert", d.toString(), "--out", out.toString()), "model_type 'gpt2'");
        assertFalse(Files.exists(out));
    }

    @Test
    void convertSafetensorsDirectoryRoundTrips() throws IOException {
        Path out = tmp.resolve("out-ok");
        Result r = rr("convert", model.toString(), "--out", out.toString(), "--pooling", "cls", "--normalize");
        assertEquals(0, r.code(), r.err());
        assertTrue(Files.exists(out.resolve("model.safetensors")) && Files.exists(out.resolve("vocab.txt")) && Files.exists(out.resolve("modules.json")));
        Result e = rr("embed", "--model", out.toString(), "--backend", "ref", "abc");
        assertEquals(0, e.code(), e.err());
        // --normalize was recorded: the vector has unit length
        List<?> v = (List<?>) Json.parseObject(e.out().strip()).get("embedding");
        double n = 0;
        for (Object x : v) n += Math.pow(((Number) x).doubleValue(), 2);
        assertEquals(1.0, n, 1e-5);
        // and converting over a non-empty directory is refused
        assertOneLineError(rr("convert", model.toString(), "--out", out.toString()), "not empty");
    }

    @Test
    void usageErrors() {
        Result r = rr("embed", "--frobnicate");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("unknown option --frobnicate"), r.err());
        assertEquals(2, rr("nonsense").code());
        assertOneLineError(rr("embed", "--model", model.toString(), "--backend", "tpu", "x"), "unknown backend 'tpu'");
    }

    @Test
    void expertsAddListEmbedRemove() throws IOException {
        // a PEFT adapter as PyTorch writes it (adapter_model.bin), for the tiny model
        Path src = tmp.resolve("peft-bin");
        Files.createDirectories(src);
        java.util.SplittableRandom r = new java.util.SplittableRandom(4);
        Map<String, Tensor> t = new java.util.LinkedHashMap<>();
        for (int l = 0; l < 2; l++)
            for (String m : List.of("query", "value")) {
                String k = "base_model.model.encoder.layer." + l + ".attention.self." + m;
                t.put(k + ".lora_A.weight", RandomBert.normal(java.lang.foreign.Arena.ofAuto(), r, 0, 0.2, 8, 32));
                t.put(k + ".lora_B.weight", RandomBert.normal(java.lang.foreign.Arena.ofAuto(), r, 0, 0.2, 32, 8));
            }
        rrj.convert.torch.TorchStateDict.write(src.resolve("adapter_model.bin"), t);
        Files.writeString(src.resolve("adapter_config.json"), Json.writePretty(rrj.model.LoraAdapter.peftConfig(8, 32, false, List.of("query", "value"), "tiny")));
        Path experts = tmp.resolve("experts-cli");
        Result add = rr("experts", "add", "sci", src.toString(), "--experts", experts.toString(), "--model", model.toString());
        assertEquals(0, add.code(), add.err());
        assertTrue(Files.exists(experts.resolve("sci/adapter_model.safetensors")));
        Result list = rr("experts", "list", "--experts", experts.toString());
        assertTrue(list.out().startsWith("sci\tr=8\talpha=32"), list.out());
        Result base = rr("embed", "--model", model.toString(), "--backend", "ref", "same text");
        Result withExpert = rr("embed", "--model", model.toString(), "--backend", "ref", "--experts", experts.toString(), "--expert", "sci", "same text");
        assertEquals(0, withExpert.code(), withExpert.err());
        assertNotEquals(base.out(), withExpert.out());
        assertOneLineError(rr("embed", "--model", model.toString(), "--experts", experts.toString(), "--expert", "nope", "x"), "unknown expert 'nope'", "sci");
        // an adapter for another hidden size is refused before anything is added
        Path wide = tmp.resolve("peft-wide");
        Files.createDirectories(wide);
        Map<String, Tensor> w = new java.util.LinkedHashMap<>();
        w.put("base_model.model.encoder.layer.0.attention.self.query.lora_A.weight", Tensor.allocate(null, 8, 64));
        w.put("base_model.model.encoder.layer.0.attention.self.query.lora_B.weight", Tensor.allocate(null, 64, 8));
        Safetensors.write(wide.resolve("adapter_model.safetensors"), w, null);
        Files.writeString(wide.resolve("adapter_config.json"), Json.writePretty(rrj.model.LoraAdapter.peftConfig(8, 32, false, List.of("query"), "x")));
        Map<String, Object> cfg = Json.parseObject(Files.readString(wide.resolve("adapter_config.json")));
        cfg.put("layers_to_transform", List.of(0L));
        Files.writeString(wide.resolve("adapter_config.json"), Json.writePretty(cfg));
        assertOneLineError(rr("experts", "add", "wide", wide.toString(), "--experts", experts.toString(), "--model", model.toString()),
                "different hidden size", "lora_A.weight");
        assertFalse(Files.exists(experts.resolve("wide")));
        assertEquals(0, rr("experts", "remove", "sci", "--experts", experts.toString()).code());
        assertEquals("", rr("experts", "list", "--experts", experts.toString()).out());
    }

    static Path copyModel(String name) throws IOException {
        Path d = tmp.resolve(name);
        Files.createDirectories(d);
        try (var s = Files.list(model)) {
            for (Path p : s.toList()) Files.copy(p, d.resolve(p.getFileName()));
        }
        return d;
    }
}
