package rrj.convert.torch;

import rrj.convert.FileText;
import rrj.engine.DType;
import rrj.engine.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.nio.ByteBuffer;

/**
 * A restricted pickle virtual machine for the {@code data.pkl} of a torch.save zip archive: it
 * understands exactly the opcodes (see CPython's Lib/pickletools.py) and globals that
 * torch/serialization.py emits for a state dict of plain or Parameter tensors, the same
 * spirit as torch/_weights_only_unpickler.py but narrower.
 *
 * <p>Nothing is ever executed: a GLOBAL or STACK_GLOBAL resolves only to a fixed list of names
 * ({@code collections.OrderedDict}, {@code torch._utils._rebuild_tensor_v2},
 * {@code _rebuild_parameter}, {@code _rebuild_parameter_with_state},
 * {@code torch._tensor._rebuild_from_type_v2}, the marker types {@code torch.Tensor} and
 * {@code torch.nn.parameter.Parameter}, and the {@code torch.*Storage} classes) and REDUCE on
 * one of them runs the Java re-implementation of that function. Any other global, any opcode
 * outside the table below (INST, OBJ, EXT*, BINBYTES, sets, ...), a persistent id that is not a
 * {@code ('storage', type, key, location, numel)} tuple, or BUILD on anything but a dict is
 * refused with a {@link TorchFormatException} naming the file, the opcode or global and its
 * byte offset. The legacy (non-zip) format never reaches this class.
 *
 * <p>A tensor whose storage type has no {@link DType} (float64, bool, uint8, complex, quantized)
 * or whose view runs out of its storage does not fail at once: it becomes a {@link Refused}
 * value, so that the caller can name the state-dict key in the error.
 */
final class TorchUnpickler {

    /** Gives the raw bytes of storage {@code key} (the archive's {@code data/<key>} record). */
    interface StorageSource {
        MemorySegment storage(String key);
    }

    /** A Python tuple; value equality like Python's, nulls allowed. */
    record Tuple(List<Object> items) {
        static final Tuple EMPTY = new Tuple(List.of());
        static Tuple of(Object... xs) { return new Tuple(Arrays.asList(xs)); }
        int size() { return items.size(); }
        Object get(int i) { return items.get(i); }
    }

    /** A Python dict or collections.OrderedDict, insertion ordered; {@code state} is what BUILD gave it. */
    static final class PyDict {
        final boolean ordered;
        final LinkedHashMap<Object, Object> map = new LinkedHashMap<>();
        Object state;
        PyDict(boolean ordered) { this.ordered = ordered; }
    }

    /** One of the allow-listed callables. */
    enum Fn {
        ORDERED_DICT("collections.OrderedDict"),
        REBUILD_TENSOR_V2("torch._utils._rebuild_tensor_v2"),
        REBUILD_PARAMETER("torch._utils._rebuild_parameter"),
        REBUILD_PARAMETER_WITH_STATE("torch._utils._rebuild_parameter_with_state"),
        REBUILD_FROM_TYPE_V2("torch._tensor._rebuild_from_type_v2");
        final String qualname;
        Fn(String q) { qualname = q; }
    }

    /** A class used only as a marker argument (the {@code new_type} of _rebuild_from_type_v2). */
    record TypeMarker(String qualname) {}

    /** A {@code torch.<X>Storage} class; {@code dtype} null when the engine has no such dtype. */
    record StorageType(String qualname, DType dtype, int elementBytes) {}

    /** A loaded storage: {@code numel} elements of {@code type}; {@code data} null for unsupported types. */
    record StorageRef(String key, StorageType type, long numel, MemorySegment data) {}

    /** A tensor that was parsed but cannot be materialised; the reason omits the key. */
    record Refused(String reason) {}

    /** Largest copy an expanded (stride-0, broadcast) view may grow to beyond its storage. */
    static final long MAX_EXPANDED_BYTES = 256L << 20;

    private static final Map<String, Object> GLOBALS = new HashMap<>();

