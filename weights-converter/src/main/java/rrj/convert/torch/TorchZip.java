package rrj.convert.torch;

import rrj.convert.FileText;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32;
import java.util.zip.DataFormatException;
import java.util.zip.Inflater;

/**
 * The zip container of PyTorch's {@code torch.save} (PyTorch >= 1.6), read and written without
 * java.util.zip's streams so that STORED entries can be handed out as zero-copy slices of one
 * memory mapping of the file.
 *
 * <p>Mirrors what caffe2/serialize/inline_container.cc (PyTorchStreamReader/Writer, built on miniz)
 * produces: every record STORED, the data of each record aligned to 64 bytes by a padding extra
 * field in the local header (id "FB", then that many 'Z' bytes), CRC-32s filled in, no data
 * descriptors. Reading follows APPNOTE.TXT: the end-of-central-directory record (zip64 too) gives
 * the central directory, whose entries give each local header, whose own name and extra lengths
 * give where the data starts.
 *
 * <p>Deliberately not done: encryption, multi-disk archives, compression methods other than
 * STORED and DEFLATED (deflated entries are inflated into a copy), CRC checking on read (torch
 * does not check either), and writing archives over 4 GiB (zip64 writing; reading zip64 works).
 */
final class TorchZip {
    private TorchZip() {}

    static final int ALIGNMENT = 64;

    private static final ValueLayout.OfShort U16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfInt U32 = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfLong U64 = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private static final int LOCAL_SIG = 0x04034b50;
    private static final int CENTRAL_SIG = 0x02014b50;
    private static final int EOCD_SIG = 0x06054b50;
    private static final int EOCD64_SIG = 0x06064b50;
    private static final int EOCD64_LOCATOR_SIG = 0x07064b50;
    private static final long MAX32 = 0xffffffffL;

    /** One entry of the central directory, with the resolved start of its data. */
    record Entry(String name, int method, long crc, long compressedSize, long size, long localHeaderOffset, long dataOffset) {}

    /** A zip file mapped read-only; entries in central-directory order. */
    static final class Reader {
        final Path path;
        final MemorySegment file;
        final Map<String, Entry> entries;

        private Reader(Path path, MemorySegment file, Map<String, Entry> entries) {
            this.path = path;
            this.file = file;
            this.entries = entries;
        }

        /** Maps {@code path} in {@code arena} and indexes its central directory. */
        static Reader open(Path path, FileChannel ch, Arena arena) throws IOException {
            long size = ch.size();
            if (size < 22) throw new TorchFormatException(path + ": not a zip archive (" + size + " bytes, too short for an end-of-central-directory record)");
            MemorySegment f = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            return new Reader(path, f, index(path, f));
        }

