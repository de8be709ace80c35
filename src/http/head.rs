//! The request head: request line (RFC 9112 §3) and header fields (RFC 9112 §5, RFC 9110 §5),
//! read with `httparse`.
//!
//! A head is complete at its first empty line (RFC 9112 §2.1). Until then its bytes trickle in, so
//! two questions are kept apart: *is it worth parsing yet?* (`SectionScan`, which looks at each
//! byte once) and *what does it say?* ([`parse_head`]). A head sent one byte at a time is then
//! searched once and parsed once, not once per byte.
//!
//! `httparse` is strict where RFC 9112 requires it: whitespace between a field name and its colon
//! (§5.1) and obsolete line folding (§5.2) are rejected. It accepts a bare LF as a line end, which
//! §2.2 allows a recipient to do.

use super::Error;
use super::conn::Limits;

/// Most header fields any [`Limits`] may allow: `httparse` fills a fixed array, which lives on the
/// stack (32 bytes a slot). A larger `max_headers` is capped here.
pub const HEADER_SLOTS: usize = 128;

/// A request line and its header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request-target exactly as sent (RFC 9112 §3.2).
    pub target: String,
    /// The target without its query string (and, for the absolute-form `http://host/path`, without
    /// its scheme and authority).
    pub path: String,
    /// What follows the first `?` of the target, if there is one.
    pub query: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Every field line in order: the name as sent, the value without surrounding whitespace
    /// (RFC 9110 §5.5) and with bytes that are not UTF-8 replaced.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first value of the field `name` (names are case-insensitive, RFC 9110 §5.1).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.values(name).next()
    }

    /// Every value of the field `name`, one per field line, in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl DoubleEndedIterator<Item = &'a str> {
        self.values(name)
    }

    fn values<'s, 'n>(&'s self, name: &'n str) -> impl DoubleEndedIterator<Item = &'s str> + use<'s, 'n> {
        self.headers
            .iter()
            .filter(move |(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The elements of the comma-separated list that the field `name` holds, over all its field
    /// lines (RFC 9110 §5.3 makes several lines equal to one joined by commas), empty elements
    /// skipped (§5.6.1). Commas inside quoted strings are not recognized: none of the fields we
    /// read this way (`Connection`, `Transfer-Encoding`, `Upgrade`, `Expect`) uses them.
    pub fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.header_values(name).flat_map(list_elements)
    }

    /// Whether the list in field `name` holds `token`, compared ignoring ASCII case.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.tokens(name)
            .any(|element| element.eq_ignore_ascii_case(token))
    }

    /// The value of the first `name=value` pair of the query string; a name without `=` has the
    /// empty value. Both are compared and returned as sent, still percent-encoded: the values this
    /// server reads from queries are plain tokens, and decoding is left to a caller that needs it.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .as_deref()?
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }
}

/// The elements of one comma-separated field value (RFC 9110 §5.6.1), trimmed, empty ones skipped.
pub fn list_elements(value: &str) -> impl DoubleEndedIterator<Item = &str> {
    value
        .split(',')
        .map(trim_ows)
        .filter(|element| !element.is_empty())
}

/// RFC 9110 §5.6.3: optional whitespace is spaces and tabs, nothing else.
fn trim_ows(text: &str) -> &str {
    text.trim_matches([' ', '\t'])
}

/// Parses the request head at the front of `buf`. `Ok(None)`: not complete yet. `Ok(Some((head,
/// len)))`: the head is the first `len` bytes; what follows is the body or the next message.
///
/// Only the first `limits.max_head_bytes` bytes are looked at, so the verdict on a head does not
/// depend on how many bytes behind it happened to arrive with it. Empty lines before the request
/// line are skipped (RFC 9112 §2.2) and count toward the limit.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, Error> {
    let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let slots = &mut slots[..limits.max_headers.min(HEADER_SLOTS)];
    let mut request = httparse::Request::new(slots);
    let parsed = parse_window(buf, limits.max_head_bytes, |window| request.parse(window));
    match parsed {
        Ok(Some(len)) => Ok(Some((head_of(&request), len))),
        Ok(None) => Ok(None),
        Err(SectionError::TooLarge) => Err(Error::HeadTooLarge {
            limit: limits.max_head_bytes,
        }),
        Err(SectionError::TooManyFields) => Err(Error::TooManyHeaders {
            limit: limits.max_headers,
        }),
        Err(SectionError::Malformed(why)) => Err(Error::Malformed(why)),
    }
}