    static {
        for (Fn f : Fn.values()) GLOBALS.put(f.qualname, f);
        GLOBALS.put("torch.Tensor", new TypeMarker("torch.Tensor"));
        GLOBALS.put("torch.nn.parameter.Parameter", new TypeMarker("torch.nn.parameter.Parameter"));
        storage("FloatStorage", DType.F32, 4);
        storage("HalfStorage", DType.F16, 2);
        storage("BFloat16Storage", DType.BF16, 2);
        storage("IntStorage", DType.I32, 4);
        storage("LongStorage", DType.I64, 8);
        // Known to torch but not to the engine: parsed, then refused with the tensor's key.
        storage("DoubleStorage", null, 8);
        storage("ShortStorage", null, 2);
        storage("CharStorage", null, 1);
        storage("ByteStorage", null, 1);
        storage("BoolStorage", null, 1);
        storage("ComplexFloatStorage", null, 8);
        storage("ComplexDoubleStorage", null, 16);
        storage("QInt8Storage", null, 1);
        storage("QUInt8Storage", null, 1);
        storage("QInt32Storage", null, 4);
        storage("QUInt4x2Storage", null, 1);
        storage("QUInt2x4Storage", null, 1);
    }

    private static void storage(String name, DType dtype, int bytes) {
        GLOBALS.put("torch." + name, new StorageType("torch." + name, dtype, bytes));
    }

    /** pickletools names, for messages about opcodes that are refused. */
    private static final Map<Integer, String> OPCODE_NAMES = new HashMap<>();

    static {
        String[] t = {
            "(MARK", ".STOP", "0POP", "1POP_MARK", "2DUP", "FFLOAT", "IINT", "JBININT", "KBININT1", "LLONG",
            "MBININT2", "NNONE", "PPERSID", "QBINPERSID", "RREDUCE", "SSTRING", "TBINSTRING", "USHORT_BINSTRING",
            "VUNICODE", "XBINUNICODE", "aAPPEND", "bBUILD", "cGLOBAL", "dDICT", "}EMPTY_DICT", "eAPPENDS",
            "gGET", "hBINGET", "iINST", "jLONG_BINGET", "lLIST", "]EMPTY_LIST", "oOBJ", "pPUT", "qBINPUT",
            "rLONG_BINPUT", "sSETITEM", "tTUPLE", ")EMPTY_TUPLE", "uSETITEMS", "GBINFLOAT", "BBINBYTES",
            "CSHORT_BINBYTES",
        };
        for (String s : t) OPCODE_NAMES.put((int) s.charAt(0), s.substring(1));
        String[][] hi = {
            {"80", "PROTO"}, {"81", "NEWOBJ"}, {"82", "EXT1"}, {"83", "EXT2"}, {"84", "EXT4"}, {"85", "TUPLE1"},
            {"86", "TUPLE2"}, {"87", "TUPLE3"}, {"88", "NEWTRUE"}, {"89", "NEWFALSE"}, {"8a", "LONG1"}, {"8b", "LONG4"},
            {"8c", "SHORT_BINUNICODE"}, {"8d", "BINUNICODE8"}, {"8e", "BINBYTES8"}, {"8f", "EMPTY_SET"},
            {"90", "ADDITEMS"}, {"91", "FROZENSET"}, {"92", "NEWOBJ_EX"}, {"93", "STACK_GLOBAL"}, {"94", "MEMOIZE"},
            {"95", "FRAME"}, {"96", "BYTEARRAY8"}, {"97", "NEXT_BUFFER"}, {"98", "READONLY_BUFFER"},
        };
        for (String[] s : hi) OPCODE_NAMES.put(Integer.parseInt(s[0], 16), s[1]);
    }

    private final String where;
    private final byte[] b;
    private final StorageSource source;
    private final Arena arena;
    private int pos;
    private int opPos;
    private final ArrayList<Object> stack = new ArrayList<>();
    private final ArrayDeque<Integer> marks = new ArrayDeque<>();
    private final HashMap<Long, Object> memo = new HashMap<>();
    private final HashMap<String, StorageRef> storages = new HashMap<>();

    /**
     * @param where  how messages name the pickle, e.g. {@code "/m/pytorch_model.bin: archive/data.pkl"}
     * @param arena  where copies of non-contiguous views are allocated
     */
    TorchUnpickler(String where, byte[] pickle, StorageSource source, Arena arena) {
        this.where = where;
        this.b = pickle;
        this.source = source;
        this.arena = arena;
    }