        private static Map<String, Entry> index(Path path, MemorySegment f) {
            long size = f.byteSize();
            // The EOCD is the last 22 bytes plus a comment of up to 65535 bytes; take the last
            // signature whose comment length reaches exactly to the end of the file.
            long eocd = -1;
            for (long p = size - 22; p >= Math.max(0, size - 22 - 0xffff); p--) {
                if (f.get(U32, p) == EOCD_SIG && p + 22 + u16(f, p + 20) == size) { eocd = p; break; }
            }
            if (eocd < 0) throw new TorchFormatException(path + ": truncated or corrupt zip archive (no end-of-central-directory record)");
            long count = u16(f, eocd + 10);
            long cdSize = u32(f, eocd + 12);
            long cdOffset = u32(f, eocd + 16);
            if (u16(f, eocd + 4) != 0 || u16(f, eocd + 6) != 0)
                throw new TorchFormatException(path + ": multi-disk zip archives are not supported");
            if (eocd >= 20 && f.get(U32, eocd - 20) == EOCD64_LOCATOR_SIG) {
                long e64 = f.get(U64, eocd - 20 + 8);
                if (e64 < 0 || e64 + 56 > eocd || f.get(U32, e64) != EOCD64_SIG)
                    throw new TorchFormatException(path + ": corrupt zip64 end-of-central-directory record");
                count = f.get(U64, e64 + 32);
                cdSize = f.get(U64, e64 + 40);
                cdOffset = f.get(U64, e64 + 48);
            }
            if (cdOffset < 0 || cdSize < 0 || cdOffset + cdSize > eocd || count < 0 || count > cdSize / 46)
                throw new TorchFormatException(path + ": truncated or corrupt zip archive (central directory at " + cdOffset
                        + ", " + cdSize + " bytes, " + count + " entries, file " + size + " bytes)");
            Map<String, Entry> out = new LinkedHashMap<>();
            long p = cdOffset;
            long cdEnd = cdOffset + cdSize;
            for (long i = 0; i < count; i++) {
                if (p + 46 > cdEnd || f.get(U32, p) != CENTRAL_SIG)
                    throw new TorchFormatException(path + ": corrupt zip central directory (entry " + i + " at byte " + p + ")");
                int flags = u16(f, p + 8);
                int method = u16(f, p + 10);
                long crc = u32(f, p + 16);
                long csize = u32(f, p + 20);
                long usize = u32(f, p + 24);
                int nameLen = u16(f, p + 28), extraLen = u16(f, p + 30), commentLen = u16(f, p + 32);
                long local = u32(f, p + 42);
                if (p + 46 + nameLen + extraLen + commentLen > cdEnd)
                    throw new TorchFormatException(path + ": corrupt zip central directory (entry " + i + " overruns it)");
                String name = new String(f.asSlice(p + 46, nameLen).toArray(ValueLayout.JAVA_BYTE), StandardCharsets.UTF_8);
                // zip64 extended information: the fields that were 0xffffffff, in this order.
                long x = p + 46 + nameLen, xEnd = x + extraLen;
                while (x + 4 <= xEnd) {
                    int id = u16(f, x), len = u16(f, x + 2);
                    if (x + 4 + len > xEnd) break;
                    if (id == 0x0001) {
                        long q = x + 4, qEnd = q + len;
                        if (usize == MAX32 && q + 8 <= qEnd) { usize = f.get(U64, q); q += 8; }
                        if (csize == MAX32 && q + 8 <= qEnd) { csize = f.get(U64, q); q += 8; }
                        if (local == MAX32 && q + 8 <= qEnd) { local = f.get(U64, q); }
                    }
                    x += 4 + len;
                }
                if ((flags & 1) != 0) throw new TorchFormatException(path + ": zip entry " + FileText.quote(name) + " is encrypted");
                if (local < 0 || local + 30 > cdOffset || f.get(U32, local) != LOCAL_SIG)
                    throw new TorchFormatException(path + ": corrupt zip archive (bad local header for entry " + FileText.quote(name) + ")");
                long data = local + 30 + u16(f, local + 26) + u16(f, local + 28);
                if (csize < 0 || usize < 0 || data + csize > cdOffset)
                    throw new TorchFormatException(path + ": truncated or corrupt zip archive (entry " + FileText.quote(name)
                            + " data " + data + "+" + csize + " runs past the central directory at " + cdOffset + ")");
                if (method == 0 && csize != usize)
                    throw new TorchFormatException(path + ": corrupt zip entry " + FileText.quote(name) + " (stored, but sizes differ)");
                out.put(name, new Entry(name, method, crc, csize, usize, local, data));
                p += 46 + nameLen + extraLen + commentLen;
            }
            return Collections.unmodifiableMap(out);
        }

        /**
         * The uncompressed bytes of an entry: a zero-copy slice of the mapping when STORED, an
         * inflated copy in {@code arena} when DEFLATED.
         */
        MemorySegment data(Entry e, Arena arena) {
            MemorySegment raw = file.asSlice(e.dataOffset(), e.compressedSize());
            if (e.method() == 0) return raw;
            if (e.method() != 8)
                throw new TorchFormatException(path + ": zip entry " + FileText.quote(e.name())
                        + " uses compression method " + e.method() + " (only stored and deflated are supported)");
            MemorySegment out = arena.allocate(Math.max(1, e.size()), ALIGNMENT).asSlice(0, e.size());
            Inflater inf = new Inflater(true);
            try {
                long inPos = 0, outPos = 0;
                byte[] in = new byte[1 << 16], o = new byte[1 << 16];
                while (!inf.finished()) {
                    if (inf.needsInput()) {
                        if (inPos >= raw.byteSize()) break;
                        int n = (int) Math.min(in.length, raw.byteSize() - inPos);
                        MemorySegment.copy(raw, ValueLayout.JAVA_BYTE, inPos, in, 0, n);
                        inf.setInput(in, 0, n);
                        inPos += n;
                    }
                    int n = inf.inflate(o);
                    if (n > 0) {
                        if (outPos + n > e.size()) throw new DataFormatException("more data than the declared size");
                        MemorySegment.copy(o, 0, out, ValueLayout.JAVA_BYTE, outPos, n);
                        outPos += n;
                    } else if (inf.needsDictionary()) throw new DataFormatException("needs a preset dictionary");
                }
                if (!inf.finished() || outPos != e.size()) throw new DataFormatException("inflated " + outPos + " of " + e.size() + " bytes");
            } catch (DataFormatException ex) {
                throw new TorchFormatException(path + ": corrupt deflated zip entry " + FileText.quote(e.name()) + ": " + ex.getMessage(), ex);
            } finally {
                inf.end();
            }
            return out;
        }

        /** A small entry's bytes as an array (pickles, version records). */
        byte[] bytes(Entry e, long maxBytes) {
            if (e.size() > maxBytes)
                throw new TorchFormatException(path + ": zip entry " + FileText.quote(e.name()) + " is " + e.size() + " bytes (limit " + maxBytes + ")");
            try (Arena a = Arena.ofConfined()) {
                return data(e, a).toArray(ValueLayout.JAVA_BYTE);
            }
        }
    }

