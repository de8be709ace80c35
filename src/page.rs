//! The chat page, embedded in the binary and served over plain HTTP on the WebSocket's port.

use crate::http::{Response, Status};

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
    /// The `200 OK` response. For `HEAD` the HTTP layer sends the same head without the body.
    pub fn response(&self) -> Response {
        Response::with_body(Status::OK, self.content_type, self.body)
            .header("Cache-Control", "no-cache")
            .header("X-Content-Type-Options", "nosniff")
            .header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
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
    fn assets_are_served_without_a_copy_and_never_sniffed() {
        let response = asset("/").unwrap().response();
        assert!(matches!(response.body, std::borrow::Cow::Borrowed(_)));
        assert!(
            response
                .head
                .headers
                .iter()
                .any(|(name, value)| *name == "X-Content-Type-Options" && value == "nosniff")
        );
    }
}
