package rrj.convert.onnx;

/**
 * An ONNX file that {@link OnnxModel} cannot read or that {@link OnnxBertConverter} cannot map to
 * Hugging Face BERT weights: not protobuf / truncated, external data, an unsupported data type, a
 * missing initializer, a graph whose op pattern is not the BERT encoder it expects.
 *
 * <p>The message is always one line and names the file, node (name and op_type) or initializer and
 * what was expected, so that it can be shown to a user as is. Text taken from the file is escaped
 * and shortened. Mirrors {@code rrj.convert.torch.TorchFormatException}.
 */
public final class OnnxFormatException extends RuntimeException {
    public OnnxFormatException(String message) {
        super(oneLine(message));
    }

    public OnnxFormatException(String message, Throwable cause) {
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
