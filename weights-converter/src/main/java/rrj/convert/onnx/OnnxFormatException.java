package rrj.convert.onnx;

import rrj.convert.FileText;

/**
 * An ONNX file that {@link OnnxModel} cannot read or that {@link OnnxBertConverter} cannot map to
 * Hugging Face BERT weights: not protobuf / truncated, external data, an unsupported data type, a
 * missing initializer, a graph whose op pattern is not the BERT encoder it expects.
 *
 * <p>The message is always one line and names the file, node (name and op_type) or initializer and
 * what was expected, so that it can be shown to a user as is. Text taken from the file is escaped
 * and shortened ({@link FileText}).
 */
public final class OnnxFormatException extends RuntimeException {
    public OnnxFormatException(String message) {
        super(FileText.oneLine(message));
    }

    public OnnxFormatException(String message, Throwable cause) {
        super(FileText.oneLine(message), cause);
    }
}
