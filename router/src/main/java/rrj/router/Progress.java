package rrj.router;

import java.io.PrintStream;
import java.util.Locale;

/**
 * A progress line for long loops (corpus encoding): done/total, items/s and ETA. On a
 * terminal it redraws one line with carriage returns (at most every 0.5 s); otherwise (logs,
 * CI, {@code System.console() == null}) it prints a plain line every ~10%. A null stream
 * prints nothing.
 */
final class Progress {
    private final PrintStream out;
    private final String label;
    private final long total;
    private final boolean terminal;
    private final long t0 = System.nanoTime();
    private final long startDone;
    private long lastDraw;
    private int lastDecile = -1;

    /** {@code alreadyDone}: items finished before this run (resumed), left out of the rate. */
    Progress(PrintStream out, String label, long total, long alreadyDone) {
        this(out, label, total, alreadyDone, System.console() != null);
    }

    Progress(PrintStream out, String label, long total, long alreadyDone, boolean terminal) {
        this.out = out;
        this.label = label;
        this.total = total;
        this.startDone = alreadyDone;
        this.terminal = terminal;
    }

    void update(long done) {
        if (out == null) return;
        long now = System.nanoTime();
        if (terminal) {
            if (done < total && now - lastDraw < 500_000_000L) return;
            lastDraw = now;
            out.print("\r" + line(done, now) + "   ");
            if (done >= total) out.println();
            out.flush();
        } else {
            int decile = total == 0 ? 10 : (int) (done * 10 / total);
            if (decile == lastDecile) return;
            lastDecile = decile;
            out.println(line(done, now));
        }
    }

    private String line(long done, long now) {
        double s = (now - t0) / 1e9;
        double rate = s > 0 ? (done - startDone) / s : 0;
        String eta = rate > 0 && done < total ? time((total - done) / rate) : done >= total ? "done in " + time(s) : "?";
        return String.format(Locale.ROOT, "%s: %d/%d (%.0f%%) %.1f docs/s ETA %s", label, done, total,
                total == 0 ? 100.0 : 100.0 * done / total, rate, eta);
    }

    static String time(double seconds) {
        long t = Math.round(seconds);
        return t >= 3600 ? String.format(Locale.ROOT, "%dh%02dm%02ds", t / 3600, t / 60 % 60, t % 60)
                : t >= 60 ? String.format(Locale.ROOT, "%dm%02ds", t / 60, t % 60) : t + "s";
    }
}
