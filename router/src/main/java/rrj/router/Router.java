package rrj.router;

import rrj.model.Encoder;
import rrj.model.ExpertTable;
import rrj.model.Json;
import rrj.model.LoraAdapter;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * RouterRetriever at inference (DESIGN §2): the base encoder, the experts and the pilot table
 * together. {@link #route} embeds queries with the base encoder and picks each one's expert;
 * {@link #embedRouted} then runs all of them as one mixed-expert batch — two forward passes
 * per query, however many experts the batch uses.
 *
 * <p>The routing options are, from the experts directory's {@code experts.json}: its
 * {@code "routing"} list when there is one (expert names, and {@value #BASE} for the base
 * encoder without LoRA); else every adapter in configured order, preceded by {@value #BASE} when
 * it says {@code "base_as_expert": true}. Adapters left out of the routing list (a multi-task
 * baseline, say) can still be asked for by name. The pilot table must list exactly the options.
 *
 * <p>Calls are serialised on the encoder (it owns one set of activation buffers).
 */
public final class Router implements Evaluation.QueryEncoder {
    /** The name of the no-LoRA option. */
    public static final String BASE = "base";
    /** The pilot table's file name inside an experts directory. */
    public static final String PILOTS = "pilots.safetensors";

    public final Encoder encoder;
    public final ExpertTable table;
    private final List<String> options;
    private volatile Routing.PilotTable pilots;

    /** One query's routing: the chosen option and the score of every option (NaN: no pilot). */
    public record Decision(String expert, List<String> options, double[] scores, float[] baseEmbedding) {}

    public Router(Encoder encoder, ExpertTable table, boolean baseAsExpert, Routing.PilotTable pilots) {
        this(encoder, table, defaultOptions(table, baseAsExpert), pilots);
    }

    /** With explicit routing options (expert names and/or {@value #BASE}). */
    public Router(Encoder encoder, ExpertTable table, List<String> routing, Routing.PilotTable pilots) {
        this.encoder = encoder;
        this.table = table;
        for (String n : routing)
            if (!n.equals(BASE) && !table.contains(n))
                throw new IllegalArgumentException("routing option '" + n + "' is not a loaded expert (experts: " + String.join(", ", table.names()) + ")");
        if (new java.util.HashSet<>(routing).size() != routing.size()) throw new IllegalArgumentException("duplicate routing options in " + routing);
        this.options = List.copyOf(routing);
        setPilots(pilots);
    }

    private static List<String> defaultOptions(ExpertTable table, boolean baseAsExpert) {
        List<String> o = new ArrayList<>();
        if (baseAsExpert) o.add(BASE);
        o.addAll(table.names());
        return o;
    }

    /**
     * The router of an experts directory: its adapters (checked against the encoder's model),
     * {@code experts.json}'s {@code base_as_expert}, and {@value #PILOTS} when present.
     */
    public static Router open(Encoder encoder, Path expertsDir) throws IOException {
        ExpertTable t = ExpertTable.open(expertsDir, encoder.bert.config, encoder.bert.backend());
        Path p = expertsDir.resolve(PILOTS);
        Routing.PilotTable pilots = Files.exists(p) ? Routing.PilotTable.load(p) : null;
        Path f = expertsDir.resolve("experts.json");
        Map<String, Object> m = Map.of();
        if (Files.exists(f)) {
            try {
                m = Json.parseObject(Files.readString(f));
            } catch (Json.JsonException e) {
                throw new IllegalArgumentException(f + ": not valid JSON: " + e.getMessage());
            }
        }
        Object base = m.get("base_as_expert");
        if (base != null && !(base instanceof Boolean)) throw new IllegalArgumentException(f + ": 'base_as_expert' must be true or false, got " + base);
        Object routing = m.get("routing");
        if (routing == null) return new Router(encoder, t, Boolean.TRUE.equals(base), pilots);
        if (!(routing instanceof List<?> l) || l.isEmpty()) throw new IllegalArgumentException(f + ": 'routing' must be a non-empty list of expert names");
        List<String> names = new ArrayList<>();
        for (Object o : l) {
            if (!(o instanceof String n)) throw new IllegalArgumentException(f + ": 'routing' must list expert names, got " + o);
            if (!n.equals(BASE) && !t.contains(n))
                throw new IllegalArgumentException(f + ": 'routing' names '" + n + "' but " + expertsDir + " has no such adapter (experts: "
                        + String.join(", ", t.names()) + ")");
            names.add(n);
        }
        return new Router(encoder, t, names, pilots);
    }

    /** Replaces the pilot table (after building one); null = no routing. */
    public void setPilots(Routing.PilotTable p) {
        if (p != null && !p.experts.equals(options))
            throw new IllegalArgumentException("the pilot table lists experts " + p.experts + " but the experts directory has " + options
                    + "; rebuild it with 'rr pilots build'");
        pilots = p;
    }

    public Routing.PilotTable pilots() { return pilots; }

    @Override
    public List<String> experts() { return options; }

    /** Loaded adapters that are not routing options: evaluable alone (e.g. a multi-task baseline). */
    @Override
    public List<String> others() {
        List<String> o = new ArrayList<>();
        for (String n : table.names()) if (!options.contains(n)) o.add(n);
        return o;
    }

    /** The adapter of an option name ({@value #BASE} or null → null); an error naming the options otherwise. */
    public LoraAdapter adapter(String name) {
        if (name == null || name.equals(BASE)) return null;
        if (!table.contains(name))
            throw new IllegalArgumentException("unknown expert '" + name + "' (known: " + String.join(", ", allNames()) + ")");
        return table.get(name);
    }

    /** Every name that can be asked for: the routing options and the other adapters. */
    public List<String> allNames() {
        List<String> o = new ArrayList<>(options);
        if (!o.contains(BASE)) o.add(0, BASE);
        o.addAll(others());
        return o;
    }

    @Override
    public float[][] encode(List<String> texts, String[] expertPerText) {
        LoraAdapter[] a = null;
        if (expertPerText != null) {
            if (expertPerText.length != texts.size())
                throw new IllegalArgumentException(expertPerText.length + " expert entries for " + texts.size() + " texts");
            a = new LoraAdapter[texts.size()];
            for (int i = 0; i < a.length; i++) a[i] = adapter(expertPerText[i]);
        }
        synchronized (encoder) {
            return encoder.embed(texts, a);
        }
    }

    /** Token ids, each sequence through its option (null or {@value #BASE}: none). */
    public float[][] encodeIds(int[][] ids, String[] expertPerText) {
        LoraAdapter[] a = new LoraAdapter[ids.length];
        for (int i = 0; i < a.length; i++) a[i] = adapter(expertPerText == null ? null : expertPerText[i]);
        synchronized (encoder) {
            return encoder.embedIds(ids, a);
        }
    }

    /** Routes queries by the paper's average-similarity rule over the pilot table. */
    public Decision[] route(List<String> queries) {
        return decide(encode(queries, null));
    }

    /** Routes pre-tokenized queries. */
    public Decision[] routeIds(int[][] ids) {
        return decide(encodeIds(ids, null));
    }

    private Decision[] decide(float[][] base) {
        Routing.PilotTable p = pilots;
        if (p == null) throw new IllegalStateException("no pilot table: build one with 'rr pilots build' (it writes " + PILOTS + " into the experts directory)");
        Decision[] out = new Decision[base.length];
        for (int i = 0; i < base.length; i++) {
            Routing.Decision d = Routing.route(p, base[i]);
            if (d.expert() < 0) throw new IllegalStateException("the pilot table has no pilots");
            out[i] = new Decision(options.get(d.expert()), options, d.scores(), base[i]);
        }
        return out;
    }

    /** A routed batch: per query its decision and its embedding through the chosen expert. */
    public record Routed(Decision[] decisions, float[][] embeddings) {}

    /** Routes, then encodes every query with its expert in one mixed-expert pass. */
    public Routed embedRouted(List<String> queries) {
        Decision[] d = route(queries);
        return new Routed(d, encode(queries, choices(d)));
    }

    /** As {@link #embedRouted} for token ids. */
    public Routed embedRoutedIds(int[][] ids) {
        Decision[] d = routeIds(ids);
        return new Routed(d, encodeIds(ids, choices(d)));
    }

    private static String[] choices(Decision[] d) {
        String[] choice = new String[d.length];
        for (int i = 0; i < d.length; i++) choice[i] = d[i].expert();
        return choice;
    }

    @Override
    public String toString() {
        return "Router" + options + (pilots == null ? " (no pilots)" : " (" + pilots.count() + " pilots)");
    }
}
