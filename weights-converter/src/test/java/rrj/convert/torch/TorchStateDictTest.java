package rrj.convert.torch;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import rrj.engine.DType;
import rrj.engine.Tensor;
import rrj.model.Safetensors;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.zip.CRC32;
import java.util.zip.ZipEntry;
import java.util.zip.ZipInputStream;
import java.util.zip.ZipOutputStream;

import static org.junit.jupiter.api.Assertions.*;

/**
 * TorchStateDict against (a) its own writer and the safetensors it came from, (b) pickles
 * assembled opcode by opcode here, as torch 2.x's pickle.py would emit them (see
 * Lib/pickletools.py for the opcodes), zipped with java.util.zip rather than our writer, and
 * (c) broken or hostile files, which must fail with a one-line TorchFormatException naming the
 * file and the culprit. Needs no PyTorch.
 */
class TorchStateDictTest {

    @TempDir
    Path dir;

    // ---------------------------------------------------------------- (a) round trips

    @Test
    void roundTripKeepsBytesShapesDtypesAndOrder() throws IOException {
        Map<String, Tensor> in = sampleTensors(new Random(42));
        Path bin = dir.resolve("pytorch_model.bin");
        TorchStateDict.write(bin, in);
        Map<String, Tensor> out = TorchStateDict.read(bin);
        assertSameTensors(in, out);

        // The archive is a valid zip for an independent reader (CRCs checked by ZipInputStream),
        // laid out as torch.save lays it out.
        Map<String, byte[]> entries = unzip(bin);
        List<String> expectedNames = new ArrayList<>(List.of("archive/data.pkl", "archive/byteorder"));
        for (int i = 0; i < in.size(); i++) expectedNames.add("archive/data/" + i);
        expectedNames.add("archive/version");
        assertEquals(expectedNames, new ArrayList<>(entries.keySet()));
        assertEquals("3\n", new String(entries.get("archive/version"), StandardCharsets.US_ASCII));
        assertEquals("little", new String(entries.get("archive/byteorder"), StandardCharsets.US_ASCII));
        try (FileChannel ch = FileChannel.open(bin, StandardOpenOption.READ); Arena a = Arena.ofConfined()) {
            TorchZip.Reader z = TorchZip.Reader.open(bin, ch, a);
            for (TorchZip.Entry e : z.entries.values()) {
                assertEquals(0, e.method(), e.name() + " must be STORED");
                assertEquals(0, e.dataOffset() % 64, e.name() + " data must be 64-byte aligned");
            }
        }
        // The pickle starts like torch's: PROTO 2, GLOBAL collections.OrderedDict, BINPUT 0, EMPTY_TUPLE, REDUCE.
        byte[] pkl = entries.get("archive/data.pkl");
        byte[] head = "\u0080\u0002ccollections\nOrderedDict\nq\u0000)R".getBytes(StandardCharsets.ISO_8859_1);
        assertArrayEquals(head, java.util.Arrays.copyOf(pkl, head.length));
        assertEquals('.', pkl[pkl.length - 1]);
    }

    @Test
    void binRoundTripsToTheSameTensorsAsTheSafetensorsItCameFrom() throws IOException {
        Map<String, Tensor> in = sampleTensors(new Random(7));
        Path st = dir.resolve("model.safetensors");
        Safetensors.write(st, in, Map.of("format", "pt"));
        try (Arena arena = Arena.ofConfined()) {
            Map<String, Tensor> fromSt = Safetensors.open(st, arena).tensors();
            Path bin = dir.resolve("pytorch_model.bin");
            TorchStateDict.write(bin, fromSt);               // written from mapped safetensors slices
            Map<String, Tensor> fromBin = TorchStateDict.read(bin, arena);
            assertSameTensors(fromSt, fromBin);
            assertSameTensors(in, fromBin);
            // and back: .bin tensors -> safetensors -> identical again
            Path st2 = dir.resolve("again.safetensors");
            Safetensors.write(st2, fromBin, Map.of());
            assertSameTensors(fromSt, Safetensors.open(st2, arena).tensors());
        }
    }

