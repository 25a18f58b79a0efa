package rrj.model;

import org.junit.jupiter.api.Test;
import rrj.engine.Backend;
import rrj.engine.Backends;
import rrj.engine.Batch;
import rrj.engine.Check;
import rrj.engine.DType;
import rrj.engine.Tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The safetensors reader: zero-copy round trips, fp16/bf16 storage computed in fp32, clear errors. */
class SafetensorsTest {

    static Tensor toHalf(Tensor t, DType dtype) {
        Tensor h = new Tensor(dtype, t.shape(), Arena.ofAuto().allocate(t.numel() * 2));
        for (long i = 0; i < t.numel(); i++) {
            float v = t.getFloat(i);
            short bits = dtype == DType.F16 ? Float.floatToFloat16(v) : (short) (Float.floatToRawIntBits(v) >>> 16); // bf16: truncation
            h.data.setAtIndex(Tensor.I16, i, bits);
        }
        return h;
    }

    @Test
    void roundTripKeepsBytesShapesAndOrder() throws IOException {
        Map<String, Tensor> m = new LinkedHashMap<>();
        m.put("z.last", Tensor.of(new float[]{1, 2, 3, 4, 5, 6}, 2, 3));
        m.put("a.first", Tensor.of(new float[]{-1.5f}, 1));
        m.put("scalar", Tensor.of(new float[]{7}));
        Path f = Files.createTempDirectory("st").resolve("x.safetensors");
        Safetensors.write(f, m, Map.of("format", "pt"));
        Safetensors.File r = Safetensors.open(f, Arena.ofAuto());
        assertEquals(java.util.List.copyOf(m.keySet()), java.util.List.copyOf(r.tensors().keySet()));
        for (String k : m.keySet()) {
            assertArrayEquals(m.get(k).shape(), r.get(k).shape(), k);
            assertArrayEquals(m.get(k).toFloatArray(), r.get(k).toFloatArray(), k);
        }
        assertEquals("pt", r.metadata().get("format"));
    }

    @Test
    void halfPrecisionStorageComputesInFp32() throws IOException {
        BertConfig c = new BertConfig(200, 64, 2, 4, 128, 32, 2, 1e-12);
        Map<String, Tensor> w = RandomBert.weights(c, 9);
        for (DType dt : new DType[]{DType.F16, DType.BF16}) {
            Map<String, Tensor> half = new LinkedHashMap<>(), widened = new LinkedHashMap<>();
            for (var e : w.entrySet()) {
                Tensor h = toHalf(e.getValue(), dt);
                half.put(e.getKey(), h);
                widened.put(e.getKey(), Tensor.of(h.toFloatArray(), h.shape())); // the same values, stored as fp32
            }
            Path dir = Files.createTempDirectory("half");
            Safetensors.write(dir.resolve("h.safetensors"), half, null);
            Safetensors.write(dir.resolve("f.safetensors"), widened, null);
            assertEquals(dt, Safetensors.open(dir.resolve("h.safetensors"), Arena.ofAuto()).get("embeddings.LayerNorm.weight").dtype);
            try (Backend cpu = Backends.create("cpu", 2)) {
                int[] ids = {101, 7, 42, 199, 102};
                Batch b = new Batch(1).set(new int[]{5}, 1);
                float[] got = pooled(Bert.load(c, Safetensors.open(dir.resolve("h.safetensors"), Arena.ofAuto()), cpu), ids, b);
                float[] ref = pooled(Bert.load(c, Safetensors.open(dir.resolve("f.safetensors"), Arena.ofAuto()), cpu), ids, b);
                Check.close(dt + " storage vs the same values in fp32", got, ref, 0, 0);
            }
        }
    }

    static float[] pooled(Bert bert, int[] ids, Batch b) {
        bert.forward(ids, b, null);
        float[] out = new float[bert.config.hiddenSize()];
        bert.backend().read(bert.pool(b, Backend.Pooling.MEAN, false), 0, out, 0, out.length);
        return out;
    }

    @Test
    void errorsNameTheFileAndKey() throws IOException {
        Path dir = Files.createTempDirectory("bad-st");
        Path f = dir.resolve("m.safetensors");
        var e = assertThrows(java.nio.file.NoSuchFileException.class, () -> Safetensors.open(f, Arena.ofAuto()));
        assertTrue(e.getMessage().contains("m.safetensors"));
        Files.write(f, new byte[]{1, 2, 3});
        var fe = assertThrows(Safetensors.FormatException.class, () -> Safetensors.open(f, Arena.ofAuto()));
        assertTrue(fe.getMessage().contains("m.safetensors") && fe.getMessage().contains("truncated"), fe.getMessage());
        String header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}";
        writeRaw(f, header, 16);
        fe = assertThrows(Safetensors.FormatException.class, () -> Safetensors.open(f, Arena.ofAuto()));
        assertTrue(fe.getMessage().contains("'w'") && fe.getMessage().contains("data_offsets"), fe.getMessage());
        header = "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,16]}}";
        writeRaw(f, header, 16);
        fe = assertThrows(Safetensors.FormatException.class, () -> Safetensors.open(f, Arena.ofAuto()));
        assertTrue(fe.getMessage().contains("'w'") && fe.getMessage().contains("F8_E4M3"), fe.getMessage());
        header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
        writeRaw(f, header, 8); // data shorter than the header claims
        fe = assertThrows(Safetensors.FormatException.class, () -> Safetensors.open(f, Arena.ofAuto()));
        assertTrue(fe.getMessage().contains("truncated") && fe.getMessage().contains("'w'"), fe.getMessage());
    }

    static void writeRaw(Path f, String header, int dataBytes) throws IOException {
        byte[] h = header.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(8 + h.length + dataBytes).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h);
        Files.write(f, b.array());
    }
}