/// Parses a trailer section (RFC 9112 §7.1.2: field lines, then an empty line) at the front of
/// `buf`, within the same bounds as a head. Returns its length once complete. The fields
/// themselves are dropped: §7.1.2 lets a recipient discard them, and we have no use for any.
pub(crate) fn parse_trailers(buf: &[u8], limits: &Limits) -> Result<Option<usize>, Error> {
    let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let slots = &mut slots[..limits.max_headers.min(HEADER_SLOTS)];
    let parsed = parse_window(buf, limits.max_head_bytes, |window| {
        Ok(match httparse::parse_headers(window, slots)? {
            httparse::Status::Complete((len, _)) => httparse::Status::Complete(len),
            httparse::Status::Partial => httparse::Status::Partial,
        })
    });
    parsed.map_err(|error| match error {
        SectionError::TooLarge => Error::TrailersTooLarge {
            limit: limits.max_head_bytes,
        },
        SectionError::TooManyFields => Error::TooManyTrailers {
            limit: limits.max_headers,
        },
        SectionError::Malformed(why) => Error::MalformedTrailers(why),
    })
}

/// Why a field section (a head or a trailer section) was refused; each caller names these with
/// its own [`Error`] variants.
enum SectionError {
    TooLarge,
    TooManyFields,
    Malformed(httparse::Error),
}

/// Runs `parse` over at most `max_bytes` at the front of `buf` and turns its verdict into ours: a
/// section still incomplete when `buf` holds more than `max_bytes` is too large.
fn parse_window<'b>(
    buf: &'b [u8],
    max_bytes: usize,
    parse: impl FnOnce(&'b [u8]) -> httparse::Result<usize>,
) -> Result<Option<usize>, SectionError> {
    let window = buf.get(..max_bytes).unwrap_or(buf);
    match parse(window) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) if buf.len() > max_bytes => Err(SectionError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(SectionError::TooManyFields),
        Err(why) => Err(SectionError::Malformed(why)),
    }
}

/// Copies what `httparse` found out of the buffer.
fn head_of(request: &httparse::Request<'_, '_>) -> RequestHead {
    let target = request.path.unwrap_or_default();
    let (path, query) = split_target(target);
    RequestHead {
        method: request.method.unwrap_or_default().to_owned(),
        target: target.to_owned(),
        path: path.to_owned(),
        query: query.map(str::to_owned),
        minor_version: request.version.unwrap_or_default(),
        headers: request
            .headers
            .iter()
            .map(|field| {
                let value = String::from_utf8_lossy(field.value);
                (field.name.to_owned(), trim_ows(&value).to_owned())
            })
            .collect(),
    }
}

/// The path and query of a request-target. RFC 9112 §3.2.2: "A server MUST accept the
/// absolute-form in requests" (`http://host/path?query`, which clients send to proxies); its scheme
/// and authority are not part of the path.
fn split_target(target: &str) -> (&str, Option<&str>) {
    let (before_query, query) = match target.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (target, None),
    };
    let path = match before_query.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            rest.find('/').and_then(|at| rest.get(at..)).unwrap_or("/")
        }
        _ => before_query,
    };
    (path, query)
}

/// How far a growing buffer has been searched for the empty line that ends a field section. Each
/// byte is looked at once (plus the two before it, for a line end split across reads), so a
/// section that arrives a byte at a time costs linear time, and it is parsed only when it may be
/// complete.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SectionScan {
    searched: usize,
}