    @Test
    void tiedWeightsShareOneStorage() throws IOException {
        Tensor w = Tensor.of(new float[] {1, 2, 3, 4, 5, 6}, 2, 3);
        Map<String, Tensor> in = new LinkedHashMap<>();
        in.put("embeddings.word_embeddings.weight", w);
        in.put("bias", Tensor.of(new float[] {9}, 1));
        in.put("lm_head.decoder.weight", w);
        Path bin = dir.resolve("tied.bin");
        TorchStateDict.write(bin, in);
        assertEquals(List.of("archive/data.pkl", "archive/byteorder", "archive/data/0", "archive/data/1", "archive/version"),
                new ArrayList<>(unzip(bin).keySet()));
        Map<String, Tensor> out = TorchStateDict.read(bin);
        assertSameTensors(in, out);
        assertEquals(out.get("embeddings.word_embeddings.weight").data.address(), out.get("lm_head.decoder.weight").data.address());
    }

    @Test
    void largeTensorIsMappedNotCopied() throws IOException {
        int n = 1 << 22; // 16 MiB
        float[] v = new float[n];
        Random r = new Random(1);
        for (int i = 0; i < n; i++) v[i] = r.nextFloat();
        Map<String, Tensor> in = Map.of("big", Tensor.of(v, 1024, n / 1024));
        Path bin = dir.resolve("big.bin");
        TorchStateDict.write(bin, in);
        Map<String, Tensor> out = TorchStateDict.read(bin);
        assertTrue(out.get("big").data.isMapped(), "contiguous tensor should be a slice of the mapping");
        assertSameTensors(in, out);
    }

    @Test
    void manyEntriesUseSetitemsBatchesAndLongMemo() throws IOException {
        Map<String, Tensor> in = new LinkedHashMap<>();
        for (int i = 0; i < 1203; i++) in.put("layer." + i + ".w", Tensor.of(new float[] {i, -i}, 2));
        Path bin = dir.resolve("many.bin");
        TorchStateDict.write(bin, in);
        assertSameTensors(in, TorchStateDict.read(bin));
        TorchStateDict.write(bin, Map.of()); // overwrite: empty state dict
        assertTrue(TorchStateDict.read(bin).isEmpty());
    }

    // ---------------------------------------------------------------- (b) hand-assembled pickles