    /** Runs the pickle to its STOP and returns the object it built. */
    Object load() {
        while (true) {
            if (pos >= b.length) throw fail("pickle ends without STOP");
            opPos = pos;
            int op = b[pos++] & 0xff;
            switch (op) {
                case 0x80 -> { // PROTO
                    int v = u8();
                    if (v < 2 || v > 5) throw fail("unsupported pickle protocol " + v);
                }
                case 0x95 -> { // FRAME: only a read-ahead hint
                    long n = i64();
                    if (n < 0 || n > b.length - pos) throw fail("FRAME of " + n + " bytes runs past the end of the pickle");
                }
                case '}' -> push(new PyDict(false));          // EMPTY_DICT
                case ']' -> push(new ArrayList<>());          // EMPTY_LIST
                case ')' -> push(Tuple.EMPTY);                // EMPTY_TUPLE
                case '(' -> marks.push(stack.size());         // MARK
                case 't' -> push(new Tuple(popMark()));       // TUPLE
                case 0x85 -> push(tupleOfTop(1));            // TUPLE1
                case 0x86 -> push(tupleOfTop(2));            // TUPLE2
                case 0x87 -> push(tupleOfTop(3));            // TUPLE3
                case 'X' -> push(utf8(u32()));                // BINUNICODE
                case 0x8c -> push(utf8(u8()));               // SHORT_BINUNICODE
                case 0x8d -> push(utf8(i64()));              // BINUNICODE8
                case 'J' -> push((long) i32());               // BININT
                case 'K' -> push((long) u8());                // BININT1
                case 'M' -> push((long) u16());               // BININT2
                case 0x8a -> push(longN(u8()));              // LONG1
                case 0x8b -> push(longN(i32()));             // LONG4
                case 'G' -> push(Double.longBitsToDouble(i64BigEndian())); // BINFLOAT
                case 0x88 -> push(Boolean.TRUE);             // NEWTRUE
                case 0x89 -> push(Boolean.FALSE);            // NEWFALSE
                case 'N' -> push(null);                       // NONE
                case 'q' -> memo.put((long) u8(), top());     // BINPUT
                case 'r' -> memo.put(u32(), top());           // LONG_BINPUT
                case 0x94 -> memo.put((long) memo.size(), top()); // MEMOIZE
                case 'h' -> push(memoGet(u8()));              // BINGET
                case 'j' -> push(memoGet(u32()));             // LONG_BINGET
                case '0' -> {                                 // POP
                    if (!marks.isEmpty() && marks.peek() == stack.size()) marks.pop();
                    else pop();
                }
                case '1' -> popMark();                        // POP_MARK
                case '2' -> push(top());                      // DUP
                case 's' -> {                                 // SETITEM
                    Object v = pop(), k = pop();
                    put(dictOnTop("SETITEM"), k, v);
                }
                case 'u' -> {                                 // SETITEMS
                    List<Object> kv = popMark();
                    if (kv.size() % 2 != 0) throw fail("SETITEMS with an odd number of items");
                    PyDict d = dictOnTop("SETITEMS");
                    for (int i = 0; i < kv.size(); i += 2) put(d, kv.get(i), kv.get(i + 1));
                }
                case 'd' -> {                                 // DICT
                    List<Object> kv = popMark();
                    if (kv.size() % 2 != 0) throw fail("DICT with an odd number of items");
                    PyDict d = new PyDict(false);
                    for (int i = 0; i < kv.size(); i += 2) put(d, kv.get(i), kv.get(i + 1));
                    push(d);
                }
                case 'l' -> push(new ArrayList<>(popMark()));   // LIST
                case 'a' -> {                                 // APPEND
                    Object v = pop();
                    listOnTop("APPEND").add(v);
                }
                case 'e' -> {                                 // APPENDS
                    List<Object> xs = popMark();
                    listOnTop("APPENDS").addAll(xs);
                }
                case 'c' -> {                                 // GLOBAL
                    String module = line(), name = line();
                    push(global(module, name));
                }
                case 0x93 -> {                               // STACK_GLOBAL
                    Object name = pop(), module = pop();
                    if (!(module instanceof String m) || !(name instanceof String n))
                        throw fail("STACK_GLOBAL needs two strings, got " + typeName(module) + " and " + typeName(name));
                    push(global(m, n));
                }
                case 'R' -> {                                 // REDUCE
                    Object args = pop(), fn = pop();
                    if (!(args instanceof Tuple t)) throw fail("REDUCE arguments are " + aType(args) + ", not a tuple");
                    push(call(fn, t));
                }
                case 0x81 -> {                               // NEWOBJ: cls.__new__(cls, *args)
                    Object args = pop(), cls = pop();
                    if (cls != Fn.ORDERED_DICT || !(args instanceof Tuple t) || t.size() != 0)
                        throw fail("NEWOBJ is only allowed as collections.OrderedDict(), got " + typeName(cls));
                    push(new PyDict(true));
                }
                case 'b' -> {                                 // BUILD: obj.__setstate__(state) / __dict__.update
                    Object state = pop();
                    Object obj = top();
                    if (!(obj instanceof PyDict d))
                        throw fail("BUILD on " + aType(obj) + " is not allowed");
                    d.state = state; // e.g. the _metadata attribute of a module state_dict(); not used
                }
                case 'Q' -> push(persistentLoad(pop()));      // BINPERSID
                case '.' -> {                                 // STOP
                    Object result = pop();
                    return result;
                }
                default -> {
                    String name = OPCODE_NAMES.get(op);
                    throw fail("unsupported pickle opcode " + (name != null ? name + " " : "") + String.format("0x%02x", op)
                            + (op >= 0x20 && op < 0x7f ? " ('" + (char) op + "')" : ""));
                }
            }
        }
    }

