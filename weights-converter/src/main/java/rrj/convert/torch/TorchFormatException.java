package rrj.convert.torch;

/**
 * A PyTorch checkpoint that {@link TorchStateDict} cannot or will not read: a corrupt or truncated
 * zip, the legacy (pre-1.6, non-zip) format, a pickle opcode or global outside the allow-list, a
 * tensor view it cannot rebuild, a storage entry missing from the archive.
 *
 * <p>The message is always one line and names the file and the offending key, opcode or global,
 * so it can be shown to a user as is. Text taken from the file is escaped and shortened.
 */
public final class TorchFormatException extends RuntimeException {
    public TorchFormatException(String message) {
        super(oneLine(message));
    }

    public TorchFormatException(String message, Throwable cause) {
        super(oneLine(message), cause);
    }

    /** Escapes control characters so that a message stays on one line. */
    static String oneLine(String s) {
        StringBuilder b = new StringBuilder(s.length());
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '\n') b.append("\\n");
            else if (c == '\r') b.append("\\r");
            else if (c < 0x20 || c == 0x7f) b.append(String.format("\\x%02x", (int) c));
            else b.append(c);
        }
        return b.toString();
    }

    /** A file-supplied string, quoted, escaped and cut to a readable length for a message. */
    static String quote(String s) {
        if (s == null) return "None";
        String t = s.length() > 120 ? s.substring(0, 120) + "..." : s;
        return "'" + oneLine(t) + "'";
    }
}