    /**
     * What torch 2.x writes for a state dict whose tensors are views of shared storages:
     * an OrderedDict (with the _metadata attribute Module.state_dict() adds, set by BUILD),
     * storage offsets, a transpose, stepped slices, a Parameter, f16 and a 0-d int64.
     */
    @Test
    void readsHandAssembledTorchPickle() throws IOException {
        P p = new P().op(0x80, 2)
                .global("collections", "OrderedDict").put(0).op(')').op('R').put(1)
                .op('(');
        // 'a' = storage0[2:8].view(2,3): contiguous with storage_offset 2
        p.str("a").put(2).global("torch._utils", "_rebuild_tensor_v2").put(3)
                .op('(').op('(').str("storage").put(4).global("torch", "FloatStorage").put(5).str("0").put(6).str("cpu").put(7)
                .op('K', 12).op('t').put(8).op('Q')
                .op('K', 2).op('K', 2).op('K', 3).op(0x86).put(9).op('K', 3).op('K', 1).op(0x86).put(10)
                .op(0x89).get(0).op(')').op('R').put(11).op('t').put(12).op('R').put(13);
        // 'b.T' = storage0.view(3,4).t(): size (4,3), stride (1,4)
        p.str("b.T").put(14).get(3)
                .op('(').op('(').get(4).get(5).get(6).get(7).op('K', 12).op('t').put(15).op('Q')
                .op('K', 0).op('K', 4).op('K', 3).op(0x86).put(16).op('K', 1).op('K', 4).op(0x86).put(17)
                .op(0x89).get(0).op(')').op('R').put(18).op('t').put(19).op('R').put(20);
        // 'c' = storage0.view(3,4)[0:2, 1::2]: offset 1, size (2,2), stride (4,2)
        p.str("c").put(21).get(3)
                .op('(').op('(').get(4).get(5).get(6).get(7).op('K', 12).op('t').put(22).op('Q')
                .op('K', 1).op('K', 2).op('K', 2).op(0x86).put(23).op('K', 4).op('K', 2).op(0x86).put(24)
                .op(0x89).get(0).op(')').op('R').put(25).op('t').put(26).op('R').put(27);
        // 'd' = storage0.view(2,6)[:, 4:6]: offset 4, size (2,2), stride (6,1) (runs of 2)
        p.str("d").put(28).get(3)
                .op('(').op('(').get(4).get(5).get(6).get(7).op('K', 12).op('t').put(29).op('Q')
                .op('K', 4).op('K', 2).op('K', 2).op(0x86).put(30).op('K', 6).op('K', 1).op(0x86).put(31)
                .op(0x89).get(0).op(')').op('R').put(32).op('t').put(33).op('R').put(34);
        // 'p' = Parameter(storage0 as 12 floats): _rebuild_parameter(_rebuild_tensor_v2(...), True, OrderedDict())
        p.str("p").put(35).global("torch._utils", "_rebuild_parameter").put(36)
                .get(3).op('(').op('(').get(4).get(5).get(6).get(7).op('K', 12).op('t').put(37).op('Q')
                .op('K', 0).op('K', 12).op(0x85).put(38).op('K', 1).op(0x85).put(39)
                .op(0x89).get(0).op(')').op('R').put(40).op('t').put(41).op('R').put(42)
                .op(0x88).get(0).op(')').op('R').put(43).op(0x87).put(44).op('R').put(45);
        // 'h' = f16 storage '1' (deflated in the zip), size (3,)
        p.str("h").put(46).get(3)
                .op('(').op('(').get(4).global("torch", "HalfStorage").put(47).str("1").put(48).get(7).op('K', 3).op('t').put(49).op('Q')
                .op('K', 0).op('K', 3).op(0x85).put(50).op('K', 1).op(0x85).put(51)
                .op(0x89).get(0).op(')').op('R').put(52).op('t').put(53).op('R').put(54);
        // 'step' = 0-d int64 at offset 1 of a 2-element LongStorage '2' saved from cuda:0
        p.str("step").put(55).get(3)
                .op('(').op('(').get(4).global("torch", "LongStorage").put(56).str("2").put(57).str("cuda:0").put(58).op('K', 2).op('t').put(59).op('Q')
                .op('K', 1).op(')').op(')').op(0x89).get(0).op(')').op('R').put(60).op('t').put(61).op('R').put(62);
        p.op('u');
        // BUILD state {'_metadata': OrderedDict({'': {'version': 1, ...scalars...}})}
        p.op('}').put(63).str("_metadata").put(64).get(0).op(')').op('R').put(65)
                .str("").put(66).op('}').put(67)
                .op('(').str("version").put(68).op('K', 1)
                .str("big").longPut(300).op(0x8a, 5, 0, 0, 0, 0, 2)           // LONG1 2^33, LONG_BINPUT
                .str("m").put(69).op('M', 0x2c, 0x01)                           // BININT2 300
                .str("neg").put(70).op('J', 0xfb, 0xff, 0xff, 0xff)            // BININT -5
                .str("f").put(71).binfloat(0.5)
                .str("t").put(72).op(0x88)
                .str("n").put(73).op('N')
                .str("lst").put(74).op(']').put(75).op('(').op('K', 1).op('K', 2).op('e')
                .str("again").put(76).longGet(300)
                .op('u')
                .op('s').op('s').op('b').op('.');

        float[] s0 = new float[12];
        for (int i = 0; i < 12; i++) s0[i] = i;
        byte[] half = new byte[6];
        ByteBuffer.wrap(half).order(ByteOrder.LITTLE_ENDIAN)
                .putShort(Float.floatToFloat16(1.5f)).putShort(Float.floatToFloat16(-2f)).putShort(Float.floatToFloat16(0.25f));
        byte[] longs = ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(7).putLong(123456789012L).array();

        Path bin = dir.resolve("hand.bin");
        Map<String, byte[]> stored = new LinkedHashMap<>();
        stored.put("pytorch_model/data.pkl", p.bytes());
        stored.put("pytorch_model/byteorder", "little".getBytes(StandardCharsets.US_ASCII));
        stored.put("pytorch_model/data/0", f32Bytes(s0));
        stored.put("pytorch_model/data/1", half);
        stored.put("pytorch_model/data/2", longs);
        stored.put("pytorch_model/version", "3\n".getBytes(StandardCharsets.US_ASCII));
        stored.put("pytorch_model/.data/serialization_id", "1234567890".getBytes(StandardCharsets.US_ASCII));
        jdkZip(bin, stored, "pytorch_model/data/1");

        Map<String, Tensor> t = TorchStateDict.read(bin);
        assertEquals(List.of("a", "b.T", "c", "d", "p", "h", "step"), new ArrayList<>(t.keySet()));
        check(t.get("a"), DType.F32, new long[] {2, 3}, 2, 3, 4, 5, 6, 7);
        check(t.get("b.T"), DType.F32, new long[] {4, 3}, 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11);
        check(t.get("c"), DType.F32, new long[] {2, 2}, 1, 3, 5, 7);
        check(t.get("d"), DType.F32, new long[] {2, 2}, 4, 5, 10, 11);
        check(t.get("p"), DType.F32, new long[] {12}, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11);
        check(t.get("h"), DType.F16, new long[] {3}, 1.5f, -2f, 0.25f);
        assertEquals(DType.I64, t.get("step").dtype);
        assertEquals(0, t.get("step").rank());
        assertEquals(123456789012L, t.get("step").data.get(Tensor.I64, 0));
        // contiguous views are zero-copy slices of one shared storage; strided ones are copies
        assertTrue(t.get("a").data.isMapped());
        assertEquals(t.get("p").data.address() + 2 * 4, t.get("a").data.address());
        assertFalse(t.get("b.T").data.isMapped());
    }

