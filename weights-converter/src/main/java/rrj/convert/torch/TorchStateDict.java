package rrj.convert.torch;

import rrj.convert.FileText;
import rrj.engine.DType;
import rrj.engine.Tensor;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.math.BigInteger;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Reads and writes PyTorch state dicts in the zip format of {@code torch.save} (PyTorch >= 1.6),
 * the format of e.g. facebook/contriever's {@code pytorch_model.bin} and PEFT's
 * {@code adapter_model.bin}, without Python.
 *
 * <p>The archive (mirroring torch/serialization.py {@code _save}/{@code _load} and
 * caffe2/serialize/inline_container.cc) holds, under one top-level folder ({@code archive} when
 * torch writes to a buffer, the file's stem when it writes to a path): {@code data.pkl}, a pickle
 * of the state dict in which each tensor is {@code torch._utils._rebuild_tensor_v2(storage,
 * storage_offset, size, stride, requires_grad, backward_hooks)} and each storage a persistent id
 * {@code ('storage', torch.FloatStorage, key, location, numel)}; {@code data/<key>}, the raw
 * little-endian elements of each storage; {@code version}; {@code byteorder} (absent in files
 * from torch < 2.1, meaning little-endian); newer torch adds {@code .format_version},
 * {@code .storage_alignment} and {@code .data/serialization_id}, which are ignored.
 *
 * <p>Reading maps the file once: a contiguous tensor is a zero-copy slice of its (STORED, as torch
 * always writes) storage entry, whatever its storage_offset; tensors sharing a storage (tied
 * weights, views) share it here too; a non-contiguous view (a transpose, a stepped slice) is
 * copied into a row-major tensor (an expanded, stride-0 view too, up to 256 MiB beyond its
 * storage); a DEFLATED entry (never written by torch) is inflated into a copy. Supported dtypes:
 * float32, float16, bfloat16, int32, int64.
 * The mapping lives as long as the arena (garbage-collected for {@link #read(Path)}).
 *
 * <p>Deliberately not supported, each refused with a one-line {@link TorchFormatException} that
 * names the file and the key, opcode or global: executing anything from the pickle (only the
 * allow-listed globals of {@link TorchUnpickler} are understood), the legacy pre-1.6 format
 * (a bare pickle stream or a tar), TorchScript archives, big-endian archives, other dtypes
 * (float64, bool, int8/uint8, complex, quantized), and checkpoints whose top level is not a flat
 * {@code {name: tensor}} dict: a wrapper such as {@code {"state_dict": {...}, "epoch": 3}} or
 * {@code {"model": {...}}} is refused, naming the entry, rather than guessed at; unwrap it
 * in Python first. (The {@code _metadata} attribute that {@code Module.state_dict()} attaches is
 * accepted and ignored.)
 */
public final class TorchStateDict {
    private TorchStateDict() {}

    /** Largest data.pkl accepted: a state dict's pickle is a few hundred bytes per tensor. */
    private static final long MAX_PICKLE_BYTES = 256L << 20;

    /** Reads a state dict; tensors keep the file mapped until they are unreachable. */
    public static Map<String, Tensor> read(Path binFile) throws IOException {
        return read(binFile, Arena.ofAuto());
    }

    /**
     * Reads a state dict, mapping the file (and allocating copies of strided views) in
     * {@code arena}; the tensors are valid while the arena is open. Keys in pickle order.
     */
    public static Map<String, Tensor> read(Path binFile, Arena arena) throws IOException {
        if (!Files.exists(binFile)) throw new NoSuchFileException(binFile.toString(), null, "file not found");
        try (FileChannel ch = FileChannel.open(binFile, StandardOpenOption.READ)) {
            refuseNonZip(binFile, ch);
            TorchZip.Reader zip = TorchZip.Reader.open(binFile, ch, arena);
            if (zip.entries.isEmpty()) throw new TorchFormatException(binFile + ": zip archive has no entries");
            String first = zip.entries.keySet().iterator().next();
            int slash = first.indexOf('/');
            if (slash <= 0) throw new TorchFormatException(binFile + ": not a torch.save archive (entry " + FileText.quote(first) + " is not in a top-level folder)");
            String prefix = first.substring(0, slash + 1);

            TorchZip.Entry pkl = zip.entries.get(prefix + "data.pkl");
            if (pkl == null) {
                if (zip.entries.containsKey(prefix + "constants.pkl") || zip.entries.containsKey(prefix + "code/"))
                    throw new TorchFormatException(binFile + ": this is a TorchScript archive (torch.jit.save), not a torch.save state dict");
                throw new TorchFormatException(binFile + ": not a torch.save archive (no " + FileText.quote(prefix + "data.pkl") + ")");
            }
            checkVersion(binFile, zip, prefix);
            TorchZip.Entry bo = zip.entries.get(prefix + "byteorder");
            if (bo != null) {
                String order = new String(zip.bytes(bo, 64), StandardCharsets.US_ASCII).strip();
                if (!order.equals("little"))
                    throw new TorchFormatException(binFile + ": byteorder is " + FileText.quote(order) + "; only little-endian archives are supported");
            }

            byte[] pickle = zip.bytes(pkl, MAX_PICKLE_BYTES);
            TorchUnpickler.StorageSource source = key -> {
                TorchZip.Entry e = zip.entries.get(prefix + "data/" + key);
                if (e == null)
                    throw new TorchFormatException(binFile + ": storage " + FileText.quote(key) + " is missing (no zip entry "
                            + FileText.quote(prefix + "data/" + key) + ")");
                return zip.data(e, arena);
            };
            Object top = new TorchUnpickler(binFile + ": " + pkl.name(), pickle, source, arena).load();
            return flatten(binFile, top);
        }
    }

    private static void refuseNonZip(Path file, FileChannel ch) throws IOException {
        java.nio.ByteBuffer head = java.nio.ByteBuffer.allocate(512);
        while (head.hasRemaining() && ch.read(head, head.position()) > 0) { /* fill */ }
        byte[] h = java.util.Arrays.copyOf(head.array(), head.position());
        if (h.length >= 4 && h[0] == 'P' && h[1] == 'K' && h[2] == 3 && h[3] == 4) return;
        if (h.length >= 2 && (h[0] & 0xff) == 0x80 && h[1] >= 1 && h[1] <= 5)
            throw new TorchFormatException(file + ": legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it with torch >= 1.6");
        if (h.length >= 262 && new String(h, 257, 5, StandardCharsets.US_ASCII).equals("ustar"))
            throw new TorchFormatException(file + ": legacy tar-based torch.save format is not supported; re-save it with torch >= 1.6");
        throw new TorchFormatException(file + ": not a PyTorch zip checkpoint (does not start with a zip local header)");
    }

    private static void checkVersion(Path file, TorchZip.Reader zip, String prefix) {
        TorchZip.Entry v = zip.entries.get(prefix + "version");
        if (v == null) v = zip.entries.get(prefix + ".data/version");
        if (v == null) throw new TorchFormatException(file + ": not a torch.save archive (no " + FileText.quote(prefix + "version") + " record)");
        String s = new String(zip.bytes(v, 64), StandardCharsets.US_ASCII).strip();
        long n;
        try {
            n = Long.parseLong(s);
        } catch (NumberFormatException e) {
            n = -1;
        }
        // inline_container.h: kMinSupportedFileFormatVersion 1 .. kMaxSupportedFileFormatVersion (currently 10)
        if (n < 1 || n > 10)
            throw new TorchFormatException(file + ": unsupported archive version " + FileText.quote(s) + " (supported: 1..10)");
        TorchZip.Entry fv = zip.entries.get(prefix + ".format_version");
        if (fv != null) {
            String f = new String(zip.bytes(fv, 64), StandardCharsets.US_ASCII).strip();
            if (!f.equals("1")) throw new TorchFormatException(file + ": unsupported .format_version " + FileText.quote(f));
        }
    }

    private static Map<String, Tensor> flatten(Path file, Object top) {
        if (!(top instanceof TorchUnpickler.PyDict d))
            throw new TorchFormatException(file + ": top-level object is " + TorchUnpickler.aType(top) + ", not a state dict");
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (Map.Entry<Object, Object> e : d.map.entrySet()) {
            if (!(e.getKey() instanceof String key))
                throw new TorchFormatException(file + ": state-dict key " + e.getKey() + " is " + TorchUnpickler.aType(e.getKey()) + ", not a string");
            Object v = e.getValue();
            if (v instanceof Tensor t) out.put(key, t);
            else if (v instanceof TorchUnpickler.Refused r)
                throw new TorchFormatException(file + ": tensor " + FileText.quote(key) + ": " + r.reason());
            else if (v instanceof TorchUnpickler.PyDict)
                throw new TorchFormatException(file + ": entry " + FileText.quote(key) + " is a nested "
                        + TorchUnpickler.typeName(v) + ", not a tensor (a checkpoint wrapper such as {'state_dict': ...} "
                        + "is not unwrapped; save the inner state dict on its own)");
            else
                throw new TorchFormatException(file + ": entry " + FileText.quote(key) + " is "
                        + TorchUnpickler.aType(v) + ", not a tensor");
        }
        return out;
    }

    // ------------------------------------------------------------------------------------------
    // Writing

    /**
     * Writes {@code tensors} (map order) as {@code torch.save(OrderedDict(tensors), f)} would,
     * to a temporary file beside {@code binFile} that is moved over it when complete. Archive
     * folder {@code archive}; every record STORED and 64-byte aligned; one storage per tensor,
     * except that entries whose data is the very same memory (tied weights) share one.
     */
    public static void write(Path binFile, Map<String, Tensor> tensors) throws IOException {
        String prefix = "archive/";
        List<MemorySegment> storages = new ArrayList<>();
        List<DType> storageTypes = new ArrayList<>();
        Pickler p = new Pickler();
        p.proto();
        p.global("collections", "OrderedDict");
        p.emptyTuple();
        p.reduce();
        List<Map.Entry<String, Tensor>> items = new ArrayList<>(tensors.entrySet());
        // pickle.py _batch_setitems: MARK k v k v ... SETITEMS per batch of 1000; a lone item uses SETITEM.
        for (int start = 0; start < items.size(); start += 1000) {
            int n = Math.min(1000, items.size() - start);
            if (n > 1) p.mark();
            for (int i = start; i < start + n; i++) {
                String name = items.get(i).getKey();
                Tensor t = items.get(i).getValue();
                if (name == null) throw new IllegalArgumentException("null tensor name");
                if (t == null || t.data == null) throw new IllegalArgumentException("tensor '" + name + "' has no host data");
                int key = -1;
                for (int s = 0; s < storages.size(); s++) {
                    if (storageTypes.get(s) == t.dtype && sameMemory(storages.get(s), t.data)) { key = s; break; }
                }
                if (key < 0) {
                    key = storages.size();
                    storages.add(t.data);
                    storageTypes.add(t.dtype);
                }
                p.string(name);
                p.tensor(t, Integer.toString(key));
            }
            p.op(n > 1 ? 'u' : 's');
        }
        p.op('.');

        Path parent = binFile.toAbsolutePath().getParent();
        Files.createDirectories(parent);
        Path tmp = Files.createTempFile(parent, binFile.getFileName().toString(), ".tmp");
        try {
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
                TorchZip.Writer zw = new TorchZip.Writer(ch);
                zw.add(prefix + "data.pkl", p.bytes());
                zw.add(prefix + "byteorder", "little".getBytes(StandardCharsets.US_ASCII));
                for (int s = 0; s < storages.size(); s++) zw.add(prefix + "data/" + s, storages.get(s));
                zw.add(prefix + "version", "3\n".getBytes(StandardCharsets.US_ASCII));
                zw.finish();
                ch.force(false);
            }
            Files.move(tmp, binFile, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    private static boolean sameMemory(MemorySegment a, MemorySegment b) {
        if (a == b) return true;
        return a.isNative() && b.isNative() && a.address() == b.address() && a.byteSize() == b.byteSize();
    }

    static String storageClass(DType t) {
        return switch (t) {
            case F32 -> "FloatStorage";
            case F16 -> "HalfStorage";
            case BF16 -> "BFloat16Storage";
            case I32 -> "IntStorage";
            case I64 -> "LongStorage";
            case F64 -> "DoubleStorage";
        };
    }

    /**
     * Emits pickle protocol 2 the way CPython's pickle.py does for torch's objects: every global,
     * string, non-empty tuple and reduced object is memoized (BINPUT, LONG_BINPUT past 255) and a
     * repeat of the same global or string is a BINGET.
     */
    private static final class Pickler {
        private final ByteArrayOutputStream out = new ByteArrayOutputStream();
        private final Map<Object, Integer> memo = new HashMap<>();
        private int next;

        void proto() { op(0x80); op(2); }
        void mark() { op('('); }
        void emptyTuple() { op(')'); }
        void reduce() { op('R'); put(); }

        void op(int b) { out.write(b); }

        byte[] bytes() { return out.toByteArray(); }

        /** A new memo slot for the object just written. */
        private int put() {
            int i = next++;
            if (i < 256) { op('q'); op(i); }
            else { op('r'); u32(i); }
            return i;
        }

        private boolean get(Object key) {
            Integer i = memo.get(key);
            if (i == null) return false;
            if (i < 256) { op('h'); op(i); }
            else { op('j'); u32(i); }
            return true;
        }

        void global(String module, String name) {
            String k = "global:" + module + "." + name;
            if (get(k)) return;
            op('c');
            out.writeBytes((module + "\n" + name + "\n").getBytes(StandardCharsets.UTF_8));
            memo.put(k, put());
        }

        void string(String s) {
            String k = "str:" + s;
            if (get(k)) return;
            byte[] u = s.getBytes(StandardCharsets.UTF_8);
            op('X');
            u32(u.length);
            out.writeBytes(u);
            memo.put(k, put());
        }

        void integer(long x) {
            if (x >= 0 && x <= 0xff) { op('K'); op((int) x); }
            else if (x >= 0 && x <= 0xffff) { op('M'); op((int) x & 0xff); op((int) (x >> 8)); }
            else if (x >= Integer.MIN_VALUE && x <= Integer.MAX_VALUE) { op('J'); u32((int) x); }
            else {
                byte[] be = BigInteger.valueOf(x).toByteArray(); // minimal two's complement, like pickle.encode_long
                op(0x8a);
                op(be.length);
                for (int i = be.length - 1; i >= 0; i--) op(be[i]);
            }
        }

        /** A tuple of ints: EMPTY_TUPLE, or TUPLE1/2/3, or MARK ... TUPLE; non-empty ones memoized. */
        void intTuple(long[] xs) {
            if (xs.length == 0) { emptyTuple(); return; }
            if (xs.length > 3) mark();
            for (long x : xs) integer(x);
            op(switch (xs.length) { case 1 -> 0x85; case 2 -> 0x86; case 3 -> 0x87; default -> 't'; });
            put();
        }

        /**
         * {@code _rebuild_tensor_v2(('storage', torch.XStorage, key, 'cpu', numel) as BINPERSID,
         * 0, size, stride, False, OrderedDict())}, as Tensor.__reduce_ex__ produces it.
         */
        void tensor(Tensor t, String key) {
            global("torch._utils", "_rebuild_tensor_v2");
            mark();                        // args tuple
            mark();                        // persistent id tuple
            string("storage");
            global("torch", storageClass(t.dtype));
            string(key);
            string("cpu");
            integer(t.numel());
            op('t');
            put();
            op('Q');                       // BINPERSID
            integer(0);                    // storage_offset
            long[] shape = t.shape();
            intTuple(shape);
            long[] stride = new long[shape.length];
            long s = 1;
            for (int i = shape.length - 1; i >= 0; i--) { stride[i] = s; s *= Math.max(shape[i], 1); } // as torch: empty dims count as 1
            intTuple(stride);
            op(0x89);                      // requires_grad=False
            global("collections", "OrderedDict");
            emptyTuple();
            reduce();                      // backward_hooks = OrderedDict()
            op('t');
            put();
            reduce();
        }

        private void u32(int v) {
            op(v & 0xff); op((v >> 8) & 0xff); op((v >> 16) & 0xff); op((v >>> 24) & 0xff);
        }
    }
}
