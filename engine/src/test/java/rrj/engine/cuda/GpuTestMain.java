package rrj.engine.cuda;

import org.junit.platform.launcher.Launcher;
import org.junit.platform.launcher.LauncherDiscoveryRequest;
import org.junit.platform.launcher.TagFilter;
import org.junit.platform.launcher.TestExecutionListener;
import org.junit.platform.launcher.TestIdentifier;
import org.junit.platform.launcher.core.LauncherDiscoveryRequestBuilder;
import org.junit.platform.launcher.core.LauncherFactory;
import org.junit.platform.launcher.listeners.SummaryGeneratingListener;
import org.junit.platform.launcher.listeners.TestExecutionSummary;
import org.junit.platform.engine.TestExecutionResult;

import java.io.PrintWriter;

import static org.junit.platform.engine.discovery.DiscoverySelectors.selectPackage;

/**
 * Runs the {@code @Tag("gpu")} tests of rrj.engine.cuda without Maven, for a GPU machine that
 * has a JDK but no Maven or repository (bench/gpu/device-checks.sh): the same tests that
 * {@code mvn -Pgpu test -pl engine} runs. Prints each test's outcome, the failures, and a
 * closing "N passed, N failed" line; exits 1 on any failure or when no test was found.
 */
public final class GpuTestMain {
    private GpuTestMain() {}

    public static void main(String[] args) {
        LauncherDiscoveryRequest request = LauncherDiscoveryRequestBuilder.request()
                .selectors(selectPackage("rrj.engine.cuda"))
                .filters(TagFilter.includeTags("gpu"))
                .build();
        Launcher launcher = LauncherFactory.create();
        SummaryGeneratingListener summary = new SummaryGeneratingListener();
        TestExecutionListener progress = new TestExecutionListener() {
            @Override
            public void executionFinished(TestIdentifier id, TestExecutionResult result) {
                if (!id.isTest() && result.getStatus() == TestExecutionResult.Status.SUCCESSFUL) return;
                System.out.println((result.getStatus() == TestExecutionResult.Status.SUCCESSFUL ? "PASS " : "FAIL ") + id.getDisplayName()
                        + result.getThrowable().map(t -> "  — " + t).orElse(""));
            }
        };
        launcher.execute(request, summary, progress);
        TestExecutionSummary s = summary.getSummary();
        PrintWriter out = new PrintWriter(System.out, true);
        s.printFailuresTo(out, 25);
        s.printTo(out);
        long failed = s.getTotalFailureCount(), passed = s.getTestsSucceededCount();
        out.println(passed + " passed, " + failed + " failed");
        System.exit(failed == 0 && s.getTestsFoundCount() > 0 ? 0 : 1);
    }
}
