//! The chat page, embedded in the binary and served over plain HTTP on the WebSocket's port.

use crate::http::{self, Status};

/// A static file: its content type and bytes.
#[derive(Debug)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// The page loads only its own script and style, and talks only to its own origin (HTTP and
/// WebSocket): even if an injection slipped through, no inline or foreign script would run.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; form-action 'none'";

const INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("page/index.html"),
};
const SCRIPT: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!("page/app.js"),
};
const STYLE: Asset = Asset {
    content_type: "text/css; charset=utf-8",
    body: include_bytes!("page/style.css"),
};

/// The asset served at `path`, if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    match path {
        "/" | "/index.html" => Some(&INDEX),
        "/app.js" => Some(&SCRIPT),
        "/style.css" => Some(&STYLE),
        _ => None,
    }
}

impl Asset {
    /// The `200 OK` response; for `HEAD`, the same head without the body.
    pub fn response(&self, head_only: bool) -> Vec<u8> {
        let headers = [
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        ];
        let mut response = http::response(Status::OK, &headers, self.content_type, self.body);
        if head_only {
            response.truncate(response.len() - self.body.len());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_and_assets_have_their_content_types() {
        assert!(asset("/").unwrap().content_type.starts_with("text/html"));
        assert!(
            asset("/app.js")
                .unwrap()
                .content_type
                .starts_with("text/javascript")
        );
        assert!(asset("/style.css").unwrap().content_type.starts_with("text/css"));
        assert!(asset("/secret").is_none());
    }

    #[test]
    fn head_response_has_no_body_but_the_same_length() {
        let full = asset("/").unwrap().response(false);
        let head = asset("/").unwrap().response(true);
        assert!(full.starts_with(&head));
        assert_eq!(full.len() - head.len(), INDEX.body.len());
    }
}
