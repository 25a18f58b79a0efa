package rrj.app;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Command-line flags: {@code --name value}, {@code --name=value}, boolean {@code --flag}, and
 * positional arguments. Unknown flags and missing values are usage errors naming the flag.
 */
public final class Args {
    /** A usage error: printed as one line, exit code 2. */
    public static final class UsageException extends RuntimeException {
        public UsageException(String message) { super(message); }
    }

    public final Map<String, List<String>> values = new LinkedHashMap<>();
    public final List<String> positional = new ArrayList<>();

    public static Args parse(String[] argv, int from, Set<String> valued, Set<String> booleans) {
        Args a = new Args();
        for (int i = from; i < argv.length; i++) {
            String s = argv[i];
            if (s.equals("--")) {
                for (i++; i < argv.length; i++) a.positional.add(argv[i]);
                break;
            }
            if (s.startsWith("--") && s.length() > 2) {
                String name = s.substring(2), value = null;
                int eq = name.indexOf('=');
                if (eq >= 0) { value = name.substring(eq + 1); name = name.substring(0, eq); }
                if (booleans.contains(name)) {
                    if (value != null) throw new UsageException("--" + name + " takes no value");
                    a.values.computeIfAbsent(name, k -> new ArrayList<>()).add("true");
                } else if (valued.contains(name)) {
                    if (value == null) {
                        if (i + 1 >= argv.length) throw new UsageException("--" + name + " needs a value");
                        value = argv[++i];
                    }
                    a.values.computeIfAbsent(name, k -> new ArrayList<>()).add(value);
                } else {
                    throw new UsageException("unknown option --" + name);
                }
            } else {
                a.positional.add(s);
            }
        }
        return a;
    }

    public boolean has(String name) { return values.containsKey(name); }

    public String get(String name) {
        List<String> v = values.get(name);
        return v == null ? null : v.get(v.size() - 1);
    }

    public List<String> all(String name) { return values.getOrDefault(name, List.of()); }

    public int getInt(String name, int dflt, int min, int max) {
        String v = get(name);
        if (v == null) return dflt;
        try {
            int x = Integer.parseInt(v);
            if (x < min || x > max) throw new UsageException("--" + name + " must be between " + min + " and " + max + ", got " + v);
            return x;
        } catch (NumberFormatException e) {
            throw new UsageException("--" + name + " must be an integer, got '" + v + "'");
        }
    }
}