    /** Protocol 4 (torch.save(..., pickle_protocol=4)): FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE. */
    @Test
    void readsProtocol4PickleWithStackGlobalAndRebuildFromType() throws IOException {
        P body = new P()
                .sstr("collections").memo().sstr("OrderedDict").memo().op(0x93).memo()   // memo 0,1,2
                .op(')').op('R').memo()                                                   // 3
                .sstr("w").memo()                                                         // 4
                .sstr("torch._tensor").memo().sstr("_rebuild_from_type_v2").memo().op(0x93).memo() // 5,6,7
                .op('(')
                .sstr("torch._utils").memo().sstr("_rebuild_tensor_v2").memo().op(0x93).memo()    // 8,9,10
                .sstr("torch").memo().sstr("Tensor").memo().op(0x93).memo()                      // 11,12,13
                .op('(').op('(').sstr("storage").memo().sstr("torch").memo().sstr("BFloat16Storage").memo().op(0x93).memo()
                .sstr("0").memo().sstr("cpu").memo().op('K', 4).op('t').memo().op('Q')
                .op('K', 0).op('K', 2).op('K', 2).op(0x86).memo().op('K', 2).op('K', 1).op(0x86).memo()
                .op(0x89).op('h', 2).op(')').op('R').memo().op('t').memo()
                .op('}').memo()
                .op('t').memo().op('R').memo()
                .op('s').op('.');
        byte[] b = body.bytes();
        P p = new P().op(0x80, 4).op(0x95).u64(b.length).raw(b);
        short[] bf = {(short) (Float.floatToIntBits(1f) >>> 16), (short) (Float.floatToIntBits(-3f) >>> 16),
                (short) (Float.floatToIntBits(0.5f) >>> 16), (short) (Float.floatToIntBits(8f) >>> 16)};
        ByteBuffer data = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
        for (short s : bf) data.putShort(s);
        Path bin = dir.resolve("p4.bin");
        Map<String, byte[]> e = new LinkedHashMap<>();
        e.put("archive/data.pkl", p.bytes());
        e.put("archive/.format_version", "1".getBytes(StandardCharsets.US_ASCII));
        e.put("archive/.storage_alignment", "64".getBytes(StandardCharsets.US_ASCII));
        e.put("archive/byteorder", "little".getBytes(StandardCharsets.US_ASCII));
        e.put("archive/data/0", data.array());
        e.put("archive/version", "3\n".getBytes(StandardCharsets.US_ASCII));
        jdkZip(bin, e, null);
        Map<String, Tensor> t = TorchStateDict.read(bin);
        check(t.get("w"), DType.BF16, new long[] {2, 2}, 1f, -3f, 0.5f, 8f);
    }