    // ---- globals and the calls they allow ----

    private Object global(String module, String name) {
        String q = module + "." + name;
        Object g = GLOBALS.get(q);
        if (g == null)
            throw fail("global " + FileText.quote(q) + " is not allowed (only collections.OrderedDict and torch tensor-rebuild globals are loaded)");
        return g;
    }

    private Object call(Object fn, Tuple args) {
        if (!(fn instanceof Fn f)) throw fail("REDUCE on " + aType(fn) + ", which is not callable here");
        return switch (f) {
            case ORDERED_DICT -> orderedDict(args);
            case REBUILD_TENSOR_V2 -> rebuildTensor(args);
            case REBUILD_PARAMETER -> { // _rebuild_parameter(data, requires_grad, backward_hooks)
                if (args.size() != 3) throw fail(f.qualname + " takes 3 arguments, got " + args.size());
                yield tensorArg(f, args.get(0));
            }
            case REBUILD_PARAMETER_WITH_STATE -> { // (data, requires_grad, backward_hooks, state)
                if (args.size() != 4) throw fail(f.qualname + " takes 4 arguments, got " + args.size());
                yield tensorArg(f, args.get(0));
            }
            case REBUILD_FROM_TYPE_V2 -> { // (func, new_type, args, state): func(*args), then the type is dropped
                if (args.size() != 4) throw fail(f.qualname + " takes 4 arguments, got " + args.size());
                if (!(args.get(0) instanceof Fn inner) || inner == Fn.REBUILD_FROM_TYPE_V2 || inner == Fn.ORDERED_DICT)
                    throw fail(f.qualname + " with func " + typeName(args.get(0)) + " is not allowed");
                if (!(args.get(1) instanceof TypeMarker))
                    throw fail(f.qualname + " with new_type " + typeName(args.get(1)) + " is not allowed");
                if (!(args.get(2) instanceof Tuple inner_args)) throw fail(f.qualname + ": args is " + aType(args.get(2)));
                yield call(inner, inner_args);
            }
        };
    }

    private Object tensorArg(Fn f, Object o) {
        if (o instanceof Tensor || o instanceof Refused) return o;
        throw fail(f.qualname + ": data is " + aType(o) + ", not a tensor");
    }

    private PyDict orderedDict(Tuple args) {
        PyDict d = new PyDict(true);
        if (args.size() == 0) return d;
        if (args.size() == 1 && args.get(0) instanceof PyDict src) {
            d.map.putAll(src.map);
            return d;
        }
        if (args.size() == 1 && args.get(0) instanceof List<?> pairs) {
            for (Object p : pairs) {
                List<Object> kv = p instanceof Tuple t ? t.items() : p instanceof List<?> l ? new ArrayList<>(l) : null;
                if (kv == null || kv.size() != 2) throw fail("collections.OrderedDict: item is " + aType(p) + ", not a pair");
                put(d, kv.get(0), kv.get(1));
            }
            return d;
        }
        throw fail("collections.OrderedDict with arguments " + describe(args) + " is not supported");
    }

