package rrj.convert.torch;

import rrj.convert.FileText;

/**
 * A PyTorch checkpoint that {@link TorchStateDict} cannot or will not read: a corrupt or truncated
 * zip, the legacy (pre-1.6, non-zip) format, a pickle opcode or global outside the allow-list, a
 * tensor view it cannot rebuild, a storage entry missing from the archive.
 *
 * <p>The message is always one line and names the file and the offending key, opcode or global,
 * so it can be shown to a user as is. Text taken from the file is escaped and shortened ({@link FileText}).
 */
public final class TorchFormatException extends RuntimeException {
    public TorchFormatException(String message) {
        super(FileText.oneLine(message));
    }

    public TorchFormatException(String message, Throwable cause) {
        super(FileText.oneLine(message), cause);
    }
}