    // ---------------------------------------------------------------- (c) refusals

    @Test
    void randomBytesAreRefused() throws IOException {
        byte[] junk = new byte[1000];
        new Random(3).nextBytes(junk);
        junk[0] = 0x13;
        Path f = dir.resolve("junk.bin");
        Files.write(f, junk);
        TorchFormatException e = assertThrows(TorchFormatException.class, () -> TorchStateDict.read(f));
        assertOneLineNaming(e, f.toString(), "not a PyTorch zip");
        Path empty = dir.resolve("empty.bin");
        Files.write(empty, new byte[0]);
        assertOneLineNaming(assertThrows(TorchFormatException.class, () -> TorchStateDict.read(empty)), empty.toString());
    }

    @Test
    void truncatedZipIsRefused() throws IOException {
        Path good = dir.resolve("good.bin");
        TorchStateDict.write(good, sampleTensors(new Random(5)));
        byte[] all = Files.readAllBytes(good);
        for (int cut : new int[] {all.length / 2, all.length - 10, 30}) {
            Path f = dir.resolve("cut" + cut + ".bin");
            Files.write(f, java.util.Arrays.copyOf(all, cut));
            TorchFormatException e = assertThrows(TorchFormatException.class, () -> TorchStateDict.read(f));
            assertOneLineNaming(e, f.toString(), "truncated");
        }
    }

    @Test
    void disallowedGlobalIsRefusedBeforeAnythingRuns() throws IOException {
        // os.system('ls') -- the classic pickle exploit
        byte[] evil = new P().op(0x80, 2).global("os", "system").put(0).str("ls").put(1).op(0x85).put(2).op('R').put(3).op('.').bytes();
        Path f = archive("evil.bin", evil, Map.of());
        TorchFormatException e = assertThrows(TorchFormatException.class, () -> TorchStateDict.read(f));
        assertOneLineNaming(e, f.toString(), "'os.system'", "not allowed");

        // the same through STACK_GLOBAL, and a torch global that is not a tensor rebuild
        byte[] evil2 = new P().op(0x80, 4).sstr("builtins").sstr("eval").op(0x93).op('.').bytes();
        Path f2 = archive("evil2.bin", evil2, Map.of());
        assertOneLineNaming(assertThrows(TorchFormatException.class, () -> TorchStateDict.read(f2)), f2.toString(), "'builtins.eval'");
        byte[] evil3 = new P().op(0x80, 2).global("torch", "load").op('.').bytes();
        Path f3 = archive("evil3.bin", evil3, Map.of());
        assertOneLineNaming(assertThrows(TorchFormatException.class, () -> TorchStateDict.read(f3)), f3.toString(), "'torch.load'");
    }

    @Test
    void missingStorageEntryNamesTheKey() throws IOException {
        Path f = archive("missing.bin", oneTensorPickle("FloatStorage", "7", 4, 0, new long[] {4}, new long[] {1}), Map.of());
        TorchFormatException e = assertThrows(TorchFormatException.class, () -> TorchStateDict.read(f));
        assertOneLineNaming(e, f.toString(), "'7'", "archive/data/7");
    }