impl SectionScan {
    /// Whether the section at the front of `buf` is worth parsing: its empty line may have arrived,
    /// or `buf` holds more than `max_bytes` and a verdict is due either way.
    pub(crate) fn worth_parsing(&mut self, buf: &[u8], max_bytes: usize) -> bool {
        if buf.len() > max_bytes {
            return true;
        }
        let from = self.searched.saturating_sub(2);
        self.searched = buf.len();
        // An empty line is a line end right at the start (a section with no fields, as trailers
        // may be), or a line end directly after another one. RFC 9112 §2.2 lets a line end be a
        // bare LF, which httparse accepts, so both forms count.
        (from == 0 && (buf.starts_with(b"\n") || buf.starts_with(b"\r\n")))
            || buf.get(from..).is_some_and(|tail| {
                tail.windows(2).any(|pair| pair == b"\n\n")
                    || tail.windows(3).any(|triple| triple == b"\n\r\n")
            })
    }
}

/// Bytes of empty lines at the front of `buf` (RFC 9112 §2.2: a server "SHOULD ignore at least one
/// empty line (CRLF) received prior to the request-line"; we ignore them all). A CR whose LF has
/// not arrived yet is not counted.
pub(crate) fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut len = 0;
    loop {
        match buf.get(len..) {
            Some([b'\n', ..]) => len += 1,
            Some([b'\r', b'\n', ..]) => len += 2,
            _ => return len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_head_bytes: 256,
        max_headers: 4,
        max_body_bytes: 1024,
    };

    fn parse(text: &str) -> RequestHead {
        parse_head(text.as_bytes(), &LIMITS).unwrap().unwrap().0
    }

    #[test]
    fn head_is_split_into_its_parts() {
        let head = parse("GET /chat/room?name=lobby&x HTTP/1.1\r\nHost: a\r\nX-Pad:  \t v \t\r\n\r\n");
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/chat/room?name=lobby&x");
        assert_eq!(head.path, "/chat/room");
        assert_eq!(head.query.as_deref(), Some("name=lobby&x"));
        assert_eq!(head.minor_version, 1);
        assert_eq!(
            head.headers,
            [("Host".into(), "a".into()), ("X-Pad".into(), "v".into())]
        );
        assert_eq!(head.query_param("name"), Some("lobby"));
        assert_eq!(head.query_param("x"), Some(""));
        assert_eq!(head.query_param("nam"), None);
    }

    #[test]
    fn absolute_form_target_has_the_same_path() {
        let table: &[(&str, &str, Option<&str>)] = &[
            ("/a/b?c=d", "/a/b", Some("c=d")),
            ("http://example.com/a/b?c=d", "/a/b", Some("c=d")),
            ("HTTPS://example.com:8443/a", "/a", None),
            ("http://example.com", "/", None),
            ("http://example.com?x", "/", Some("x")),
            ("*", "*", None),
        ];
        for (target, path, query) in table {
            let head = parse(&format!("OPTIONS {target} HTTP/1.1\r\nHost: a\r\n\r\n"));
            assert_eq!(
                (head.target.as_str(), head.path.as_str(), head.query.as_deref()),
                (*target, *path, *query)
            );
        }
    }

    #[test]
    fn field_names_are_case_insensitive_and_lists_span_lines() {
        let head = parse(
            "GET / HTTP/1.1\r\nConnection: keep-alive, , Upgrade\r\nCONNECTION: x-Other\r\nHost: a\r\n\r\n",
        );
        assert_eq!(head.header("connection"), Some("keep-alive, , Upgrade"));
        assert_eq!(head.header_values("Connection").count(), 2);
        assert_eq!(
            head.tokens("connection").collect::<Vec<_>>(),
            ["keep-alive", "Upgrade", "x-Other"]
        );
        assert!(head.has_token("Connection", "upgrade"));
        assert!(!head.has_token("Connection", "close"));
        assert_eq!(head.header("upgrade"), None);
    }

    #[test]
    fn head_is_incomplete_until_its_empty_line() {
        let text = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody";
        for cut in 0..text.len() - 4 {
            assert_eq!(parse_head(&text[..cut], &LIMITS), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse_head(text, &LIMITS).unwrap().unwrap().1, text.len() - 4);
    }

    #[test]
    fn head_longer_than_the_limit_is_431() {
        let text = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(LIMITS.max_head_bytes)
        );
        let error = parse_head(text.as_bytes(), &LIMITS).unwrap_err();
        assert_eq!(error, Error::HeadTooLarge { limit: 256 });
        assert_eq!(error.status().code(), 431);
        // Complete within the limit is fine, whatever follows it.
        let text = format!("GET / HTTP/1.1\r\n\r\n{}", "a".repeat(LIMITS.max_head_bytes));
        assert!(parse_head(text.as_bytes(), &LIMITS).unwrap().is_some());
    }

    #[test]
    fn more_fields_than_the_limit_is_431() {
        let mut text = String::from("GET / HTTP/1.1\r\n");
        for i in 0..LIMITS.max_headers {
            text.push_str(&format!("X-{i}: v\r\n"));
        }
        assert!(parse_head(format!("{text}\r\n").as_bytes(), &LIMITS).is_ok());
        let error = parse_head(format!("{text}X-Last: v\r\n\r\n").as_bytes(), &LIMITS).unwrap_err();
        assert_eq!(error, Error::TooManyHeaders { limit: 4 });
        assert_eq!(error.status().code(), 431);
    }

    #[test]
    fn malformed_heads_are_400_with_httparses_reason() {
        let table: &[(&str, httparse::Error)] = &[
            ("\x16\x03\x01\x02\x00 TLS\r\n\r\n", httparse::Error::Token),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", httparse::Error::HeaderName),
            (
                "GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
                httparse::Error::HeaderName,
            ),
            ("GET / HTTP/2.0\r\n\r\n", httparse::Error::Version),
            (
                "GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
                httparse::Error::HeaderValue,
            ),
        ];
        for (text, why) in table {
            let error = parse_head(text.as_bytes(), &LIMITS).unwrap_err();
            assert_eq!(error, Error::Malformed(*why), "{text:?}");
            assert_eq!(error.status().code(), 400);
        }
    }

    #[test]
    fn scan_finds_the_empty_line_however_the_bytes_arrive() {
        for text in [
            &b"GET / HTTP/1.1\r\nA: b\r\n\r\n"[..],
            b"GET / HTTP/1.1\nA: b\n\n",
            b"\r\n",
        ] {
            for cut in 0..text.len() {
                let mut scan = SectionScan::default();
                assert!(!scan.worth_parsing(&text[..cut], 100), "{text:?} cut at {cut}");
                assert!(scan.worth_parsing(text, 100), "{text:?} cut at {cut}");
            }
            // One byte at a time: only the last byte completes it.
            let mut scan = SectionScan::default();
            let verdicts: Vec<bool> = (1..=text.len())
                .map(|end| scan.worth_parsing(&text[..end], 100))
                .collect();
            assert_eq!(verdicts.iter().filter(|&&worth| worth).count(), 1, "{text:?}");
            assert_eq!(verdicts.last(), Some(&true));
        }
    }

    #[test]
    fn scan_asks_for_a_verdict_once_over_the_limit() {
        let mut scan = SectionScan::default();
        assert!(!scan.worth_parsing(b"GET / HTTP/1.1\r\nX: aaaa", 24));
        assert!(scan.worth_parsing(b"GET / HTTP/1.1\r\nX: aaaaaaaaaaa", 24));
    }

    #[test]
    fn leading_empty_lines_are_counted_whole() {
        assert_eq!(leading_empty_lines(b"\r\n\n\r\nGET"), 5);
        assert_eq!(leading_empty_lines(b"\r\n\r"), 2);
        assert_eq!(leading_empty_lines(b"GET"), 0);
    }
}
