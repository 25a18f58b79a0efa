package rrj.app.serve;

import rrj.engine.ReferenceBackend;
import rrj.engine.Tensor;
import rrj.model.BertConfig;
import rrj.model.Bert;
import rrj.model.Encoder;
import rrj.model.Json;
import rrj.model.LoraAdapter;
import rrj.model.RandomBert;
import rrj.model.Safetensors;
import rrj.router.Router;
import rrj.router.Routing;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * What the server tests serve, made on disk in a temporary directory:
 * <ul>
 * <li>{@code tiny/}: a random BERT (C = 32, 2 layers, max length 64) with mean pooling and
 *     L2 normalisation (sentence-transformers files), bert-base-uncased's vocabulary;</li>
 * <li>{@code experts/}: two random LoRA adapters, {@code alpha} (query, value; r = 4) and
 *     {@code beta} (key, intermediate.dense; r = 2), in PEFT's layout, and a pilot table whose
 *     pilots are the base embeddings of {@link #ALPHA_TEXT} and {@link #BETA_TEXT}: as the
 *     vectors have unit length, each of those texts routes to its own expert;</li>
 * <li>{@code corpus/}: a six-document BEIR corpus.</li>
 * </ul>
 */
final class Fixture {
    static final BertConfig CONFIG = new BertConfig(30522, 32, 2, 4, 64, 64, 2, 1e-12);
    static final String ALPHA_TEXT = "cats and dogs play in the garden";
    static final String BETA_TEXT = "quantum field theory of the electron";

    final Path root, model, experts, data, cache;

    Fixture(Path root) throws IOException {
        this.root = root;
        this.model = root.resolve("tiny");
        this.experts = root.resolve("experts");
        this.data = root.resolve("corpus");
        this.cache = root.resolve("cache");
        writeModel();
        writeAdapter("alpha", 4, 8, List.of(Bert.Target.QUERY, Bert.Target.VALUE), 11);
        writeAdapter("beta", 2, 4, List.of(Bert.Target.KEY, Bert.Target.INTERMEDIATE), 12);
        writePilots();
        writeCorpus();
    }

    private void writeModel() throws IOException {
        Files.createDirectories(model.resolve("1_Pooling"));
        Safetensors.write(model.resolve("model.safetensors"), RandomBert.weights(CONFIG, 5), null);
        Files.writeString(model.resolve("config.json"), Json.writePretty(CONFIG.toMap()));
        Files.copy(Path.of("../data/test-fixtures/vocab.txt"), model.resolve("vocab.txt"));
        Files.writeString(model.resolve("modules.json"), """
                [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                 {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                 {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]""");
        Files.writeString(model.resolve("1_Pooling/config.json"), """
                {"word_embedding_dimension": 32, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true}""");
    }

    /** A random adapter with nonzero B (as a trained one), saved by {@link LoraAdapter#save} in PEFT's layout. */
    private void writeAdapter(String name, int r, double alpha, List<Bert.Target> targets, long seed) throws IOException {
        SplittableRandom rnd = new SplittableRandom(seed);
        int layers = CONFIG.numLayers(), nt = Bert.Target.values().length;
        Tensor[][] a = new Tensor[layers][nt], b = new Tensor[layers][nt];
        float[][] scale = new float[layers][nt];
        for (int l = 0; l < layers; l++)
            for (Bert.Target t : targets) {
                int in = t == Bert.Target.OUTPUT ? CONFIG.intermediateSize() : CONFIG.hiddenSize();
                int out = t == Bert.Target.INTERMEDIATE ? CONFIG.intermediateSize() : CONFIG.hiddenSize();
                a[l][t.ordinal()] = RandomBert.normal(Arena.ofAuto(), rnd, 0, 1.0 / Math.sqrt(in), r, in);
                b[l][t.ordinal()] = RandomBert.normal(Arena.ofAuto(), rnd, 0, 0.2, out, r);
                scale[l][t.ordinal()] = (float) (alpha / r);
            }
        List<String> modules = targets.stream().map(t -> t.module.startsWith("attention.self.") ? t.module.substring(15) : t.module).toList();
        Map<String, Object> config = LoraAdapter.peftConfig(r, alpha, false, modules, "tiny");
        new LoraAdapter(name, null, layers, a, b, scale, config).save(experts.resolve(name));
    }

    private void writePilots() throws IOException {
        try (Encoder enc = Encoder.open(model, new ReferenceBackend(), null, null, null)) {
            Router router = Router.open(enc, experts);
            float[][] e = enc.embed(List.of(ALPHA_TEXT, BETA_TEXT));
            Routing.PilotTable t = new Routing.PilotTable(router.experts());
            t.add(t.expert("alpha"), new Routing.Pilot("fixture", 1, e[0]));
            t.add(t.expert("beta"), new Routing.Pilot("fixture", 1, e[1]));
            t.save(experts.resolve(Router.PILOTS));
        }
    }

    /** id → {title, text} of the corpus. */
    static final Map<String, String[]> DOCS = new LinkedHashMap<>();
    static {
        DOCS.put("d1", new String[]{"Pets", "cats and dogs are common pets in many homes"});
        DOCS.put("d2", new String[]{"Physics", "the electron is described by quantum electrodynamics"});
        DOCS.put("d3", new String[]{"", "gardens need water and sunlight to grow vegetables"});
        DOCS.put("d4", new String[]{"Cooking", "the food was delicious and the waiter was friendly"});
        DOCS.put("d5", new String[]{"Retrieval", "dense retrieval encodes queries and documents as vectors"});
        DOCS.put("d6", new String[]{"Music", "the orchestra played a symphony by beethoven"});
    }

    /** Document text as BEIR builds it: title + " " + text, or the text alone. */
    static String docText(String id) {
        String[] d = DOCS.get(id);
        return d[0].isEmpty() ? d[1] : d[0] + " " + d[1];
    }

    private void writeCorpus() throws IOException {
        Files.createDirectories(data);
        StringBuilder b = new StringBuilder();
        for (Map.Entry<String, String[]> e : DOCS.entrySet()) {
            Map<String, Object> o = new LinkedHashMap<>();
            o.put("_id", e.getKey());
            o.put("title", e.getValue()[0]);
            o.put("text", e.getValue()[1]);
            b.append(Json.write(o)).append('\n');
        }
        Files.writeString(data.resolve("corpus.jsonl"), b.toString());
    }
}
