package rrj.model;

import rrj.engine.Backend;
import rrj.engine.Tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A PEFT LoRA adapter ("expert") for a BERT encoder: per layer and {@link Bert.Target}, the
 * matrices {@code A: [r, in]} (PEFT's {@code lora_A.weight}) and {@code B: [out, r]}
 * ({@code lora_B.weight}) and the scale {@code s = alpha / r} ({@code alpha / √r} with
 * rsLoRA), so that the adapted linear is {@code y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ}.
 *
 * <p>Reads and writes PEFT's own layout: {@code adapter_config.json} +
 * {@code adapter_model.safetensors} with keys
 * {@code base_model.model[.bert].encoder.layer.N.<module>.lora_A.weight}. Honours {@code r},
 * {@code lora_alpha}, {@code target_modules} (list: exact name or dotted suffix; string:
 * regex full match, as PEFT), {@code use_rslora}, {@code layers_to_transform},
 * {@code rank_pattern} / {@code alpha_pattern}, and {@code fan_in_fan_out} (meaningless for
 * BERT's nn.Linear; PEFT itself resets it to false there, and so do we). Refuses DoRA, bias
 * training, {@code modules_to_save} and any tensor it cannot place, naming adapter and key.
 * {@code adapter_model.bin} is converted by weights-converter first.
 */
public final class LoraAdapter {

    /** A bad or unsupported adapter; the message names the adapter and the key. */
    public static final class AdapterException extends RuntimeException {
        public AdapterException(String message) { super(message); }
    }

    public final String name;
    public final Path dir;            // where it was loaded from (null when built in memory)
    public final int numLayers;
    public final Tensor[][] a;        // [layer][target] lora_A [r, in] or null
    public final Tensor[][] b;        // [layer][target] lora_B [out, r] or null
    public final float[][] scale;     // [layer][target]
    public final Map<String, Object> config; // adapter_config.json as read (or as it will be written)

    public LoraAdapter(String name, Path dir, int numLayers, Tensor[][] a, Tensor[][] b, float[][] scale, Map<String, Object> config) {
        this.name = name;
        this.dir = dir;
        this.numLayers = numLayers;
        this.a = a;
        this.b = b;
        this.scale = scale;
        this.config = config;
    }

    public boolean has(int layer, Bert.Target t) { return a[layer][t.ordinal()] != null; }

    /** The set of adapted module kinds, e.g. [QUERY, VALUE]. */
    public List<Bert.Target> targets() {
        List<Bert.Target> out = new ArrayList<>();
        for (Bert.Target t : Bert.Target.values())
            for (int l = 0; l < numLayers; l++) if (a[l][t.ordinal()] != null) { out.add(t); break; }
        return out;
    }

    public int rank(int layer, Bert.Target t) { return a[layer][t.ordinal()] == null ? 0 : (int) a[layer][t.ordinal()].dim(0); }

    // ------------------------------------------------------------------ loading

    private static final Pattern KEY = Pattern.compile(
            "(?:base_model\\.model\\.)?(bert\\.)?encoder\\.layer\\.(\\d+)\\.(attention\\.self\\.query|attention\\.self\\.key|attention\\.self\\.value"
                    + "|attention\\.output\\.dense|intermediate\\.dense|output\\.dense)\\.lora_([AB])(?:\\.[A-Za-z0-9_-]+)?\\.weight");

    /**
     * Loads an adapter directory for a model of the given config; every tensor is a zero-copy
     * slice of the mapped file (alive as long as {@code arena}) made resident on {@code backend}.
     */
    public static LoraAdapter load(String name, Path dir, BertConfig model, Backend backend, Arena arena) throws IOException {
        String who = "adapter '" + name + "' (" + dir + ")";
        Path cfgFile = dir.resolve("adapter_config.json");
        if (!Files.isDirectory(dir)) throw new NoSuchFileException(dir.toString(), null, who + ": adapter directory not found");
        if (!Files.exists(cfgFile)) throw new NoSuchFileException(cfgFile.toString(), null, who + ": adapter_config.json not found");
        Path weights = dir.resolve("adapter_model.safetensors");
        if (!Files.exists(weights)) {
            if (Files.exists(dir.resolve("adapter_model.bin")))
                throw new AdapterException(who + ": has adapter_model.bin only; convert it first (rr experts add converts it)");
            throw new NoSuchFileException(weights.toString(), null, who + ": adapter_model.safetensors not found");
        }
        Map<String, Object> cfg;
        try {
            cfg = Json.parseObject(Files.readString(cfgFile));
        } catch (Json.JsonException e) {
            throw new AdapterException(who + ": adapter_config.json is not valid JSON: " + e.getMessage());
        }
        Settings s = Settings.of(cfg, who, model.numLayers());
        Safetensors.File file = Safetensors.open(weights, arena);
        int L = model.numLayers(), T = Bert.Target.values().length;
        Tensor[][] A = new Tensor[L][T], B = new Tensor[L][T];
        boolean prefixed = false, bare = false;
        for (Map.Entry<String, Tensor> e : file.tensors().entrySet()) {
            String key = e.getKey();
            Matcher m = KEY.matcher(key);
            if (!m.matches()) {
                if (key.contains("lora_magnitude_vector")) throw new AdapterException(who + ": key '" + key + "' is a DoRA magnitude; DoRA is not supported");
                if (key.endsWith(".bias")) throw new AdapterException(who + ": key '" + key + "' is a trained bias; bias training is not supported");
                throw new AdapterException(who + ": key '" + key + "' is not a LoRA weight of a BERT encoder module this engine can adapt");
            }
            if (m.group(1) != null) prefixed = true; else bare = true;
            int layer = Integer.parseInt(m.group(2));
            if (layer >= L) throw new AdapterException(who + ": key '" + key + "' is for layer " + layer + " but the model has " + L + " layers");
            Bert.Target t = targetOf(m.group(3));
            (m.group(4).equals("A") ? A : B)[layer][t.ordinal()] = e.getValue();
        }
        if (prefixed && bare) throw new AdapterException(who + ": mixes 'bert.'-prefixed and bare keys");
        String modulePrefix = prefixed ? "bert." : "";
        float[][] scale = new float[L][T];
        int count = 0;
        for (int l = 0; l < L; l++) {
            for (Bert.Target t : Bert.Target.values()) {
                int ti = t.ordinal();
                String module = modulePrefix + "encoder.layer." + l + "." + t.module;
                boolean wanted = s.targets(module) && s.layer(l);
                Tensor ta = A[l][ti], tb = B[l][ti];
                String keyA = "base_model.model." + module + ".lora_A.weight", keyB = "base_model.model." + module + ".lora_B.weight";
                if (ta == null && tb == null) {
                    if (wanted) throw new AdapterException(who + ": target module '" + module + "' has no tensors (missing '" + keyA + "')");
                    continue;
                }
                if (ta == null || tb == null)
                    throw new AdapterException(who + ": missing '" + (ta == null ? keyA : keyB) + "' (lora_A and lora_B come in pairs)");
                if (!wanted)
                    throw new AdapterException(who + ": has tensors for module '" + module + "', which adapter_config.json does not target");
                int in = t == Bert.Target.OUTPUT ? model.intermediateSize() : model.hiddenSize();
                int out = t == Bert.Target.INTERMEDIATE ? model.intermediateSize() : model.hiddenSize();
                int r = s.rank(module);
                if (ta.rank() != 2 || tb.rank() != 2)
                    throw new AdapterException(who + ": '" + keyA + "' and '" + keyB + "' must be matrices");
                if (ta.dim(0) != r || tb.dim(1) != r)
                    throw new AdapterException(who + ": rank mismatch at '" + keyA + "': adapter_config.json says r=" + r
                            + " but the tensors have " + ta.dim(0) + " (lora_A) and " + tb.dim(1) + " (lora_B)");
                if (ta.dim(1) != in)
                    throw new AdapterException(who + ": '" + keyA + "' has shape " + java.util.Arrays.toString(ta.shape()) + " but the model's "
                            + t.module + " takes " + in + " inputs (an adapter for a different hidden size?)");
                if (tb.dim(0) != out)
                    throw new AdapterException(who + ": '" + keyB + "' has shape " + java.util.Arrays.toString(tb.shape()) + " but the model's "
                            + t.module + " has " + out + " outputs (an adapter for a different hidden size?)");
                A[l][ti] = backend.weight(ta);
                B[l][ti] = backend.weight(tb);
                scale[l][ti] = s.scale(module, r);
                count++;
            }
        }
        if (count == 0) throw new AdapterException(who + ": contains no LoRA weights");
        return new LoraAdapter(name, dir, L, A, B, scale, cfg);
    }

    static Bert.Target targetOf(String module) {
        for (Bert.Target t : Bert.Target.values()) if (t.module.equals(module)) return t;
        throw new IllegalArgumentException(module);
    }

    /** The adapter_config.json fields that decide which modules, ranks and scales. */
    record Settings(String who, int r, double alpha, boolean rslora, List<String> targetList, Pattern targetRegex,
                    List<Integer> layers, Map<String, Object> rankPattern, Map<String, Object> alphaPattern) {

        @SuppressWarnings("unchecked")
        static Settings of(Map<String, Object> c, String who, int numLayers) {
            Object type = c.getOrDefault("peft_type", "LORA");
            if (!"LORA".equals(type)) throw new AdapterException(who + ": peft_type '" + type + "' is not supported (only LORA)");
            if (Boolean.TRUE.equals(c.get("use_dora"))) throw new AdapterException(who + ": use_dora=true (DoRA) is not supported");
            Object bias = c.getOrDefault("bias", "none");
            if (!"none".equals(bias)) throw new AdapterException(who + ": bias='" + bias + "' (bias training) is not supported");
            Object mts = c.get("modules_to_save");
            if (mts != null && !(mts instanceof List<?> l && l.isEmpty()))
                throw new AdapterException(who + ": modules_to_save " + mts + " is not supported");
            for (String unsupported : new String[]{"loftq_config", "layer_replication"}) {
                Object v = c.get(unsupported);
                if (v != null && !(v instanceof Map<?, ?> m && m.isEmpty())) throw new AdapterException(who + ": " + unsupported + " is not supported");
            }
            int r = positiveInt(c, "r", who);
            double alpha = c.get("lora_alpha") instanceof Number n ? n.doubleValue() : 8; // PEFT's default lora_alpha
            boolean rs = Boolean.TRUE.equals(c.get("use_rslora"));
            Object tm = c.get("target_modules");
            List<String> list = null;
            Pattern regex = null;
            if (tm instanceof String str) regex = Pattern.compile(str);
            else if (tm instanceof List<?> l) { list = new ArrayList<>(); for (Object o : l) list.add(String.valueOf(o)); }
            else if (tm == null) list = List.of("query", "value"); // PEFT's default for BERT
            else throw new AdapterException(who + ": target_modules must be a list or a string, got " + tm);
            List<Integer> layers = null;
            Object ltt = c.get("layers_to_transform");
            if (ltt instanceof Long one) layers = List.of((int) (long) one);
            else if (ltt instanceof List<?> l) {
                layers = new ArrayList<>();
                for (Object o : l) {
                    if (!(o instanceof Long x) || x < 0 || x >= numLayers)
                        throw new AdapterException(who + ": layers_to_transform entry " + o + " is not a layer index of this " + numLayers + "-layer model");
                    layers.add((int) (long) x);
                }
            } else if (ltt != null) throw new AdapterException(who + ": layers_to_transform must be an int or a list, got " + ltt);
            Map<String, Object> rp = c.get("rank_pattern") instanceof Map<?, ?> m ? (Map<String, Object>) m : Map.of();
            Map<String, Object> ap = c.get("alpha_pattern") instanceof Map<?, ?> m ? (Map<String, Object>) m : Map.of();
            return new Settings(who, r, alpha, rs, list, regex, layers, rp, ap);
        }

        private static int positiveInt(Map<String, Object> c, String key, String who) {
            if (!(c.get(key) instanceof Long v) || v <= 0 || v > 65536)
                throw new AdapterException(who + ": adapter_config.json field '" + key + "' must be a positive integer, got " + c.get(key));
            return (int) (long) v;
        }

        /** PEFT's check_target_module_exists: a list entry matches the name or a dotted suffix; a string is a full regex. */
        boolean targets(String module) {
            if (targetRegex != null) return targetRegex.matcher(module).matches();
            for (String t : targetList) if (module.equals(t) || module.endsWith("." + t)) return true;
            return false;
        }

        boolean layer(int l) { return layers == null || layers.contains(l); }

        /** rank_pattern / alpha_pattern keys match as PEFT does: {@code (.*\.)?KEY$} against the module name. */
        private static Object patternValue(Map<String, Object> p, String module) {
            for (Map.Entry<String, Object> e : p.entrySet())
                if (Pattern.compile("(.*\\.)?" + e.getKey() + "$").matcher(module).matches()) return e.getValue();
            return null;
        }

        int rank(String module) {
            Object v = patternValue(rankPattern, module);
            if (v == null) return r;
            if (!(v instanceof Long x) || x <= 0) throw new AdapterException(who + ": rank_pattern value " + v + " for '" + module + "' is not a positive integer");
            return (int) (long) x;
        }

        float scale(String module, int rank) {
            Object v = patternValue(alphaPattern, module);
            double a = v instanceof Number n ? n.doubleValue() : alpha;
            return (float) (rslora ? a / Math.sqrt(rank) : a / rank);
        }
    }

    // ------------------------------------------------------------------ saving

    /**
     * Writes the adapter in PEFT's layout (bare BertModel keys, {@code base_model.model.} prefix),
     * loadable by {@code PeftModel.from_pretrained(BertModel, dir)}. Atomic per file.
     */
    public void save(Path out) throws IOException {
        Files.createDirectories(out);
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        for (int l = 0; l < numLayers; l++)
            for (Bert.Target t : Bert.Target.values()) {
                if (a[l][t.ordinal()] == null) continue;
                String p = "base_model.model.encoder.layer." + l + "." + t.module;
                tensors.put(p + ".lora_A.weight", a[l][t.ordinal()]);
                tensors.put(p + ".lora_B.weight", b[l][t.ordinal()]);
            }
        Safetensors.write(out.resolve("adapter_model.safetensors"), tensors, Map.of("format", "pt"));
        Path tmp = out.resolve("adapter_config.json.tmp");
        Files.writeString(tmp, Json.writePretty(config));
        Files.move(tmp, out.resolve("adapter_config.json"), java.nio.file.StandardCopyOption.REPLACE_EXISTING, java.nio.file.StandardCopyOption.ATOMIC_MOVE);
    }

    /**
     * PEFT's {@code target_modules} for a set of targets: the short names as a list, unless the
     * layer's {@code output.dense} is targeted without {@code attention.output.dense} — as a
     * list entry "output.dense" would match both (dotted-suffix rule), that case is a regex.
     */
    public static Object peftTargets(List<Bert.Target> targets) {
        if (targets.contains(Bert.Target.OUTPUT) && !targets.contains(Bert.Target.ATTENTION_OUTPUT)) {
            StringBuilder b = new StringBuilder(".*\\.layer\\.\\d+\\.(");
            for (int i = 0; i < targets.size(); i++) b.append(i > 0 ? "|" : "").append(targets.get(i).module.replace(".", "\\."));
            return b.append(")").toString();
        }
        List<Object> out = new ArrayList<>();
        for (Bert.Target t : targets) out.add(t.module.startsWith("attention.self.") ? t.module.substring(15) : t.module);
        return out;
    }

    /** A PEFT adapter_config.json for a uniform adapter (one r and alpha for every target). */
    public static Map<String, Object> peftConfig(int r, double alpha, boolean rslora, List<String> targetModules, String baseModel) {
        Map<String, Object> c = new LinkedHashMap<>();
        c.put("peft_type", "LORA");
        c.put("task_type", "FEATURE_EXTRACTION");
        c.put("base_model_name_or_path", baseModel);
        c.put("r", (long) r);
        c.put("lora_alpha", alpha);
        c.put("lora_dropout", 0.1);
        c.put("target_modules", new ArrayList<Object>(targetModules));
        c.put("bias", "none");
        c.put("use_rslora", rslora);
        c.put("use_dora", false);
        c.put("fan_in_fan_out", false);
        c.put("init_lora_weights", true);
        c.put("inference_mode", true);
        c.put("modules_to_save", null);
        c.put("layers_to_transform", null);
        c.put("rank_pattern", new LinkedHashMap<String, Object>());
        c.put("alpha_pattern", new LinkedHashMap<String, Object>());
        return c;
    }

    // ------------------------------------------------------------------ merged weights

    /**
     * The "merged" mode: the base weights with {@code W + s·B·A} precomputed for every adapted
     * module (a batch that uses this expert only then runs the plain forward pass). Computed in
     * double on the host; unadapted tensors are shared with {@code base}.
     */
    public Bert.Weights merge(Bert.Weights base, Backend backend) {
        Bert.Layer[] layers = new Bert.Layer[numLayers];
        for (int l = 0; l < numLayers; l++) {
            Bert.Layer L = base.layers()[l];
            layers[l] = new Bert.Layer(
                    m(L.wq(), l, Bert.Target.QUERY, backend), L.bq(), m(L.wk(), l, Bert.Target.KEY, backend), L.bk(),
                    m(L.wv(), l, Bert.Target.VALUE, backend), L.bv(), m(L.wo(), l, Bert.Target.ATTENTION_OUTPUT, backend), L.bo(),
                    L.ln1g(), L.ln1b(), m(L.wi(), l, Bert.Target.INTERMEDIATE, backend), L.bi(),
                    m(L.wf(), l, Bert.Target.OUTPUT, backend), L.bf(), L.ln2g(), L.ln2b());
        }
        return new Bert.Weights(base.wordEmb(), base.posEmb(), base.typeEmb(), base.embLnG(), base.embLnB(), layers);
    }

    private Tensor m(Tensor w, int layer, Bert.Target t, Backend backend) {
        Tensor A = a[layer][t.ordinal()], B = b[layer][t.ordinal()];
        if (A == null) return w;
        int out = (int) w.dim(0), in = (int) w.dim(1), r = (int) A.dim(0);
        float s = scale[layer][t.ordinal()];
        float[] wf = w.toFloatArray(), af = A.toFloatArray(), bf = B.toFloatArray();
        float[] merged = new float[out * in];
        double[] row = new double[in];
        for (int o = 0; o < out; o++) {
            java.util.Arrays.fill(row, 0);
            for (int k = 0; k < r; k++) {
                double bk = bf[o * r + k];
                for (int j = 0; j < in; j++) row[j] += bk * af[k * in + j];
            }
            for (int j = 0; j < in; j++) merged[o * in + j] = (float) (wf[o * in + j] + s * row[j]);
        }
        return backend.weight(Tensor.of(merged, out, in));
    }
}
