package rrj.app.serve;

import rrj.router.CorpusIndex;
import rrj.router.Router;
import rrj.router.Search;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

/**
 * Dynamic batching: the one thread that uses the encoder (it is not thread-safe, and neither
 * is {@link Search}). HTTP handlers tokenize on their own threads, {@link #submit} a
 * {@link Job} and wait for it; the batcher takes the oldest job and merges the jobs queued
 * behind it while their tokens fit in {@code maxBatchTokens}, then runs them together:
 * <ol>
 * <li>a base pass over every input that asks for routing ({@value #AUTO}), and the router's
 *     decision for each (RouterRetriever's first pass, DESIGN §2);</li>
 * <li>one mixed-expert pass over every input that wants an embedding, each through its
 *     expert (the encoder groups rows per expert: one batch, per-expert LoRA segments);</li>
 * <li>the searches of the batch, one exact top-k per corpus over all its queries.</li>
 * </ol>
 * Requests of different experts, endpoints and sizes share one batch; a job larger than
 * {@code maxBatchTokens} runs alone (the encoder splits it). The queue is bounded: a full
 * queue is a 429 for the caller, never an unbounded wait. If a merged batch fails, its jobs
 * are rerun one by one, so one bad job fails only its own request.
 *
 * <p>Closing: no job is accepted after {@link #close}; the jobs already queued are finished,
 * then the thread ends.
 */
final class Batcher implements AutoCloseable {
    /** The model name that asks for routing. */
    static final String AUTO = "auto";
    /** How often an idle batcher looks whether it was closed. */
    static final long IDLE_POLL_MS = 50;

    /** A loaded corpus: its index and the labels of its rows (a hit shows the document's title, "" for none). */
    record Corpus(String name, CorpusIndex index, CorpusIndex.Labels labels) {}

    /** One search result. */
    record Hit(String dataset, String id, String title, float score) {}

    /** One request's work; the result fields are written by the batcher before {@link #done} completes. */
    static final class Job {
        final int[][] ids;          // per input: token ids, special tokens included
        final String[] expert;      // per input: a router option, Router.BASE, or AUTO
        final boolean embed;        // false: routing only (/route)
        final List<Corpus> search;  // non-null: search these corpora with input 0's embedding
        final int k;                // hits wanted, when searching
        final int tokens;
        float[][] embeddings;       // [inputs][C], when embed
        Router.Decision[] decisions; // per input; null entries where the expert was given
        Hit[] hits;                 // best first, when searching
        final CompletableFuture<Job> done = new CompletableFuture<>();

        Job(int[][] ids, String[] expert, boolean embed, List<Corpus> search, int k) {
            if (ids.length != expert.length) throw new IllegalArgumentException(ids.length + " inputs but " + expert.length + " experts");
            this.ids = ids;
            this.expert = expert;
            this.embed = embed;
            this.search = search;
            this.k = k;
            int t = 0;
            for (int[] s : ids) t += s.length;
            this.tokens = t;
        }

        /** Every input through the same option. */
        static Job of(int[][] ids, String expert, boolean embed, List<Corpus> search, int k) {
            String[] e = new String[ids.length];
            Arrays.fill(e, expert);
            return new Job(ids, e, embed, search, k);
        }
    }

    private final Router router;
    private final Search search;
    private final int maxBatchTokens;
    private final ArrayBlockingQueue<Job> queue;
    private final ServerMetrics metrics;
    private final Thread thread;
    private final Object lock = new Object(); // orders submit against close
    private volatile boolean closed;
    /** Test hook: runs on the batcher thread after it took a batch's first job, before merging. */
    volatile Runnable beforeBatch;

    Batcher(Router router, int maxBatchTokens, int maxQueue, ServerMetrics metrics) {
        this.router = router;
        this.search = new Search(router.encoder.bert.backend());
        this.maxBatchTokens = maxBatchTokens;
        this.queue = new ArrayBlockingQueue<>(maxQueue);
        this.metrics = metrics;
        router.encoder.maxBatchTokens = maxBatchTokens; // one encoder run never exceeds a merged batch
        this.thread = new Thread(this::loop, "rr-batcher");
    }

    void start() { thread.start(); }

    int queueDepth() { return queue.size(); }

    /** Queues a job: a 503 once closing, a 429 when the queue is full. */
    CompletableFuture<Job> submit(Job job) {
        synchronized (lock) {
            if (closed) throw new ApiError(503, "server_error", "the server is shutting down", null, "shutting_down");
            if (!queue.offer(job))
                throw new ApiError(429, "server_busy_error", "the server is busy: " + queue.remainingCapacity() + " free of "
                        + (queue.size() + queue.remainingCapacity()) + " queue slots; retry later", null, "queue_full");
        }
        return job.done;
    }