    /**
     * torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
     * backward_hooks[, metadata]) -> a tensor viewing the storage. requires_grad, the hooks and
     * the metadata carry nothing the engine uses.
     */
    private Object rebuildTensor(Tuple a) {
        String fn = Fn.REBUILD_TENSOR_V2.qualname;
        if (a.size() != 6 && a.size() != 7) throw fail(fn + " takes 6 or 7 arguments, got " + a.size());
        if (!(a.get(0) instanceof StorageRef st)) throw fail(fn + ": storage is " + aType(a.get(0)));
        if (!(a.get(1) instanceof Long offset) || offset < 0) throw fail(fn + ": bad storage_offset " + describe(a.get(1)));
        long[] size = longs(fn, "size", a.get(2));
        long[] stride = longs(fn, "stride", a.get(3));
        if (size.length != stride.length)
            throw fail(fn + ": size " + Arrays.toString(size) + " and stride " + Arrays.toString(stride) + " differ in rank");
        if (!(a.get(4) instanceof Boolean)) throw fail(fn + ": requires_grad is " + aType(a.get(4)));
        if (st.type().dtype() == null)
            return new Refused("storage type " + st.type().qualname() + " is not supported (only float32, float16, bfloat16, int32 and int64 are)");
        return view(st, offset, size, stride);
    }

    private Object view(StorageRef st, long offset, long[] size, long[] stride) {
        DType dt = st.type().dtype();
        long numel = 1;
        try {
            for (long d : size) numel = Math.multiplyExact(numel, d);
        } catch (ArithmeticException e) {
            return new Refused("size " + Arrays.toString(size) + " overflows");
        }
        if (numel == 0) return new Tensor(dt, size, st.data().asSlice(0, 0));
        long last = offset; // highest element index the view touches
        try {
            for (int i = 0; i < size.length; i++) last = Math.addExact(last, Math.multiplyExact(size[i] - 1, stride[i]));
        } catch (ArithmeticException e) {
            return new Refused("view size " + Arrays.toString(size) + " stride " + Arrays.toString(stride) + " overflows");
        }
        if (last >= st.numel())
            return new Refused("view (offset " + offset + ", size " + Arrays.toString(size) + ", stride " + Arrays.toString(stride)
                    + ") reaches element " + last + " of storage '" + st.key() + "', which has " + st.numel());
        long eb = dt.bytes;
        if (isContiguous(size, stride)) return new Tensor(dt, size, st.data().asSlice(offset * eb, numel * eb));
        // An expanded view (stride 0) may be far larger than its storage; cap what a file can make us allocate.
        if (numel > st.numel() && numel > MAX_EXPANDED_BYTES / eb)
            return new Refused("expanded view of size " + Arrays.toString(size) + " stride " + Arrays.toString(stride)
                    + " would copy " + numel + " elements from a storage of " + st.numel() + " (limit " + MAX_EXPANDED_BYTES + " bytes)");
        // A strided view (a transpose, a slice with a step): materialise a row-major copy.
        MemorySegment out = arena.allocate(numel * eb, 64);
        int r = size.length;
        int outer = stride[r - 1] == 1 ? r - 1 : r;     // the last dim is one contiguous run when its stride is 1
        long run = (outer == r - 1 ? size[r - 1] : 1) * eb;
        long[] idx = new long[outer];
        long src = offset * eb, dst = 0;
        while (true) {
            MemorySegment.copy(st.data(), src, out, dst, run);
            dst += run;
            int d = outer - 1;
            while (d >= 0) {
                idx[d]++;
                src += stride[d] * eb;
                if (idx[d] < size[d]) break;
                src -= size[d] * stride[d] * eb;
                idx[d] = 0;
                d--;
            }
            if (d < 0) break;
        }
        return new Tensor(dt, size, out);
    }

    /** Row-major contiguity; dimensions of size 1 may have any stride (as in torch). */
    static boolean isContiguous(long[] size, long[] stride) {
        long expected = 1;
        for (int i = size.length - 1; i >= 0; i--) {
            if (size[i] != 1 && stride[i] != expected) return false;
            expected *= size[i];
        }
        return true;
    }

    private long[] longs(String fn, String what, Object o) {
        if (!(o instanceof Tuple t)) throw fail(fn + ": " + what + " is " + aType(o) + ", not a tuple");
        long[] out = new long[t.size()];
        for (int i = 0; i < out.length; i++) {
            if (!(t.get(i) instanceof Long x) || x < 0) throw fail(fn + ": bad " + what + " entry " + describe(t.get(i)));
            out[i] = x;
        }
        return out;
    }

