package rrj.model;

import rrj.engine.DType;
import rrj.engine.Tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The safetensors format (huggingface/safetensors): an 8-byte little-endian header length N,
 * N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {..}},
 * then the raw little-endian data. Offsets are relative to the end of the header.
 *
 * <p>Reading maps the file once and hands out zero-copy slices; the mapping lives as long as
 * the arena given to {@link #open}. Every inconsistency is reported with the file and key.
 * Writing goes to a temporary file that is moved into place, so a failed write leaves nothing.
 */
public final class Safetensors {
    private Safetensors() {}

    /** An error in a safetensors file; the message names the file and the key. */
    public static final class FormatException extends RuntimeException {
        public FormatException(String message) { super(message); }
    }

    /** A mapped file: tensors by name (file order) and the free-form metadata. */
    public record File(Path path, Map<String, Tensor> tensors, Map<String, String> metadata) {
        public Tensor get(String name) {
            Tensor t = tensors.get(name);
            if (t == null) throw new FormatException(path + ": missing tensor '" + name + "'");
            return t;
        }
    }

    public static File open(Path path, Arena arena) throws IOException {
        if (!Files.exists(path)) throw new NoSuchFileException(path.toString(), null, "file not found");
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size < 8) throw new FormatException(path + ": truncated safetensors file (" + size + " bytes, no header)");
            MemorySegment all = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            long n = all.get(ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), 0);
            if (n <= 0 || n > 100_000_000 || 8 + n > size)
                throw new FormatException(path + ": truncated or corrupt safetensors header (header length " + n + ", file " + size + " bytes)");
            byte[] hb = all.asSlice(8, n).toArray(ValueLayout.JAVA_BYTE);
            Map<String, Object> header;
            try {
                header = Json.parseObject(new String(hb, StandardCharsets.UTF_8));
            } catch (Json.JsonException e) {
                throw new FormatException(path + ": safetensors header is not valid JSON: " + e.getMessage());
            }
            long dataStart = 8 + n;
            long dataLen = size - dataStart;
            Map<String, Tensor> tensors = new LinkedHashMap<>();
            Map<String, String> meta = new LinkedHashMap<>();
            for (Map.Entry<String, Object> e : header.entrySet()) {
                String key = e.getKey();
                if (key.equals("__metadata__")) {
                    if (e.getValue() instanceof Map<?, ?> m)
                        for (Map.Entry<?, ?> me : m.entrySet()) meta.put(String.valueOf(me.getKey()), String.valueOf(me.getValue()));
                    continue;
                }
                if (!(e.getValue() instanceof Map<?, ?> info))
                    throw new FormatException(path + ": tensor '" + key + "': header entry is not an object");
                Object dt = info.get("dtype");
                DType dtype = dt instanceof String ds ? DType.fromSafetensors(ds) : null;
                if (dtype == null) throw new FormatException(path + ": tensor '" + key + "': unsupported dtype " + dt);
                long[] shape = longs(path, key, "shape", info.get("shape"));
                long[] off = longs(path, key, "data_offsets", info.get("data_offsets"));
                if (off.length != 2) throw new FormatException(path + ": tensor '" + key + "': data_offsets must have 2 entries");
                long numel = 1;
                for (long d : shape) numel *= d;
                if (off[1] < off[0] || off[1] - off[0] != numel * dtype.bytes)
                    throw new FormatException(path + ": tensor '" + key + "': data_offsets " + off[0] + ".." + off[1]
                            + " do not match shape " + java.util.Arrays.toString(shape) + " " + dtype);
                if (off[1] > dataLen)
                    throw new FormatException(path + ": truncated safetensors file: tensor '" + key + "' ends at byte "
                            + (dataStart + off[1]) + " but the file has " + size + " bytes");
                tensors.put(key, new Tensor(dtype, shape, all.asSlice(dataStart + off[0], off[1] - off[0])));
            }
            return new File(path, tensors, meta);
        }
    }

    private static long[] longs(Path path, String key, String field, Object v) {
        if (!(v instanceof List<?> l)) throw new FormatException(path + ": tensor '" + key + "': missing or bad '" + field + "'");
        long[] out = new long[l.size()];
        for (int i = 0; i < out.length; i++) {
            if (!(l.get(i) instanceof Long x) || x < 0)
                throw new FormatException(path + ": tensor '" + key + "': bad '" + field + "' entry " + l.get(i));
            out[i] = x;
        }
        return out;
    }

    /**
     * Writes tensors (in map order) and string metadata. Atomic: the data goes to a temporary
     * file beside {@code path}, which is moved over it only when complete.
     */
    public static void write(Path path, Map<String, Tensor> tensors, Map<String, String> metadata) throws IOException {
        Map<String, Object> header = new LinkedHashMap<>();
        if (metadata != null && !metadata.isEmpty()) header.put("__metadata__", new LinkedHashMap<String, Object>(metadata));
        long off = 0;
        for (Map.Entry<String, Tensor> e : tensors.entrySet()) {
            Tensor t = e.getValue();
            Map<String, Object> info = new LinkedHashMap<>();
            info.put("dtype", t.dtype.safetensorsName());
            List<Object> shape = new ArrayList<>();
            for (long d : t.shape()) shape.add(d);
            info.put("shape", shape);
            long len = t.numel() * t.dtype.bytes;
            info.put("data_offsets", List.of(off, off + len));
            off += len;
            header.put(e.getKey(), info);
        }
        byte[] hb = Json.write(header).getBytes(StandardCharsets.UTF_8);
        int pad = (int) ((8 - hb.length % 8) % 8); // keep the data 8-byte aligned, as the reference writer does
        byte[] padded = new byte[hb.length + pad];
        System.arraycopy(hb, 0, padded, 0, hb.length);
        for (int i = hb.length; i < padded.length; i++) padded[i] = ' ';
        Path parent = path.toAbsolutePath().getParent();
        Files.createDirectories(parent);
        Path tmp = Files.createTempFile(parent, path.getFileName().toString(), ".tmp");
        try {
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
                ByteBuffer len = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(padded.length).flip();
                writeFully(ch, len);
                writeFully(ch, ByteBuffer.wrap(padded));
                for (Tensor t : tensors.values()) {
                    if (t.data == null) throw new IllegalArgumentException("tensor has no host data: " + t);
                    writeFully(ch, t.data.asByteBuffer());
                }
                ch.force(false);
            }
            readableByAll(tmp); // createTempFile makes 0600 files; a model file is as readable as any other
            Files.move(tmp, path, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    /** rw-r--r-- (files) or rwxr-xr-x (directories) where the file system has POSIX permissions. */
    public static void readableByAll(Path p) throws IOException {
        if (!Files.getFileStore(p).supportsFileAttributeView("posix")) return;
        Files.setPosixFilePermissions(p, java.nio.file.attribute.PosixFilePermissions.fromString(
                Files.isDirectory(p) ? "rwxr-xr-x" : "rw-r--r--"));
    }

    private static void writeFully(FileChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) ch.write(b);
    }
}