    private void loop() {
        List<Job> batch = new ArrayList<>();
        while (true) {
            Job first;
            try {
                first = queue.poll(IDLE_POLL_MS, TimeUnit.MILLISECONDS);
            } catch (InterruptedException e) {
                continue; // only close() ends the loop, after the queue is drained
            }
            if (first == null) {
                // closed is set under the submit lock, so once it reads true no job can still arrive
                if (closed && queue.isEmpty()) return;
                continue;
            }
            Runnable hook = beforeBatch;
            if (hook != null) hook.run();
            batch.clear();
            batch.add(first);
            int tokens = first.tokens;
            for (Job next; (next = queue.peek()) != null && tokens + next.tokens <= maxBatchTokens; tokens += next.tokens)
                batch.add(queue.poll()); // only this thread takes, so the polled job is the peeked one
            runIsolated(batch);
        }
    }

    /** Runs the batch; if it fails, each job alone, so a failure is reported only to the job that causes it. */
    private void runIsolated(List<Job> jobs) {
        try {
            run(jobs);
            for (Job j : jobs) j.done.complete(j);
        } catch (Throwable t) {
            if (jobs.size() == 1) jobs.get(0).done.completeExceptionally(t);
            else for (Job j : jobs) runIsolated(List.of(j));
        }
    }

    private void run(List<Job> jobs) {
        long t0 = System.nanoTime();
        // 1. routing: one base pass over every AUTO input of the batch
        int auto = 0, inputs = 0;
        for (Job j : jobs)
            for (String e : j.expert) { inputs++; if (e.equals(AUTO)) auto++; }
        if (auto > 0) {
            int[][] ids = new int[auto][];
            int r = 0;
            for (Job j : jobs)
                for (int i = 0; i < j.ids.length; i++) if (j.expert[i].equals(AUTO)) ids[r++] = j.ids[i];
            Router.Decision[] d = router.routeIds(ids);
            r = 0;
            for (Job j : jobs) {
                j.decisions = new Router.Decision[j.ids.length];
                for (int i = 0; i < j.ids.length; i++) if (j.expert[i].equals(AUTO)) j.decisions[i] = d[r++];
            }
        }

        // 2. one mixed-expert pass over every input that wants an embedding
        int rows = 0;
        for (Job j : jobs) if (j.embed) rows += j.ids.length;
        if (rows > 0) {
            int[][] ids = new int[rows][];
            String[] choice = new String[rows];
            int r = 0;
            for (Job j : jobs) {
                if (!j.embed) continue;
                for (int i = 0; i < j.ids.length; i++, r++) {
                    ids[r] = j.ids[i];
                    choice[r] = chosen(j, i);
                }
            }
            float[][] e = router.encodeIds(ids, choice);
            r = 0;
            for (Job j : jobs) {
                if (!j.embed) continue;
                j.embeddings = Arrays.copyOfRange(e, r, r + j.ids.length);
                r += j.ids.length;
            }
        }

        // 3. searches: per corpus, one top-k over the queries of every job that searches it
        Map<Corpus, List<Job>> byCorpus = new LinkedHashMap<>();
        for (Job j : jobs)
            if (j.search != null) for (Corpus c : j.search) byCorpus.computeIfAbsent(c, x -> new ArrayList<>()).add(j);
        Map<Job, List<Hit>> found = new LinkedHashMap<>();
        for (Map.Entry<Corpus, List<Job>> e : byCorpus.entrySet()) {
            Corpus c = e.getKey();
            List<Job> js = e.getValue();
            float[][] q = new float[js.size()][];
            int k = 1;
            for (int i = 0; i < q.length; i++) { q[i] = js.get(i).embeddings[0]; k = Math.max(k, js.get(i).k); }
            Search.Hits[] h = search.topK(c.index(), q, k, false, null);
            for (int i = 0; i < q.length; i++) {
                List<Hit> into = found.computeIfAbsent(js.get(i), x -> new ArrayList<>());
                for (int m = 0; m < h[i].size(); m++)
                    into.add(new Hit(c.name(), h[i].ids()[m], c.labels().title(h[i].docs()[m]), h[i].scores()[m]));
            }
        }
        for (Map.Entry<Job, List<Hit>> e : found.entrySet()) {
            List<Hit> all = e.getValue();
            all.sort((a, b) -> Float.compare(b.score(), a.score())); // stable: per corpus, Search's order stays
            e.getKey().hits = all.subList(0, Math.min(all.size(), e.getKey().k)).toArray(new Hit[0]);
        }

        metrics.batchSeconds.observe((System.nanoTime() - t0) * 1e-9);
        metrics.batchInputs.observe(inputs);
        metrics.batchRequests.observe(jobs.size());
        for (Job j : jobs)
            for (int i = 0; i < j.ids.length; i++) {
                metrics.expert(chosen(j, i), 1);
                metrics.tokens.add(j.ids[i].length);
            }
    }

    /** The option input {@code i} of a job runs through: its routing decision, or the one asked for. */
    static String chosen(Job j, int i) {
        return j.expert[i].equals(AUTO) ? j.decisions[i].expert() : j.expert[i];
    }

    /** Refuses new jobs, finishes the queued ones, and waits for the thread to end. */
    @Override
    public void close() {
        synchronized (lock) {
            closed = true;
        }
        boolean interrupted = false;
        while (thread.isAlive()) {
            try {
                thread.join();
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        if (interrupted) Thread.currentThread().interrupt();
    }
}