    /**
     * torch/serialization.py's persistent_load: {@code ('storage', storage_type, key, location,
     * numel)}; the location (cpu, cuda:0, ...) is ignored: everything is loaded to host memory,
     * like map_location='cpu'. A key seen again yields the same storage (shared/tied weights).
     */
    private StorageRef persistentLoad(Object pid) {
        if (!(pid instanceof Tuple t) || t.size() == 0 || !"storage".equals(t.get(0)))
            throw fail("unsupported persistent id " + describe(pid) + " (expected ('storage', type, key, location, numel))");
        if (t.size() != 5)
            throw fail("persistent id with " + t.size() + " fields (expected 5; storage views are a legacy-format feature)");
        if (!(t.get(1) instanceof StorageType type)) throw fail("persistent id: storage type is " + aType(t.get(1)));
        if (!(t.get(2) instanceof String key)) throw fail("persistent id: key is " + aType(t.get(2)));
        if (!(t.get(3) instanceof String)) throw fail("persistent id: location is " + aType(t.get(3)));
        if (!(t.get(4) instanceof Long numel) || numel < 0) throw fail("persistent id for storage " + FileText.quote(key) + ": bad numel " + describe(t.get(4)));
        StorageRef seen = storages.get(key);
        if (seen != null) {
            if (!seen.type().equals(type) || seen.numel() != numel)
                throw fail("storage " + FileText.quote(key) + " is viewed both as " + seen.type().qualname() + "[" + seen.numel()
                        + "] and as " + type.qualname() + "[" + numel + "]");
            return seen;
        }
        MemorySegment data = null;
        if (type.dtype() != null) {
            long need;
            try {
                need = Math.multiplyExact(numel, (long) type.elementBytes());
            } catch (ArithmeticException e) {
                throw fail("storage " + FileText.quote(key) + ": numel " + numel + " overflows");
            }
            MemorySegment raw = source.storage(key);
            if (raw.byteSize() < need)
                throw fail("storage " + FileText.quote(key) + " has " + raw.byteSize() + " bytes, but " + numel + " elements of "
                        + type.qualname() + " need " + need);
            data = raw.asSlice(0, need);
        }
        StorageRef ref = new StorageRef(key, type, numel, data);
        storages.put(key, ref);
        return ref;
    }

    // ---- stack, memo, dicts ----

    private void push(Object o) { stack.add(o); }

    private Object pop() {
        int floor = marks.isEmpty() ? 0 : marks.peek();
        if (stack.size() <= floor) throw fail("pickle stack underflow");
        return stack.remove(stack.size() - 1);
    }

    private Object top() {
        int floor = marks.isEmpty() ? 0 : marks.peek();
        if (stack.size() <= floor) throw fail("pickle stack underflow");
        return stack.get(stack.size() - 1);
    }

    private List<Object> popMark() {
        if (marks.isEmpty()) throw fail("no MARK on the pickle stack");
        int m = marks.pop();
        List<Object> sub = stack.subList(m, stack.size());
        List<Object> items = new ArrayList<>(sub);
        sub.clear();
        return items;
    }

    private Tuple tupleOfTop(int n) {
        Object[] xs = new Object[n];
        for (int i = n - 1; i >= 0; i--) xs[i] = pop();
        return Tuple.of(xs);
    }

    private Object memoGet(long i) {
        if (!memo.containsKey(i)) throw fail("memo key " + i + " was never stored");
        return memo.get(i);
    }

    private PyDict dictOnTop(String op) {
        Object o = top();
        if (o instanceof PyDict d) return d;
        throw fail(op + " on " + aType(o) + ", not a dict");
    }

    @SuppressWarnings("unchecked")
    private List<Object> listOnTop(String op) {
        Object o = top();
        if (o instanceof ArrayList<?> l) return (List<Object>) l;
        throw fail(op + " on " + aType(o) + ", not a list");
    }

    /** Keys must be hashable scalars (or flat tuples of them), so hashing stays shallow. */
    private void put(PyDict d, Object k, Object v) {
        if (!isScalar(k) && !(k instanceof Tuple t && t.items().stream().allMatch(TorchUnpickler::isScalar)))
            throw fail("dict key of type " + typeName(k) + " is not supported");
        d.map.put(k, v);
    }

    private static boolean isScalar(Object o) {
        return o == null || o instanceof String || o instanceof Long || o instanceof Double || o instanceof Boolean;
    }

    // ---- reading the byte stream ----