    @Test
    void otherRefusalsNameTheCulprit() throws IOException {
        byte[] four = f32Bytes(new float[] {1, 2, 3, 4});
        // a dtype the engine lacks: named with the tensor's key
        Path dbl = archive("double.bin", oneTensorPickle("DoubleStorage", "0", 2, 0, new long[] {2}, new long[] {1}),
                Map.of("archive/data/0", new byte[16]));
        assertOneLineNaming(assertThrows(TorchFormatException.class, () -> TorchStateDict.read(dbl)), dbl.toString(), "'w'", "torch.DoubleStorage");
        // a view reaching past its storage
        Path oob = archive("oob.bin", oneTensorPickle("FloatStorage", "0", 4, 2, new long[] {2, 2}, new long[] {2, 1}),
                Map.of("archive/data/0", four));
        assertOneLineNaming(assertThrows(TorchFormatException.class, () -> TorchStateDict.read(oob)), oob.toString(), "'w'", "storage '0'");
        // a storage entry shorter than its numel
        Path shortSt = archive("short.bin", oneTensorPickle("FloatStorage", "0", 8, 0, new long[] {8}, new long[] {1}),
                Map.of("archive/data/0", four));
        assertOneLineNaming(assertThrows(TorchFormatException.class, () -> TorchStateDict.read(shortSt)), shortSt.toString(), "'0'", "16 bytes");
        // an opcode outside the table (INST executes a class) and a bad one
        Path inst = archive("inst.bin", new P().op(0x80, 2).raw("ios\nsystem\n".getBytes(StandardCharsets.US_ASCII)).op('.').bytes(), Map.of());
        assertOneLineNaming(assertThrows(TorchFormatException.class, () -> TorchStateDict.read(inst)), inst.toString(), "INST");
        Path bad = archive("badop.bin", new P().op(0x80, 2).op(0xff).bytes(), Map.of());
        assertOneLineNaming(assertThrows(TorchFormatException.class, () -> TorchStateDict.read(bad)), bad.toString(), "0xff");
        // a checkpoint wrapper {'state_dict': {...}, 'epoch': 3} is not guessed at
        byte[] wrapped = new P().op(0x80, 2).op('}').put(0).op('(').str("state_dict").put(1).op('}').put(2)
                .str("epoch").put(3).op('K', 3).op('u').op('.').bytes();
        Path wrap = archive("wrapped.bin", wrapped, Map.of());
        assertOneLineNaming(assertThrows(TorchFormatException.class, () -> TorchStateDict.read(wrap)), wrap.toString(), "'state_dict'", "nested");
        // the legacy format: a bare pickle stream starting with the magic number
        Path legacy = dir.resolve("legacy.bin");
        Files.write(legacy, new byte[] {(byte) 0x80, 2, (byte) 0x8a, 0x0a, 0x6c, (byte) 0xfc, (byte) 0x9c, 0x46, (byte) 0xf9, 0x20, 0x6a, (byte) 0xa8, 0x50, 0x19, '.'});
        assertOneLineNaming(assertThrows(TorchFormatException.class, () -> TorchStateDict.read(legacy)), legacy.toString(), "legacy");
        // big-endian archives
        Path be = archive("be.bin", oneTensorPickle("FloatStorage", "0", 4, 0, new long[] {4}, new long[] {1}),
                Map.of("archive/data/0", four, "archive/byteorder", "big".getBytes(StandardCharsets.US_ASCII)));
        assertOneLineNaming(assertThrows(TorchFormatException.class, () -> TorchStateDict.read(be)), be.toString(), "'big'");
        // a pickle without STOP
        Path nostop = archive("nostop.bin", new P().op(0x80, 2).op('}').bytes(), Map.of());
        assertOneLineNaming(assertThrows(TorchFormatException.class, () -> TorchStateDict.read(nostop)), nostop.toString(), "STOP");
        // a sanity check of the helper: the same pickle with its storage reads fine
        Path ok = archive("ok.bin", oneTensorPickle("FloatStorage", "0", 4, 1, new long[] {3}, new long[] {1}), Map.of("archive/data/0", four));
        check(TorchStateDict.read(ok).get("w"), DType.F32, new long[] {3}, 2, 3, 4);
        // an expanded view (x.expand(3, 2) of a 2-element storage: stride 0) is materialised
        Path exp = archive("expand.bin", oneTensorPickle("FloatStorage", "0", 4, 2, new long[] {3, 2}, new long[] {0, 1}), Map.of("archive/data/0", four));
        check(TorchStateDict.read(exp).get("w"), DType.F32, new long[] {3, 2}, 3, 4, 3, 4, 3, 4);
        // ... but not into an absurd allocation
        Path huge = archive("huge.bin", oneTensorPickle("FloatStorage", "0", 4, 0, new long[] {255, 255, 255, 255}, new long[] {0, 0, 0, 0}),
                Map.of("archive/data/0", four));
        assertOneLineNaming(assertThrows(TorchFormatException.class, () -> TorchStateDict.read(huge)), huge.toString(), "'w'", "expanded view");
    }

