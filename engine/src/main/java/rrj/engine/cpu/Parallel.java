package rrj.engine.cpu;

import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;

/**
 * A fixed pool for data-parallel kernels: {@code run(task, n)} executes {@code task.run(0..n-1)}
 * on the workers and the calling thread, and returns when all chunks are done. No per-call
 * allocation: a kernel passes a long-lived task object whose fields hold its arguments.
 *
 * <p>Chunks are claimed dynamically, and the caller claims too: a worker that the OS has not
 * scheduled yet (the machine is shared, or busy) delays only the chunk it is running, never the
 * whole op — the caller takes the rest. Workers spin briefly before parking, because a BERT
 * forward pass issues hundreds of short kernels back to back and a park/unpark round trip costs
 * tens of microseconds — but only briefly (see WORKER_SPINS); the caller, once out of chunks,
 * spins briefly and then yields its core (to the worker it is waiting for, if that one is runnable).
 *
 * <p>Protocol: {@code claim} packs (generation, next chunk) in one long. The caller publishes
 * task and chunk count, then sets {@code claim} to (g, 0) and {@code generation} to g. A claim
 * is a CAS that keeps the generation, so a worker that read an older generation can never take
 * a chunk of a newer run; it reads the task only after its claim succeeded, when the caller
 * cannot have moved on (that chunk is not done yet).
 */
final class Parallel implements AutoCloseable {
    /** One chunk of a kernel; {@code worker} in [0, threads) indexes per-thread scratch (0 = caller). */
    interface Task { void run(int chunk, int worker); }

    // A worker's spin before it parks: ~20-60 µs, longer than the gap between the kernels of a
    // forward pass, so workers stay hot within one; much longer spins cost a query up to 2× on a
    // busy machine (a spinning worker is always runnable, and the scheduler preempts it mid-chunk).
    private static final int WORKER_SPINS = 1 << 10;
    private static final int CALLER_SPINS = 1 << 10;  // the caller's spin before it yields

    private final Thread[] workers;
    private final AtomicLong claim = new AtomicLong();
    private final AtomicInteger done = new AtomicInteger();
    private final AtomicIntegerArray sleeping;
    private volatile Task task;
    private volatile int chunks;
    private volatile int generation;
    private volatile boolean closed;
    private volatile Throwable failure;

    Parallel(int threads) {
        workers = new Thread[Math.max(0, threads - 1)];
        sleeping = new AtomicIntegerArray(workers.length);
        for (int w = 0; w < workers.length; w++) {
            final int id = w + 1;
            Thread t = new Thread(() -> workerLoop(id), "rr-cpu-" + (w + 1));
            t.setDaemon(true);
            workers[w] = t;
            t.start();
        }
    }

    int threads() { return workers.length + 1; }

    void run(Task t, int n) {
        if (n <= 0) return;
        if (workers.length == 0 || n == 1) {
            for (int i = 0; i < n; i++) t.run(i, 0);
            return;
        }
        int g = generation + 1;
        // claim first: a worker still leaving the previous run may read the new chunk count, but
        // its compare-and-set on the old claim must fail, or it would run (and count) a chunk of
        // this run outside the claim protocol
        claim.set((long) g << 32);
        task = t;
        chunks = n;
        done.set(0);
        generation = g;
        for (int w = 0; w < workers.length; w++) if (sleeping.get(w) != 0) LockSupport.unpark(workers[w]);
        work(g, 0);
        for (int spins = 0; done.get() < n; ) {
            if (++spins < CALLER_SPINS) Thread.onSpinWait();
            else Thread.yield();
        }
        task = null;
        Throwable f = failure;
        if (f != null) {
            failure = null;
            if (f instanceof RuntimeException re) throw re;
            if (f instanceof Error er) throw er;
            throw new IllegalStateException(f);
        }
    }

    /** Claims and runs chunks of generation {@code g} until none is left (or a newer run started). */
    private void work(int g, int worker) {
        while (true) {
            long c = claim.get();
            if ((int) (c >>> 32) != g) return;
            int i = (int) c;
            if (i >= chunks) return;
            if (!claim.compareAndSet(c, c + 1)) continue;
            Task t = task; // the task of generation g: chunk i is not done, so the caller has not moved on
            try {
                t.run(i, worker);
            } catch (Throwable e) {
                if (failure == null) failure = e; // rethrown on the caller's thread
            } finally {
                done.incrementAndGet();
            }
        }
    }

    private void workerLoop(int id) {
        int seen = 0;
        while (!closed) {
            int spins = 0, g;
            while ((g = generation) == seen && !closed) {
                if (++spins < WORKER_SPINS) {
                    Thread.onSpinWait();
                } else {
                    sleeping.set(id - 1, 1);
                    if (generation == seen && !closed) LockSupport.park(this);
                    sleeping.set(id - 1, 0);
                    spins = 0;
                }
            }
            if (closed) return;
            seen = g;
            work(g, id);
        }
    }

    @Override
    public void close() {
        closed = true;
        for (Thread w : workers) LockSupport.unpark(w);
    }
}