    private void need(long n) {
        if (n < 0 || n > b.length - pos) throw fail("pickle truncated (needs " + n + " more bytes at byte " + pos + ")");
    }

    private int u8() { need(1); return b[pos++] & 0xff; }

    private int u16() { need(2); int v = (b[pos] & 0xff) | (b[pos + 1] & 0xff) << 8; pos += 2; return v; }

    private int i32() {
        need(4);
        int v = (b[pos] & 0xff) | (b[pos + 1] & 0xff) << 8 | (b[pos + 2] & 0xff) << 16 | (b[pos + 3] & 0xff) << 24;
        pos += 4;
        return v;
    }

    private long u32() { return i32() & 0xffffffffL; }

    private long i64() {
        need(8);
        long v = 0;
        for (int i = 7; i >= 0; i--) v = v << 8 | (b[pos + i] & 0xff);
        pos += 8;
        return v;
    }

    private long i64BigEndian() {
        need(8);
        long v = 0;
        for (int i = 0; i < 8; i++) v = v << 8 | (b[pos + i] & 0xff);
        pos += 8;
        return v;
    }

    /** LONG1/LONG4: n bytes of little-endian two's complement; wider than 64 bits is refused. */
    private long longN(long n) {
        if (n < 0 || n > 8) throw fail("integer of " + n + " bytes is wider than 64 bits");
        need(n);
        long v = 0;
        for (int i = (int) n - 1; i >= 0; i--) v = v << 8 | (b[pos + i] & 0xff);
        if (n > 0 && n < 8 && (b[pos + (int) n - 1] & 0x80) != 0) v |= -1L << (8 * n); // sign-extend
        pos += (int) n;
        return v;
    }

    private String utf8(long n) {
        need(n);
        try {
            String s = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT).onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(b, pos, (int) n)).toString();
            pos += (int) n;
            return s;
        } catch (CharacterCodingException e) {
            throw fail("string is not valid UTF-8");
        }
    }

    /** A GLOBAL operand: text up to a newline, at most 256 bytes. */
    private String line() {
        int start = pos;
        while (pos < b.length && b[pos] != '\n') {
            if (pos - start > 256) throw fail("GLOBAL name longer than 256 bytes");
            pos++;
        }
        if (pos >= b.length) throw fail("pickle truncated inside GLOBAL");
        String s = new String(b, start, pos - start, StandardCharsets.UTF_8);
        pos++;
        return s;
    }

    // ---- messages ----

    private TorchFormatException fail(String msg) {
        return new TorchFormatException(where + ": " + msg + " (pickle byte " + opPos + ")");
    }

    static String typeName(Object o) {
        if (o == null) return "None";
        if (o instanceof String) return "str";
        if (o instanceof Long) return "int";
        if (o instanceof Double) return "float";
        if (o instanceof Boolean) return "bool";
        if (o instanceof Tuple) return "tuple";
        if (o instanceof List) return "list";
        if (o instanceof PyDict d) return d.ordered ? "OrderedDict" : "dict";
        if (o instanceof Fn f) return f.qualname;
        if (o instanceof TypeMarker t) return t.qualname();
        if (o instanceof StorageType t) return t.qualname();
        if (o instanceof StorageRef) return "storage";
        if (o instanceof Tensor) return "tensor";
        if (o instanceof Refused) return "tensor";
        return o.getClass().getSimpleName();
    }

    /** The type with its article: "an int", "a tuple", "None". */
    static String aType(Object o) {
        if (o == null) return "None";
        String t = typeName(o);
        return ("aeiouAEIOU".indexOf(t.charAt(0)) >= 0 ? "an " : "a ") + t;
    }

    /** Scalars shown by value, everything else by type. */
    private static String describe(Object o) {
        if (o instanceof String s) return FileText.quote(s);
        if (o instanceof Long || o instanceof Double || o instanceof Boolean) return String.valueOf(o);
        if (o instanceof Tuple t && t.size() <= 6) {
            StringBuilder sb = new StringBuilder("(");
            for (int i = 0; i < t.size(); i++) {
                if (i > 0) sb.append(", ");
                Object x = t.get(i);
                sb.append(x instanceof Tuple ? "tuple" : isScalar(x) && !(x instanceof String s && s.length() > 40) ? describe(x) : typeName(x));
            }
            return sb.append(t.size() == 1 ? ",)" : ")").toString();
        }
        return typeName(o);
    }
}