    // ---------------------------------------------------------------- helpers

    private static Map<String, Tensor> sampleTensors(Random r) {
        Map<String, Tensor> m = new LinkedHashMap<>();
        m.put("embeddings.word_embeddings.weight", randF32(r, 7, 5));
        m.put("embeddings.position_ids", randBits(r, DType.I64, 1, 9));
        m.put("scale", randF32(r));                     // 0-d scalar
        m.put("encoder.layer.0.attention.self.query.bias", randF32(r, 5));
        m.put("cube", randF32(r, 2, 3, 4));
        m.put("lora_A.weight", randBits(r, DType.F16, 4, 4));
        m.put("lora_B.weight", randBits(r, DType.BF16, 6));
        m.put("counts", randBits(r, DType.I32, 2, 2));
        m.put("empty", randF32(r, 0, 3));
        return m;
    }

    private static Tensor randF32(Random r, long... shape) {
        long n = 1;
        for (long d : shape) n *= d;
        float[] v = new float[(int) n];
        for (int i = 0; i < v.length; i++) v[i] = (float) r.nextGaussian();
        return Tensor.of(v, shape);
    }

    private static Tensor randBits(Random r, DType dt, long... shape) {
        long n = 1;
        for (long d : shape) n *= d;
        byte[] b = new byte[(int) n * dt.bytes];
        r.nextBytes(b);
        MemorySegment seg = Arena.ofAuto().allocate(Math.max(1, b.length), 8).asSlice(0, b.length);
        MemorySegment.copy(b, 0, seg, ValueLayout.JAVA_BYTE, 0, b.length);
        return new Tensor(dt, shape, seg);
    }

    private static void assertSameTensors(Map<String, Tensor> expected, Map<String, Tensor> actual) {
        assertEquals(new ArrayList<>(expected.keySet()), new ArrayList<>(actual.keySet()), "keys and their order");
        for (String k : expected.keySet()) {
            Tensor e = expected.get(k), a = actual.get(k);
            assertEquals(e.dtype, a.dtype, k);
            assertArrayEquals(e.shape(), a.shape(), k);
            assertEquals(-1, e.data.mismatch(a.data), k + ": bytes differ");
        }
    }

    private static void check(Tensor t, DType dt, long[] shape, float... values) {
        assertEquals(dt, t.dtype);
        assertArrayEquals(shape, t.shape());
        assertArrayEquals(values, t.toFloatArray());
    }

    private static void assertOneLineNaming(TorchFormatException e, String... parts) {
        String m = e.getMessage();
        assertFalse(m.contains("\n"), "message must be one line: " + m);
        for (String p : parts) assertTrue(m.contains(p), "message should mention " + p + ": " + m);
    }

