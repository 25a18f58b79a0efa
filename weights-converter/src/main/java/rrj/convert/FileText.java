package rrj.convert;

/**
 * Text taken from a file being converted, made safe for a one-line error message: the readers of
 * ONNX files and PyTorch checkpoints ({@code OnnxFormatException}, {@code TorchFormatException})
 * put names, keys and opcodes from the file into their messages through these.
 */
public final class FileText {
    private FileText() {}

    /** Escapes control characters so that a message stays on one line. */
    public static String oneLine(String s) {
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

    /** A file-supplied string, quoted, escaped and cut to a readable length (120 characters) for a message. */
    public static String quote(String s) {
        if (s == null) return "None";
        String t = s.length() > 120 ? s.substring(0, 120) + "..." : s;
        return "'" + oneLine(t) + "'";
    }
}