    private static int u16(MemorySegment f, long off) { return f.get(U16, off) & 0xffff; }

    private static long u32(MemorySegment f, long off) { return f.get(U32, off) & MAX32; }

    /**
     * Writes STORED records one after the other, each record's data aligned to {@link #ALIGNMENT}
     * bytes as torch's PyTorchStreamWriter does, then the central directory on {@link #finish}.
     */
    static final class Writer {
        private final FileChannel ch;
        private final List<Entry> written = new ArrayList<>();
        private final byte[] buf = new byte[1 << 20];
        private long pos;

        Writer(FileChannel ch) throws IOException {
            this.ch = ch;
            this.pos = ch.position();
        }

        void add(String name, byte[] data) throws IOException {
            add(name, MemorySegment.ofArray(data));
        }

        void add(String name, MemorySegment data) throws IOException {
            byte[] nb = name.getBytes(StandardCharsets.UTF_8);
            long size = data.byteSize();
            long start = pos + 30 + nb.length + 4;
            int pad = (int) ((ALIGNMENT - start % ALIGNMENT) % ALIGNMENT);
            if (pos + 30 + nb.length + 4 + pad + size >= MAX32)
                throw new IOException("torch zip writer: archive would exceed 4 GiB at entry '" + name + "' (zip64 writing is not supported)");
            // Native memory is crc'd and written straight from the segment; other (heap) segments through a buffer.
            boolean direct = data.isNative() && size <= Integer.MAX_VALUE;
            CRC32 crc = new CRC32();
            if (direct) crc.update(data.asByteBuffer());
            else for (long off = 0; off < size; off += buf.length) {
                int n = (int) Math.min(buf.length, size - off);
                MemorySegment.copy(data, ValueLayout.JAVA_BYTE, off, buf, 0, n);
                crc.update(buf, 0, n);
            }
            long localOffset = pos;
            ByteBuffer h = ByteBuffer.allocate(30 + nb.length + 4 + pad).order(ByteOrder.LITTLE_ENDIAN);
            h.putInt(LOCAL_SIG).putShort((short) 20).putShort((short) utf8Flag(nb)).putShort((short) 0)
                    .putShort((short) 0).putShort((short) 0x21) // time 00:00:00, date 1980-01-01
                    .putInt((int) crc.getValue()).putInt((int) size).putInt((int) size)
                    .putShort((short) nb.length).putShort((short) (4 + pad)).put(nb)
                    .put((byte) 'F').put((byte) 'B').putShort((short) pad);
            for (int i = 0; i < pad; i++) h.put((byte) 'Z');
            writeFully(h.flip());
            long dataOffset = pos;
            if (direct) writeFully(data.asByteBuffer());
            else for (long off = 0; off < size; off += buf.length) {
                int n = (int) Math.min(buf.length, size - off);
                MemorySegment.copy(data, ValueLayout.JAVA_BYTE, off, buf, 0, n);
                writeFully(ByteBuffer.wrap(buf, 0, n));
            }
            written.add(new Entry(name, 0, crc.getValue(), size, size, localOffset, dataOffset));
        }

        void finish() throws IOException {
            long cdStart = pos;
            for (Entry e : written) {
                byte[] nb = e.name().getBytes(StandardCharsets.UTF_8);
                ByteBuffer c = ByteBuffer.allocate(46 + nb.length).order(ByteOrder.LITTLE_ENDIAN);
                c.putInt(CENTRAL_SIG).putShort((short) 20).putShort((short) 20).putShort((short) utf8Flag(nb)).putShort((short) 0)
                        .putShort((short) 0).putShort((short) 0x21)
                        .putInt((int) e.crc()).putInt((int) e.size()).putInt((int) e.size())
                        .putShort((short) nb.length).putShort((short) 0).putShort((short) 0)
                        .putShort((short) 0).putShort((short) 0).putInt(0).putInt((int) e.localHeaderOffset()).put(nb);
                writeFully(c.flip());
            }
            long cdSize = pos - cdStart;
            if (pos >= MAX32 || written.size() >= 0xffff)
                throw new IOException("torch zip writer: archive too large for a zip without zip64");
            ByteBuffer end = ByteBuffer.allocate(22).order(ByteOrder.LITTLE_ENDIAN);
            end.putInt(EOCD_SIG).putShort((short) 0).putShort((short) 0)
                    .putShort((short) written.size()).putShort((short) written.size())
                    .putInt((int) cdSize).putInt((int) cdStart).putShort((short) 0);
            writeFully(end.flip());
        }

        List<Entry> entries() { return Collections.unmodifiableList(written); }

        private static int utf8Flag(byte[] nameBytes) {
            for (byte b : nameBytes) if (b < 0) return 1 << 11;
            return 0;
        }

        private void writeFully(ByteBuffer b) throws IOException {
            while (b.hasRemaining()) pos += ch.write(b);
        }
    }
}
