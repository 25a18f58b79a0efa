package rrj.bench;

import ai.onnxruntime.OrtSession;
import rrj.engine.Backend;
import rrj.engine.Tensor;
import rrj.model.Encoder;
import rrj.model.Json;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * {@code rr bench --profile a|b|c}: where one pass spends its time, on both engines, for the
 * same token ids — ours op by op (each backend call timed through a proxy of the backend; the
 * CPU backend is synchronous, so a call's time is its work), ORT node by node from its own
 * profiler (the nodes' kernel times, with the layer index folded so that the six layers of a
 * kind add up). Means over the timed passes, after the same untimed warm-up as the timed
 * workloads ({@link BenchMain.Runner#warm}). The two lists name different things (ORT runs
 * bias, GELU and the attention's transposes as nodes of their own; ours fuses bias and GELU
 * into the linear), so compare the rows that do the same work, and the totals. Both profilers
 * cost time per op: negligible at b and c, a large share at a (a 1 × 16 pass measured 10 ms
 * ours, 13 ms ORT wall, against ~6 ms each unprofiled), where the rows are for shares only.
 * The engines alternate pass by pass, as in the timed workloads.
 */
final class OpProfile {
    private OpProfile() {}

    /** One row: total nanoseconds and calls over the timed passes. */
    static final class Sum { long nanos; int calls; }

    /** Opens a session on the ONNX model under comparison with the given options. */
    interface SessionFactory { OrtSession open(OrtSession.SessionOptions so) throws Exception; }

    /** Profiles {@code ids} on {@code base}'s backend (through a timing proxy) and on a profiling session of {@code onnx}. */
    static void run(BenchMain.Runner base, SessionFactory onnx, int threads, String what, int[][] ids, int rounds, int warmup) throws Exception {
        Backend backend = base.be;
        System.out.printf(Locale.ROOT, "%n# profile: %s, %d timed passes after %d untimed, per engine%n", what, rounds, warmup);

        // ours: the same backend behind a timing proxy, in an encoder of its own
        Map<String, Sum> ours = new HashMap<>();
        boolean[] timing = {false};
        Backend timed = (Backend) Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[]{Backend.class}, (p, m, args) -> {
            if (m.getName().equals("close")) return null; // the backend belongs to the caller
            long t0 = System.nanoTime();
            try {
                return m.invoke(backend, args);
            } catch (InvocationTargetException e) {
                throw e.getCause();
            } finally {
                if (timing[0]) {
                    Sum s = ours.computeIfAbsent(opName(m, args), k -> new Sum());
                    s.nanos += System.nanoTime() - t0;
                    s.calls++;
                }
            }
        });
        Path dir = Files.createTempDirectory("rr-ort-profile");
        Map<String, Sum> ort = new HashMap<>();
        long oursWall = 0, ortWall = 0;
        try (Encoder enc = Encoder.open(base.enc.dir, timed, null, null, null);
             OrtSession.SessionOptions so = BenchMain.ortOptions(threads)) {
            so.enableProfiling(dir.resolve("ort").toString()); // ORT: a session of its own with the profiler on
            Path file;
            try (OrtSession session = onnx.open(so)) {
                BenchMain.Runner us = new BenchMain.Runner(enc, base.env, base.ort, threads);
                BenchMain.Runner them = new BenchMain.Runner(base.enc, base.env, session, threads);
                BenchMain.Runner.warm(() -> us.ours(ids, null), () -> them.ort(ids), warmup); // as the timed workloads: ≥ 3 s each
                timing[0] = true;
                for (int i = 0; i < rounds; i++) {
                    long t0 = System.nanoTime();
                    us.ours(ids, null);
                    long t1 = System.nanoTime();
                    them.ort(ids);
                    oursWall += t1 - t0;
                    ortWall += System.nanoTime() - t1;
                }
                file = Path.of(session.endProfiling());
            }
            ortNodes(file, rounds, ort); // only the nodes inside the timed runs count
        } finally {
            try (var files = Files.list(dir)) { for (Path f : files.toList()) Files.deleteIfExists(f); }
            Files.deleteIfExists(dir);
        }
        print("ours (" + backend.describe() + "), per backend op", ours, rounds, oursWall);
        print("ORT (its profiler), per graph node, layers folded", ort, rounds, ortWall);
    }

    /** Our row for one backend call: the method, and for a linear its shape and what is fused into it. */
    static String opName(Method m, Object[] args) {
        if (!m.getName().equals("linear")) return m.getName();
        Tensor w = (Tensor) args[3];
        return "linear " + w.dim(1) + " -> " + w.dim(0) + (args[4] != null ? " +bias" : "") + (Boolean.TRUE.equals(args[6]) ? " +GELU" : "")
                + (args[5] != null ? " +LoRA" : "");
    }

    /** Sums the kernel times of the nodes that ran inside the last {@code rounds} model runs of an ORT profile. */
    @SuppressWarnings("unchecked")
    static void ortNodes(Path file, int rounds, Map<String, Sum> into) throws Exception {
        Object parsed = Json.parse(Files.readString(file));
        if (!(parsed instanceof List<?> events)) throw new IllegalStateException(file + ": an ORT profile is a JSON array of events");
        List<double[]> runs = new ArrayList<>(); // [start, end] in µs
        for (Object o : events) {
            Map<String, Object> e = (Map<String, Object>) o;
            if ("Session".equals(e.get("cat")) && "model_run".equals(e.get("name")))
                runs.add(new double[]{num(e.get("ts")), num(e.get("ts")) + num(e.get("dur"))});
        }
        if (runs.size() < rounds) throw new IllegalStateException(file + ": " + runs.size() + " model runs, expected at least " + rounds);
        runs.sort(Comparator.comparingDouble(x -> x[0]));
        List<double[]> timed = runs.subList(runs.size() - rounds, runs.size());
        for (Object o : events) {
            Map<String, Object> e = (Map<String, Object>) o;
            String name = String.valueOf(e.get("name"));
            if (!"Node".equals(e.get("cat")) || !name.endsWith("_kernel_time")) continue;
            double ts = num(e.get("ts"));
            if (timed.stream().noneMatch(w -> ts >= w[0] && ts <= w[1])) continue;
            Map<String, Object> a = (Map<String, Object>) e.getOrDefault("args", Map.of());
            String node = name.substring(0, name.length() - "_kernel_time".length()).replaceAll("layer\\.\\d+", "layer.N").replaceAll("_token_\\d+", "").replaceFirst("^/", "");
            Sum s = into.computeIfAbsent(a.getOrDefault("op_name", "?") + " " + node, k -> new Sum());
            s.nanos += (long) (num(e.get("dur")) * 1000);
            s.calls++;
        }
    }

    private static double num(Object o) {
        if (o instanceof Number n) return n.doubleValue();
        throw new IllegalStateException("expected a number in the ORT profile, got " + o);
    }

    private static void print(String title, Map<String, Sum> rows, int rounds, long wallNanos) {
        long total = rows.values().stream().mapToLong(s -> s.nanos).sum();
        System.out.printf(Locale.ROOT, "%n%s: %.2f ms per pass in these rows, %.2f ms per pass wall%n", title, total / 1e6 / rounds, wallNanos / 1e6 / rounds);
        System.out.println("| ms / pass | share | calls / pass | op |");
        System.out.println("|---|---|---|---|");
        rows.entrySet().stream().sorted((x, y) -> Long.compare(y.getValue().nanos, x.getValue().nanos))
                .filter(e -> e.getValue().nanos * 1000 >= total) // rows under 0.1 % are left out
                .forEach(e -> System.out.printf(Locale.ROOT, "| %.2f | %.1f %% | %.0f | %s |%n", e.getValue().nanos / 1e6 / rounds,
                        100.0 * e.getValue().nanos / total, (double) e.getValue().calls / rounds, e.getKey()));
    }
}