    private static byte[] f32Bytes(float[] v) {
        ByteBuffer b = ByteBuffer.allocate(v.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (float x : v) b.putFloat(x);
        return b.array();
    }

    /** {'w': _rebuild_tensor_v2(('storage', torch.<type>, key, 'cpu', numel), offset, size, stride, False, OrderedDict())} */
    private static byte[] oneTensorPickle(String storageType, String key, int numel, int offset, long[] size, long[] stride) {
        P p = new P().op(0x80, 2).op('}').put(0).str("w").put(1).global("torch._utils", "_rebuild_tensor_v2").put(2)
                .op('(').op('(').str("storage").put(3).global("torch", storageType).put(4).str(key).put(5).str("cpu").put(6)
                .op('K', numel).op('t').put(7).op('Q').op('K', offset);
        p.op('(');
        for (long s : size) p.op('K', (int) s);
        p.op('t').op('(');
        for (long s : stride) p.op('K', (int) s);
        p.op('t').op(0x89).global("collections", "OrderedDict").op(')').op('R').op('t').op('R').op('s').op('.');
        return p.bytes();
    }

    /** An archive/ zip (java.util.zip) with data.pkl, version and the given extra entries. */
    private Path archive(String name, byte[] pickle, Map<String, byte[]> extra) throws IOException {
        Map<String, byte[]> e = new LinkedHashMap<>();
        e.put("archive/data.pkl", pickle);
        e.putAll(extra);
        e.put("archive/version", "3\n".getBytes(StandardCharsets.US_ASCII));
        Path f = dir.resolve(name);
        jdkZip(f, e, null);
        return f;
    }

    /** Zips entries with java.util.zip: STORED, except {@code deflated} (if any). */
    private static void jdkZip(Path f, Map<String, byte[]> entries, String deflated) throws IOException {
        try (ZipOutputStream z = new ZipOutputStream(Files.newOutputStream(f))) {
            for (Map.Entry<String, byte[]> e : entries.entrySet()) {
                ZipEntry ze = new ZipEntry(e.getKey());
                if (!e.getKey().equals(deflated)) {
                    ze.setMethod(ZipEntry.STORED);
                    ze.setSize(e.getValue().length);
                    ze.setCompressedSize(e.getValue().length);
                    CRC32 crc = new CRC32();
                    crc.update(e.getValue());
                    ze.setCrc(crc.getValue());
                } else {
                    ze.setMethod(ZipEntry.DEFLATED);
                }
                z.putNextEntry(ze);
                z.write(e.getValue());
                z.closeEntry();
            }
        }
    }

    private static Map<String, byte[]> unzip(Path f) throws IOException {
        Map<String, byte[]> out = new LinkedHashMap<>();
        try (InputStream in = Files.newInputStream(f); ZipInputStream z = new ZipInputStream(in)) {
            for (ZipEntry e; (e = z.getNextEntry()) != null; ) out.put(e.getName(), z.readAllBytes());
        }
        return out;
    }

    /** A pickle assembled opcode by opcode. */
    private static final class P {
        private final ByteArrayOutputStream b = new ByteArrayOutputStream();

        P op(int... bytes) { for (int x : bytes) b.write(x); return this; }
        P raw(byte[] bytes) { b.writeBytes(bytes); return this; }
        P put(int memo) { return op('q', memo); }
        P get(int memo) { return op('h', memo); }
        P longPut(int memo) { return op('r').u32(memo); }
        P longGet(int memo) { return op('j').u32(memo); }
        P memo() { return op(0x94); }

        P global(String module, String name) {
            return op('c').raw((module + "\n" + name + "\n").getBytes(StandardCharsets.UTF_8));
        }

        /** BINUNICODE */
        P str(String s) {
            byte[] u = s.getBytes(StandardCharsets.UTF_8);
            return op('X').u32(u.length).raw(u);
        }

        /** SHORT_BINUNICODE */
        P sstr(String s) {
            byte[] u = s.getBytes(StandardCharsets.UTF_8);
            return op(0x8c, u.length).raw(u);
        }

        P binfloat(double d) {
            return op('G').raw(ByteBuffer.allocate(8).order(ByteOrder.BIG_ENDIAN).putDouble(d).array());
        }

        P u32(int v) { return op(v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >>> 24) & 0xff); }

        P u64(long v) { for (int i = 0; i < 8; i++) b.write((int) (v >>> (8 * i)) & 0xff); return this; }

        byte[] bytes() { return b.toByteArray(); }
    }
}
