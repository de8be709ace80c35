//! The few HTTP/1.1 responses the server writes (RFC 9110 status codes, RFC 9112 message syntax):
//! the handshake's rejections and the chat page. Every response closes the connection, so there is
//! no keep-alive state to track.

/// A status line: code and reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16, pub &'static str);

impl Status {
    pub const OK: Status = Status(200, "OK");
    pub const BAD_REQUEST: Status = Status(400, "Bad Request");
    pub const FORBIDDEN: Status = Status(403, "Forbidden");
    pub const NOT_FOUND: Status = Status(404, "Not Found");
    pub const METHOD_NOT_ALLOWED: Status = Status(405, "Method Not Allowed");
    pub const UPGRADE_REQUIRED: Status = Status(426, "Upgrade Required");
    pub const HEADERS_TOO_LARGE: Status = Status(431, "Request Header Fields Too Large");
    pub const SERVICE_UNAVAILABLE: Status = Status(503, "Service Unavailable");

    pub fn code(self) -> u16 {
        self.0
    }
}

/// Renders a complete response with `Content-Length` and `Connection: close`.
pub fn response(status: Status, headers: &[(&str, &str)], content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        status.0,
        status.1,
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A plain-text error response whose body is one line saying what was wrong.
pub fn error_response(status: Status, headers: &[(&str, &str)], message: &str) -> Vec<u8> {
    response(
        status,
        headers,
        "text/plain; charset=utf-8",
        format!("{message}\n").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_has_length_and_closes_the_connection() {
        let bytes = error_response(Status::NOT_FOUND, &[("X-Test", "1")], "no such path");
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Content-Length: 13\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.contains("X-Test: 1\r\n"));
        assert!(text.ends_with("\r\n\r\nno such path\n"));
    }
}
