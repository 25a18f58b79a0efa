package rrj.model;

import rrj.engine.Backend;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

/**
 * Named LoRA experts loaded at once, each memory-mapped, in a fixed order (the "configured
 * order" that breaks routing ties). An experts directory holds one PEFT adapter directory per
 * expert; its optional {@code experts.json} ({@code {"order": ["a", "b"]}}) fixes the order,
 * else names sort alphabetically.
 *
 * <p>Experts can be added and removed while the engine runs: lookups see a consistent
 * snapshot, and a removed adapter's mapping is released by the GC once no batch uses it.
 */
public final class ExpertTable {
    private final BertConfig model;
    private final Backend backend;
    private volatile Map<String, LoraAdapter> experts = Map.of();

    public ExpertTable(BertConfig model, Backend backend) {
        this.model = model;
        this.backend = backend;
    }

    /** Loads every adapter directory under {@code dir} (none when it does not exist). */
    public static ExpertTable open(Path dir, BertConfig model, Backend backend) throws IOException {
        ExpertTable t = new ExpertTable(model, backend);
        for (String name : listNames(dir)) t.add(name, dir.resolve(name));
        return t;
    }

    /** Expert names found in an experts directory, in configured order. */
    public static List<String> listNames(Path dir) throws IOException {
        List<String> found = new ArrayList<>();
        if (!Files.isDirectory(dir)) return found;
        try (Stream<Path> s = Files.list(dir)) {
            for (Path p : s.sorted().toList())
                if (Files.exists(p.resolve("adapter_config.json"))) found.add(p.getFileName().toString());
        }
        Path order = dir.resolve("experts.json");
        if (!Files.exists(order)) return found;
        Map<String, Object> m;
        try {
            m = Json.parseObject(Files.readString(order));
        } catch (Json.JsonException e) {
            throw new IllegalArgumentException(order + ": not valid JSON: " + e.getMessage());
        }
        List<String> out = new ArrayList<>();
        if (m.get("order") instanceof List<?> l) {
            for (Object o : l) {
                String n = String.valueOf(o);
                if (!found.contains(n)) throw new IllegalArgumentException(order + ": lists expert '" + n + "' but " + dir.resolve(n) + " has no adapter");
                out.add(n);
            }
        }
        for (String n : found) if (!out.contains(n)) out.add(n);
        return out;
    }

    public synchronized void add(String name, Path adapterDir) throws IOException {
        checkName(name);
        if (experts.containsKey(name)) throw new IllegalArgumentException("expert '" + name + "' is already loaded");
        LoraAdapter a = LoraAdapter.load(name, adapterDir, model, backend, Arena.ofAuto());
        Map<String, LoraAdapter> next = new LinkedHashMap<>(experts);
        next.put(name, a);
        experts = next;
    }

    /** Adds an adapter built in memory (training, tests). */
    public synchronized void add(LoraAdapter a) {
        checkName(a.name);
        Map<String, LoraAdapter> next = new LinkedHashMap<>(experts);
        if (next.put(a.name, a) != null) throw new IllegalArgumentException("expert '" + a.name + "' is already loaded");
        experts = next;
    }

    public synchronized boolean remove(String name) {
        if (!experts.containsKey(name)) return false;
        Map<String, LoraAdapter> next = new LinkedHashMap<>(experts);
        next.remove(name);
        experts = next;
        return true;
    }

    /** The expert of that name; an error listing the known names when there is none. */
    public LoraAdapter get(String name) {
        LoraAdapter a = experts.get(name);
        if (a == null) throw new IllegalArgumentException("unknown expert '" + name + "' (known: " + String.join(", ", experts.keySet()) + ")");
        return a;
    }

    public boolean contains(String name) { return experts.containsKey(name); }

    public List<String> names() { return List.copyOf(experts.keySet()); }

    public int size() { return experts.size(); }

    static void checkName(String name) {
        if (name == null || !name.matches("[A-Za-z0-9][A-Za-z0-9._-]{0,63}") || name.equals("base") || name.equals("auto"))
            throw new IllegalArgumentException("bad expert name '" + name + "': use letters, digits, '.', '_' or '-' (not 'base' or 'auto')");
    }
}
