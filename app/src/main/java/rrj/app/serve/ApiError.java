package rrj.app.serve;

import rrj.model.Json;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A request the server refuses, as OpenAI's API reports it: an HTTP status and the body
 * {@code {"error": {"message", "type", "param", "code"}}}. The message names the problem (the
 * field, the input index, the limit); it never carries a stack trace.
 */
final class ApiError extends RuntimeException {
    final int status;
    final String type;   // "invalid_request_error", "server_error", ...
    final String param;  // the request field at fault, or null
    final String code;   // a machine-readable reason, or null

    ApiError(int status, String type, String message, String param, String code) {
        super(message, null, false, false); // no stack trace: this is an answer, not a fault
        this.status = status;
        this.type = type;
        this.param = param;
        this.code = code;
    }

    /** A 400 about one field of the request. */
    static ApiError invalid(String message, String param) {
        return new ApiError(400, "invalid_request_error", message, param, null);
    }

    /** The JSON body of this error. */
    String body() {
        Map<String, Object> e = new LinkedHashMap<>();
        e.put("message", getMessage());
        e.put("type", type);
        e.put("param", param);
        e.put("code", code);
        return Json.write(Map.of("error", e));
    }
}
