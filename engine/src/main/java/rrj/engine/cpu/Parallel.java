package rrj.engine.cpu;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.LockSupport;

/**
 * A fixed pool for data-parallel kernels: {@code run(task, n)} executes {@code task.run(0..n-1)}
 * on the workers and the calling thread, and returns when all chunks are done. No per-call
 * allocation: a kernel passes a long-lived task object whose fields hold its arguments.
 *
 * <p>Workers spin briefly before parking, because a BERT forward pass issues hundreds of short
 * kernels back to back and a park/unpark round trip costs tens of microseconds.
 *
 * <p>Protocol: the caller publishes task, chunk count and counters, then bumps
 * {@code generation}. A worker marks itself {@code active} before it reads the task and unmarks
 * after its last chunk; the caller clears the task and waits for {@code active == 0} before
 * returning, so no worker can carry an old task into the next run.
 */
final class Parallel implements AutoCloseable {
    /** One chunk of a kernel; {@code worker} in [0, threads) indexes per-thread scratch (0 = caller). */
    interface Task { void run(int chunk, int worker); }

    private final Thread[] workers;
    private final AtomicInteger next = new AtomicInteger();
    private final AtomicInteger done = new AtomicInteger();
    private final AtomicInteger active = new AtomicInteger();
    private volatile Task task;
    private volatile int chunks;
    private volatile int generation;
    private volatile boolean closed;
    private volatile Throwable failure;
    private static final int SPINS = 1 << 16;

    Parallel(int threads) {
        workers = new Thread[Math.max(0, threads - 1)];
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
        task = t;
        chunks = n;
        next.set(0);
        done.set(0);
        generation++;
        for (Thread w : workers) LockSupport.unpark(w);
        work(0);
        while (done.get() < n) Thread.onSpinWait();
        task = null;
        while (active.get() != 0) Thread.onSpinWait();
        Throwable f = failure;
        if (f != null) {
            failure = null;
            if (f instanceof RuntimeException re) throw re;
            if (f instanceof Error er) throw er;
            throw new IllegalStateException(f);
        }
    }

    private void work(int worker) {
        Task t = task;
        if (t == null) return;
        int n = chunks;
        for (int i; (i = next.getAndIncrement()) < n; ) {
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
            int spins = 0;
            while (generation == seen && !closed) {
                if (++spins < SPINS) Thread.onSpinWait();
                else LockSupport.park(this);
            }
            if (closed) return;
            active.incrementAndGet();
            seen = generation;
            try {
                work(id);
            } finally {
                active.decrementAndGet();
            }
        }
    }

    @Override
    public void close() {
        closed = true;
        for (Thread w : workers) LockSupport.unpark(w);
    }
}
