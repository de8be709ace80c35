//! permessage-deflate, RFC 7692: agreeing on it in the opening handshake (§5, §7.1) and
//! compressing and decompressing messages (§7.2) — sans-IO.
//!
//! The client lists the extension in `Sec-WebSocket-Extensions`, possibly several times with
//! different parameters; the server accepts at most one of those offers by answering with the
//! parameters both ends then follow ([`negotiate`] on the server, [`accept_response`] on the
//! client). From then on a data message may be sent compressed: its first frame carries RSV1, the
//! "Per-Message Compressed" bit (§6), and the message's payload, all fragments together, is raw
//! DEFLATE (RFC 1951) ending in a sync flush whose last four bytes `00 00 ff ff` are left out
//! (§7.2.1). The receiver puts them back and inflates (§7.2.2). Control frames are never
//! compressed. [`crate::ws::protocol`] does the framing; this module does the rest.
//!
//! The algorithm comes from `flate2` on the `zlib-rs` backend, which honours raw-deflate window
//! sizes. Everything else is ours, with these choices:
//!
//! - **The server always asks `server_no_context_takeover`** (§7.1.1.1). A message it compresses
//!   then depends on nothing sent before, so one compressed frame can be shared by every recipient
//!   of a broadcast ([`crate::ws::protocol::SharedMessage`]), and a connection holds no compression
//!   state between messages.
//! - **We never take over our own context, in either role.** Context takeover is a sender's
//!   option, never its duty: a receiver that keeps its window decodes a message that does not
//!   refer back just as well. So compressors are not per connection at all: [`compress_shared`]
//!   keeps one per window size per thread and resets it after every message. Idle connections hold
//!   no zlib state, and a thread holds at most seven compressors (windows 9 to 15; zlib-rs takes
//!   about 370 KiB for one at window 15).
//! - **A decompressor exists only while a compressed message is being received**, unless the peer
//!   may refer back to earlier messages (it did not agree to `*_no_context_takeover`): then the
//!   window must survive between messages, and the decompressor is created on the first
//!   compressed message and kept.
//! - **Window size 8.** zlib refuses a raw window of 256 bytes, but its 512-byte window never
//!   reaches further back than 512 - 262 = 250 bytes (it keeps 262 bytes of look-ahead), so what a
//!   9-bit compressor writes is valid for an 8-bit window. We compress for a window of 8 with 9.
//!   The unit tests check every window we compress for (8 to 15) with a decoder that has exactly
//!   that many bytes of history.
//! - **Inflating keeps 32 KiB**, whatever window the peer agreed to: zlib-rs's inflater allocates
//!   the largest window in any case (so asking a peer for a smaller window would save no memory),
//!   and it does not check that the peer stayed within its window (a peer that reaches further
//!   back still decodes correctly, so nothing is at risk).
//! - **Decompression is bounded**: output is produced in steps of at most [`INFLATE_STEP`] bytes and
//!   checked against the message limit before it grows past it, so a decompression bomb costs at
//!   most the limit and then fails the connection with 1009.

use std::cell::RefCell;
use std::fmt;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's name (§7).
pub const EXTENSION_NAME: &str = "permessage-deflate";
/// §7.1.2: window sizes are given as their base-2 logarithm, "between 8 to 15, inclusive".
pub const MIN_WINDOW_BITS: u8 = 8;
/// §7.1.2: the largest window, 32 KiB; also the size used when no parameter limits it.
pub const MAX_WINDOW_BITS: u8 = 15;
/// The smallest raw-deflate window zlib accepts; see the module docs for how 8 is served by it.
const ZLIB_MIN_WINDOW_BITS: u8 = 9;
/// §7.2.1: the last four bytes of a sync flush (an empty stored block), which the sender leaves
/// out and the receiver appends back before inflating.
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// zlib's default level: a chat line costs a few microseconds, and a broadcast is compressed once.
const LEVEL: u32 = 6;
/// Most bytes one inflate step produces before its output is checked (limit, UTF-8): a bomb is
/// caught at most this far past the point where it went wrong.
pub const INFLATE_STEP: usize = 16 * 1024;
/// Messages shorter than this go out uncompressed. A chat event is 100-300 bytes of JSON, and
/// without context takeover a short message has few repeats to find: measured on this chat's
/// `message` events, 104 bytes compress to 87, 204 to 154, 254 to 184. Below 256 bytes that is a
/// few dozen bytes saved for a compressor run here and an inflater at the receiver; above it the
/// repeated keys and words start to pay.
pub const DEFAULT_THRESHOLD: usize = 256;

// ------------------------------------------------------------------------------------------
// The header: RFC 6455 §9.1 grammar
// ------------------------------------------------------------------------------------------

/// One element of a `Sec-WebSocket-Extensions` list: an extension and its parameters, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub name: String,
    pub params: Vec<Param>,
}

/// `name` or `name=value`; a quoted value is stored unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

impl Extension {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// A `Sec-WebSocket-Extensions` header, or a permessage-deflate element in it, that breaks a rule.
/// A server declines such an offer (it skips it: §7, the server "MUST decline"); a client fails the
/// connection (§5 and §7: the client "MUST _Fail the WebSocket Connection_").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionError {
    /// RFC 6455 §9.1: not the extension-list grammar; `at` is the byte offset in the header value.
    Syntax { at: usize, expected: &'static str },
    /// RFC 6455 §9.1: "the value after quoted-string unescaping MUST conform to the 'token' ABNF".
    QuotedValueNotToken(String),
    /// §7: a parameter permessage-deflate does not define ("an extension parameter not defined for
    /// use in an offer/a response").
    UnknownParam(String),
    /// §7: "an extension parameter with the same name appears more than once".
    DuplicateParam(String),
    /// §7.1.1: the `*_no_context_takeover` parameters have no value.
    UnexpectedValue(String),
    /// §7.1.2: a window size that is not a decimal 8-15 without leading zeros, or missing where
    /// one is required (`server_max_window_bits`, and `client_max_window_bits` in a response).
    InvalidWindowBits { param: String, value: Option<String> },
    /// RFC 6455 §9.1: the server answered with an extension the client did not offer.
    Unrequested(String),
    /// §7: the server answered with permessage-deflate more than once.
    AcceptedTwice,
}

impl fmt::Display for ExtensionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax { at, expected } => write!(f, "extension header: expected {expected} at byte {at}"),
            Self::QuotedValueNotToken(value) => write!(f, "quoted parameter value {value:?} is not a token"),
            Self::UnknownParam(name) => write!(f, "unknown permessage-deflate parameter {name:?}"),
            Self::DuplicateParam(name) => write!(f, "parameter {name:?} appears more than once"),
            Self::UnexpectedValue(name) => write!(f, "parameter {name:?} takes no value"),
            Self::InvalidWindowBits {
                param,
                value: Some(value),
            } => {
                write!(f, "{param}={value:?} is not a window size 8-15")
            }
            Self::InvalidWindowBits { param, value: None } => write!(f, "{param} needs a value"),
            Self::Unrequested(name) => write!(f, "server accepted extension {name:?}, which was not offered"),
            Self::AcceptedTwice => f.write_str("server accepted permessage-deflate twice"),
        }
    }
}

impl std::error::Error for ExtensionError {}

/// Parses every value of the `Sec-WebSocket-Extensions` header, in order: repeated header lines
/// make one list (RFC 9110 §5.3), so the elements of all of them are returned together. Strict:
/// any byte outside the grammar is an error. Empty list elements (`a, , b`) are skipped, as RFC
/// 9110 §5.6.1 asks of recipients.
///
/// ```text
/// extension-list = 1#extension
/// extension      = extension-token *( ";" extension-param )
/// extension-param = token [ "=" (token | quoted-string) ]
/// ```
pub fn parse_extensions<S: AsRef<str>>(values: &[S]) -> Result<Vec<Extension>, ExtensionError> {
    let mut extensions = Vec::new();
    for value in values {
        Cursor::new(value.as_ref()).list(&mut extensions)?;
    }
    Ok(extensions)
}

/// A position in one header value.
struct Cursor<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text: text.as_bytes(),
            at: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    /// RFC 9110 §5.6.3: optional whitespace is spaces and tabs.
    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn error(&self, expected: &'static str) -> ExtensionError {
        ExtensionError::Syntax {
            at: self.at,
            expected,
        }
    }

    fn list(&mut self, out: &mut Vec<Extension>) -> Result<(), ExtensionError> {
        loop {
            self.skip_ows();
            match self.peek() {
                None => return Ok(()),
                Some(b',') => self.at += 1,
                Some(_) => {
                    out.push(self.extension()?);
                    match self.peek() {
                        None => return Ok(()),
                        Some(b',') => self.at += 1,
                        Some(_) => return Err(self.error("',' or ';'")),
                    }
                }
            }
        }
    }

    /// An extension and its parameters; stops before the `,` that ends it (or at the end).
    fn extension(&mut self) -> Result<Extension, ExtensionError> {
        let name = self.token("an extension name")?;
        let mut params = Vec::new();
        loop {
            self.skip_ows();
            if self.peek() != Some(b';') {
                return Ok(Extension { name, params });
            }
            self.at += 1;
            self.skip_ows();
            let name = self.token("a parameter name")?;
            self.skip_ows();
            let value = if self.peek() == Some(b'=') {
                self.at += 1;
                self.skip_ows();
                Some(if self.peek() == Some(b'"') {
                    self.quoted()?
                } else {
                    self.token("a parameter value")?
                })
            } else {
                None
            };
            params.push(Param { name, value });
        }
    }

    fn token(&mut self, expected: &'static str) -> Result<String, ExtensionError> {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        if self.at == start {
            return Err(self.error(expected));
        }
        Ok(String::from_utf8_lossy(&self.text[start..self.at]).into_owned())
    }

    /// RFC 9110 §5.6.4 quoted-string, unescaped; RFC 6455 §9.1 then wants a token.
    fn quoted(&mut self) -> Result<String, ExtensionError> {
        self.at += 1;
        let mut value = Vec::new();
        loop {
            match self.peek() {
                Some(b'"') => break,
                Some(b'\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some(byte) if is_qdtext(byte) || byte == b'"' || byte == b'\\' => value.push(byte),
                        _ => return Err(self.error("an escaped character")),
                    }
                }
                Some(byte) if is_qdtext(byte) => value.push(byte),
                _ => return Err(self.error("a closing '\"'")),
            }
            self.at += 1;
        }
        self.at += 1;
        if value.is_empty() || !value.iter().copied().all(is_tchar) {
            return Err(ExtensionError::QuotedValueNotToken(
                String::from_utf8_lossy(&value).into_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&value).into_owned())
    }
}

/// RFC 9110 §5.6.2 tchar.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// RFC 9110 §5.6.4 qdtext, limited to ASCII (obs-text is not a token anyway).
fn is_qdtext(byte: u8) -> bool {
    matches!(byte, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e)
}

// ------------------------------------------------------------------------------------------
// Negotiation: RFC 7692 §7.1
// ------------------------------------------------------------------------------------------

/// What the handshake agreed (§7.1), the same on both ends. A window size is 8-15 (§7.1.2); 15
/// when no parameter limited it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// §7.1.1.1: the server compresses each message on its own.
    pub server_no_context_takeover: bool,
    /// §7.1.1.2: the client compresses each message on its own.
    pub client_no_context_takeover: bool,
    /// §7.1.2.1: the largest window the server compresses with.
    pub server_max_window_bits: u8,
    /// §7.1.2.2: the largest window the client compresses with.
    pub client_max_window_bits: u8,
}

/// How one direction of a connection is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Direction {
    /// The largest window the sender may use (and the receiver must keep).
    pub max_window_bits: u8,
    /// The sender compresses each message on its own, so the receiver need not keep a window.
    pub no_context_takeover: bool,
}

impl DeflateParams {
    /// What the server sends: its compressor's limits, the client's decompressor's needs.
    pub fn server_to_client(&self) -> Direction {
        Direction {
            max_window_bits: self.server_max_window_bits,
            no_context_takeover: self.server_no_context_takeover,
        }
    }

    /// What the client sends.
    pub fn client_to_server(&self) -> Direction {
        Direction {
            max_window_bits: self.client_max_window_bits,
            no_context_takeover: self.client_no_context_takeover,
        }
    }
}

/// The server's side of the choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflatePolicy {
    /// The largest window we let a client compress with, asked for (as `client_max_window_bits`)
    /// only from a client that offered that parameter (§7.1.2.2), and only when it is smaller than
    /// what the client would use anyway. Default 15: zlib-rs's inflater allocates a 32 KiB window
    /// whatever the size, so a smaller one would cost compression and save no memory.
    pub client_max_window_bits: u8,
}

impl Default for DeflatePolicy {
    fn default() -> Self {
        Self {
            client_max_window_bits: MAX_WINDOW_BITS,
        }
    }
}

/// The parameters one permessage-deflate element carries, validated one by one (§7.1) but not yet
/// weighed as an offer or a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value, which only an offer may do.
    client_max_window_bits: Option<Option<u8>>,
}

impl Params {
    fn parse(params: &[Param]) -> Result<Self, ExtensionError> {
        let mut parsed = Self::default();
        for (i, param) in params.iter().enumerate() {
            let name = param.name.to_ascii_lowercase();
            if params[..i]
                .iter()
                .any(|earlier| earlier.name.eq_ignore_ascii_case(&name))
            {
                return Err(ExtensionError::DuplicateParam(name));
            }
            let value = param.value.as_deref();
            match name.as_str() {
                "server_no_context_takeover" | "client_no_context_takeover" => {
                    if value.is_some() {
                        return Err(ExtensionError::UnexpectedValue(name));
                    }
                    if name.starts_with("server") {
                        parsed.server_no_context_takeover = true;
                    } else {
                        parsed.client_no_context_takeover = true;
                    }
                }
                "server_max_window_bits" => {
                    parsed.server_max_window_bits = Some(window_bits(&name, value)?);
                }
                "client_max_window_bits" => {
                    parsed.client_max_window_bits = Some(match value {
                        None => None,
                        Some(_) => Some(window_bits(&name, value)?),
                    });
                }
                _ => return Err(ExtensionError::UnknownParam(param.name.clone())),
            }
        }
        Ok(parsed)
    }
}

/// §7.1.2: "a decimal integer value without leading zeroes between 8 to 15, inclusive".
fn window_bits(param: &str, value: Option<&str>) -> Result<u8, ExtensionError> {
    let bits = match value {
        Some("8") => 8,
        Some("9") => 9,
        Some("10") => 10,
        Some("11") => 11,
        Some("12") => 12,
        Some("13") => 13,
        Some("14") => 14,
        Some("15") => 15,
        _ => {
            return Err(ExtensionError::InvalidWindowBits {
                param: param.to_owned(),
                value: value.map(str::to_owned),
            });
        }
    };
    Ok(bits)
}

/// The server's negotiation: given every value of the request's `Sec-WebSocket-Extensions` and
/// our policy, the parameters to use and the value of the response's `Sec-WebSocket-Extensions`,
/// or `None` to go without compression.
///
/// The first acceptable permessage-deflate offer wins (§5: a client lists its offers in its order
/// of preference). An offer with an unknown, repeated or malformed parameter is skipped, never an
/// error (§7: the server "MUST decline" it); so is the whole header when it breaks the list
/// grammar, since no offer in it can be trusted. The answer follows §7.1:
/// - `server_no_context_takeover`, always (our policy, see the module docs);
/// - `server_max_window_bits=N` exactly when the client asked for it, with its value;
/// - `client_no_context_takeover` exactly when the client offered it (forcing it on a client that
///   did not breaks some Safari versions);
/// - `client_max_window_bits=N` only if the client offered that parameter and the policy wants a
///   smaller window than the client would use.
///
/// The server wiring calls it with the request's header values and, on `Some((params, value))`,
/// adds `Sec-WebSocket-Extensions: {value}` to its 101 response and builds the connection with
/// [`crate::ws::protocol::Connection::with_deflate`].
pub fn negotiate<S: AsRef<str>>(
    header_values: &[S],
    policy: &DeflatePolicy,
) -> Option<(DeflateParams, String)> {
    parse_extensions(header_values)
        .ok()?
        .iter()
        .filter(|extension| extension.is(EXTENSION_NAME))
        .find_map(|offer| accept_offer(offer, policy))
}

fn accept_offer(offer: &Extension, policy: &DeflatePolicy) -> Option<(DeflateParams, String)> {
    let offered = Params::parse(&offer.params).ok()?;
    let mut response = format!("{EXTENSION_NAME}; server_no_context_takeover");
    if offered.client_no_context_takeover {
        response.push_str("; client_no_context_takeover");
    }
    if let Some(bits) = offered.server_max_window_bits {
        response.push_str(&format!("; server_max_window_bits={bits}"));
    }
    let mut client_max_window_bits = MAX_WINDOW_BITS;
    if let Some(hint) = offered.client_max_window_bits {
        // §7.1.2.2: with a value, the client already promised to stay within it.
        let promised = hint.unwrap_or(MAX_WINDOW_BITS);
        client_max_window_bits = promised.min(policy.client_max_window_bits);
        if client_max_window_bits < promised {
            response.push_str(&format!("; client_max_window_bits={client_max_window_bits}"));
        }
    }
    let params = DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: offered.client_no_context_takeover,
        server_max_window_bits: offered.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS),
        client_max_window_bits,
    };
    Some((params, response))
}

/// What our client offers: permessage-deflate, letting the server limit our window (§7.1.2.2).
/// Nothing is asked of the server, so any server that speaks the extension accepts it.
pub const CLIENT_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The client's check of the server's answer to [`CLIENT_OFFER`], given every value of the
/// response's `Sec-WebSocket-Extensions`: `Ok(None)` when the server declined, the agreed
/// parameters when it accepted. Any valid answer is accepted, including the ones that limit us
/// (`client_no_context_takeover`, `client_max_window_bits=8`). An answer we cannot parse or did
/// not offer fails the connection (§5, §7).
pub fn accept_response<S: AsRef<str>>(header_values: &[S]) -> Result<Option<DeflateParams>, ExtensionError> {
    let mut accepted = None;
    for extension in parse_extensions(header_values)? {
        if !extension.is(EXTENSION_NAME) {
            return Err(ExtensionError::Unrequested(extension.name));
        }
        if accepted.is_some() {
            return Err(ExtensionError::AcceptedTwice);
        }
        let answer = Params::parse(&extension.params)?;
        let client_max_window_bits = match answer.client_max_window_bits {
            None => MAX_WINDOW_BITS,
            Some(Some(bits)) => bits,
            // §7.1.2.2: in a response the parameter "MUST have a value".
            Some(None) => {
                return Err(ExtensionError::InvalidWindowBits {
                    param: "client_max_window_bits".into(),
                    value: None,
                });
            }
        };
        accepted = Some(DeflateParams {
            server_no_context_takeover: answer.server_no_context_takeover,
            client_no_context_takeover: answer.client_no_context_takeover,
            server_max_window_bits: answer.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS),
            client_max_window_bits,
        });
    }
    Ok(accepted)
}

// ------------------------------------------------------------------------------------------
// Compression: RFC 7692 §7.2.1
// ------------------------------------------------------------------------------------------

/// zlib failed where it cannot fail on valid arguments. The caller sends the message uncompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressError;

impl fmt::Display for CompressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deflate failed")
    }
}

impl std::error::Error for CompressError {}

/// The window zlib is asked for when the agreement says `bits` (8 is served by 9: module docs).
fn zlib_window_bits(bits: u8) -> u8 {
    bits.clamp(ZLIB_MIN_WINDOW_BITS, MAX_WINDOW_BITS)
}

/// A raw-deflate compressor that turns one message at a time into a §7.2.1 payload.
pub struct Compressor {
    deflate: Compress,
    context_takeover: bool,
}

impl fmt::Debug for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compressor")
            .field("context_takeover", &self.context_takeover)
            .finish_non_exhaustive()
    }
}

impl Compressor {
    /// A compressor whose back-references stay within a window of `2^window_bits` bytes. With
    /// `context_takeover` a message may refer to earlier ones (§7.1.1); without it each message is
    /// compressed on its own.
    pub fn new(window_bits: u8, context_takeover: bool) -> Self {
        Self {
            deflate: Compress::new_with_window_bits(
                Compression::new(LEVEL),
                false,
                zlib_window_bits(window_bits),
            ),
            context_takeover,
        }
    }

    /// Appends the compressed payload of `message` to `out`: DEFLATE blocks ending in a sync
    /// flush, minus the flush's last four bytes (§7.2.1). An empty message becomes the one byte
    /// `00` (§7.2.3.6).
    pub fn compress(&mut self, message: &[u8], out: &mut Vec<u8>) -> Result<(), CompressError> {
        let start = out.len();
        let result = self.deflate_sync(message, out);
        if !self.context_takeover {
            self.deflate.reset();
        }
        result?;
        if !out[start..].ends_with(&TAIL) {
            out.truncate(start);
            return Err(CompressError);
        }
        out.truncate(out.len() - TAIL.len());
        Ok(())
    }

    fn deflate_sync(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressError> {
        // Room for the usual case at once: deflate rarely grows data by more than a few bytes.
        out.reserve(input.len() + 64);
        loop {
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, out, FlushCompress::Sync)
                .map_err(|_| CompressError)?;
            let consumed = usize::try_from(self.deflate.total_in() - before).map_err(|_| CompressError)?;
            input = input.get(consumed..).ok_or(CompressError)?;
            // zlib: the flush is complete when it returns with output space left over.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
            out.reserve(input.len().max(1024));
        }
    }
}

thread_local! {
    /// One compressor per zlib window size (9-15), made on first use, reset after every message.
    static SHARED: RefCell<[Option<Compressor>; 7]> = const { RefCell::new([None, None, None, None, None, None, None]) };
}

/// Compresses one message for a peer whose window is `2^window_bits` bytes, without context
/// takeover, with this thread's compressor for that window (see the module docs).
pub fn compress_shared(window_bits: u8, message: &[u8], out: &mut Vec<u8>) -> Result<(), CompressError> {
    let bits = zlib_window_bits(window_bits);
    SHARED.with(|shared| {
        let mut shared = shared.borrow_mut();
        let slot = shared
            .get_mut(usize::from(bits - ZLIB_MIN_WINDOW_BITS))
            .ok_or(CompressError)?;
        slot.get_or_insert_with(|| Compressor::new(bits, false))
            .compress(message, out)
    })
}

// ------------------------------------------------------------------------------------------
// Decompression: RFC 7692 §7.2.2
// ------------------------------------------------------------------------------------------

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// §7.2.2: the payload is not valid DEFLATE data.
    Corrupt,
    /// The inflated message would grow past `limit` bytes.
    TooBig { limit: usize },
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Corrupt => f.write_str("compressed data is not valid DEFLATE"),
            Self::TooBig { limit } => write!(f, "message inflates to more than {limit} bytes"),
        }
    }
}

impl std::error::Error for InflateError {}

/// A raw-deflate decompressor for the messages of one peer.
pub struct Decompressor {
    inflate: Decompress,
    /// The peer ended its DEFLATE stream with a final block (§7.2.3.4); the rest of the message
    /// is ignored and the next message starts a new stream.
    ended: bool,
}

impl fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decompressor")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Decompressor {
    /// A decompressor for a peer that refers back at most `2^window_bits` bytes (8 is read as 9;
    /// zlib-rs keeps 32 KiB of history in any case, see the module docs).
    pub fn new(window_bits: u8) -> Self {
        Self {
            inflate: Decompress::new_with_window_bits(false, zlib_window_bits(window_bits)),
            ended: false,
        }
    }

    /// Inflates the next piece of a message's payload, appending the output to `out` in steps of
    /// at most [`INFLATE_STEP`] bytes and handing each step's new bytes to `inspect` (which may
    /// stop the work with an error, e.g. at invalid UTF-8). `out` never grows past `limit`:
    /// output beyond it is [`InflateError::TooBig`].
    pub fn inflate<E: From<InflateError>>(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
        mut inspect: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        while !self.ended {
            let start = out.len();
            let room = INFLATE_STEP.min(limit.saturating_sub(start));
            let (consumed, produced, status) = if room == 0 {
                // At the limit: one more byte of output is one too many.
                let mut probe = [0u8; 1];
                let step = self.step(input, &mut probe);
                if step.1 > 0 {
                    return Err(InflateError::TooBig { limit }.into());
                }
                step
            } else {
                out.resize(start + room, 0);
                let step = self.step(input, &mut out[start..]);
                out.truncate(start + step.1);
                step
            };
            // What came out before corrupt data is inspected first: the first fault in the
            // stream is the one reported, however the input was cut.
            if produced > 0 {
                inspect(&out[start..])?;
            }
            self.ended = status? == Status::StreamEnd;
            input = input.get(consumed..).ok_or(InflateError::Corrupt)?;
            let output_full = room > 0 && produced == room;
            if input.is_empty() && !output_full {
                break;
            }
            if consumed == 0 && produced == 0 && !self.ended {
                // No progress with input left: zlib is stuck on data it will not take.
                return Err(InflateError::Corrupt.into());
            }
        }
        Ok(())
    }

    /// Ends a message: inflates the [`TAIL`] the sender left out (§7.2.2), with the same limit
    /// and inspection as [`Decompressor::inflate`]. A stream that ended with a final block starts
    /// afresh with the next message.
    pub fn finish<E: From<InflateError>>(
        &mut self,
        out: &mut Vec<u8>,
        limit: usize,
        inspect: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.inflate(&TAIL, out, limit, inspect)?;
        if std::mem::take(&mut self.ended) {
            self.inflate.reset(false);
        }
        Ok(())
    }

    /// One call into zlib: bytes consumed and bytes produced (also when it then ran into corrupt
    /// data), and the status.
    fn step(&mut self, input: &[u8], output: &mut [u8]) -> (usize, usize, Result<Status, InflateError>) {
        let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
        let status = self
            .inflate
            .decompress(input, output, FlushDecompress::None)
            .map_err(|_| InflateError::Corrupt);
        // zlib never counts more than the slices hold; the `min`s only spare us an unwrap.
        let consumed =
            usize::try_from(self.inflate.total_in() - in_before).map_or(input.len(), |n| n.min(input.len()));
        let produced =
            usize::try_from(self.inflate.total_out() - out_before).map_or(0, |n| n.min(output.len()));
        (consumed, produced, status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compresses `message` on its own, as every message we send is.
    fn compress(window_bits: u8, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        compress_shared(window_bits, message, &mut out).unwrap();
        out
    }

    /// Inflates one message's payload given in `pieces`, with no limit to speak of.
    fn inflate(decompressor: &mut Decompressor, pieces: &[&[u8]]) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        for piece in pieces {
            decompressor.inflate(piece, &mut out, usize::MAX, |_| Ok::<(), InflateError>(()))?;
        }
        decompressor.finish(&mut out, usize::MAX, |_| Ok::<(), InflateError>(()))?;
        Ok(out)
    }

    fn inflate_one(window_bits: u8, payload: &[u8]) -> Result<Vec<u8>, InflateError> {
        inflate(&mut Decompressor::new(window_bits), &[payload])
    }

    /// Inflates `payload` + [`TAIL`] with a window of exactly `2^window_bits` bytes (8 included):
    /// a back-reference further back than that is an error. zlib-rs cannot check this (its
    /// inflater keeps 32 KiB whatever it is told), so the check is [`checked_inflate`], a small
    /// RFC 1951 decoder of our own.
    fn inflate_strictly(window_bits: u8, payload: &[u8]) -> Result<Vec<u8>, String> {
        checked_inflate(&[payload, &TAIL[..]].concat(), 1 << window_bits)
    }

    /// About 17 KiB of words in which 700-byte passages come back 1-16 KiB after they first
    /// appeared: long back-references at every distance, which a small window must do without.
    fn far_repeats() -> Vec<u8> {
        let mut seed = 0x2545_f491u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as usize
        };
        let words: Vec<Vec<u8>> = (0..40)
            .map(|_| (0..1 + next() % 8).map(|_| b'a' + (next() % 26) as u8).collect())
            .collect();
        let passages: Vec<Vec<u8>> = (0..12)
            .map(|_| {
                let mut passage = Vec::new();
                while passage.len() < 700 {
                    passage.extend_from_slice(&words[next() % words.len()]);
                    passage.push(b' ');
                }
                passage
            })
            .collect();
        let order = [
            0, 1, 2, 0, 3, 4, 1, 5, 6, 7, 2, 8, 9, 10, 11, 3, 4, 5, 6, 7, 8, 9, 10, 11,
        ];
        order.iter().flat_map(|&i| passages[i].iter().copied()).collect()
    }

    // RFC 6455 §9.1: the header grammar

    fn ext(name: &str, params: &[(&str, Option<&str>)]) -> Extension {
        Extension {
            name: name.into(),
            params: params
                .iter()
                .map(|(name, value)| Param {
                    name: (*name).into(),
                    value: value.map(str::to_owned),
                })
                .collect(),
        }
    }

    #[test]
    fn extension_list_grammar_table() {
        let deflate = |params: &[(&str, Option<&str>)]| ext("permessage-deflate", params);
        let table: Vec<(Vec<&str>, Vec<Extension>)> = vec![
            (vec!["permessage-deflate"], vec![deflate(&[])]),
            (
                vec!["permessage-deflate; client_max_window_bits"],
                vec![deflate(&[("client_max_window_bits", None)])],
            ),
            (
                vec!["permessage-deflate;server_max_window_bits=10 ;  client_no_context_takeover"],
                vec![deflate(&[
                    ("server_max_window_bits", Some("10")),
                    ("client_no_context_takeover", None),
                ])],
            ),
            (
                vec![r#"permessage-deflate; server_max_window_bits="10""#],
                vec![deflate(&[("server_max_window_bits", Some("10"))])],
            ),
            (
                vec![r#"permessage-deflate; server_max_window_bits = "1\0""#],
                vec![deflate(&[("server_max_window_bits", Some("10"))])],
            ),
            (
                vec!["foo, permessage-deflate", "bar; baz=1"],
                vec![ext("foo", &[]), deflate(&[]), ext("bar", &[("baz", Some("1"))])],
            ),
            (vec![" , permessage-deflate ,, "], vec![deflate(&[])]),
            (vec![""], vec![]),
        ];
        for (values, expected) in table {
            assert_eq!(parse_extensions(&values), Ok(expected), "{values:?}");
        }
    }

    #[test]
    fn header_outside_the_grammar_is_an_error() {
        let table = [
            "permessage-deflate;",
            "permessage-deflate; =10",
            "permessage-deflate; a=",
            "permessage-deflate a",
            "permessage-deflate; a=1 2",
            "permessage-deflate; a=\"10",
            "permessage-deflate; a=\"1 0\"",
            "permessage-deflate; a=\"\"",
            "permessage-deflate; a=b;;",
            "permessage-deflate; a=\"b\\\"",
            "permessage-déflate",
            "; a",
        ];
        for value in table {
            assert!(parse_extensions(&[value]).is_err(), "{value:?}");
        }
    }

    // RFC 7692 §7.1: the server's negotiation

    #[test]
    fn server_answers_real_offers_table() {
        let base = "permessage-deflate; client_no_context_takeover; client_max_window_bits";
        // (offer, expected answer); `None`: the offer is declined.
        let table: Vec<(String, Option<&str>)> = vec![
            // Chrome, Edge.
            (
                "permessage-deflate; client_max_window_bits".into(),
                Some("permessage-deflate; server_no_context_takeover"),
            ),
            // Firefox, Safari.
            ("permessage-deflate".into(), Some("permessage-deflate; server_no_context_takeover")),
            // Old Safari: the pre-RFC extension.
            ("x-webkit-deflate-frame".into(), None),
            // Autobahn 12.* and 13.1.*: the default offer.
            (
                base.into(),
                Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
            ),
            // Autobahn 13.2.*.
            (
                format!("{base}; server_no_context_takeover"),
                Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
            ),
            // Autobahn 13.3.* and 13.4.*: a window of 8 is served by zlib's 9 (module docs).
            (
                format!("{base}; server_max_window_bits=8"),
                Some(
                    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                     server_max_window_bits=8",
                ),
            ),
            (
                format!("{base}; server_max_window_bits=15"),
                Some(
                    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                     server_max_window_bits=15",
                ),
            ),
            // Autobahn 13.7.*: three offers, the first acceptable one wins.
            (
                format!(
                    "{base}; server_no_context_takeover; server_max_window_bits=8, \
                     {base}; server_no_context_takeover, {base}"
                ),
                Some(
                    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                     server_max_window_bits=8",
                ),
            ),
            // RFC 7692 §7.1.3: a small server window, with a fallback.
            (
                "permessage-deflate; client_max_window_bits; server_max_window_bits=10, \
                 permessage-deflate; client_max_window_bits"
                    .into(),
                Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=10"),
            ),
            // A client's own window hint needs no answer.
            (
                "permessage-deflate; client_max_window_bits=10".into(),
                Some("permessage-deflate; server_no_context_takeover"),
            ),
            // Skipped offers, with a plain fallback after each.
            ("permessage-deflate; mux, permessage-deflate".into(), Some("permessage-deflate; server_no_context_takeover")),
            (
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover, permessage-deflate; \
                 client_max_window_bits=9"
                    .into(),
                Some("permessage-deflate; server_no_context_takeover"),
            ),
            ("permessage-deflate; server_max_window_bits".into(), None),
            ("permessage-deflate; server_max_window_bits=16".into(), None),
            ("permessage-deflate; server_max_window_bits=7".into(), None),
            ("permessage-deflate; server_max_window_bits=010".into(), None),
            ("permessage-deflate; client_max_window_bits=x".into(), None),
            ("permessage-deflate; client_no_context_takeover=1".into(), None),
            ("permessage-deflate; client_max_window_bits; client_max_window_bits=9".into(), None),
            // A header outside the grammar: nothing in it is trusted.
            ("permessage-deflate, permessage-deflate;".into(), None),
        ];
        for (offer, answer) in table {
            let negotiated = negotiate(&[offer.as_str()], &DeflatePolicy::default());
            assert_eq!(negotiated.map(|(_, value)| value).as_deref(), answer, "{offer}");
        }
    }

    #[test]
    fn negotiated_params_follow_the_answer() {
        let offer = "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_max_window_bits=10";
        let (params, _) = negotiate(&[offer], &DeflatePolicy::default()).unwrap();
        assert_eq!(
            params,
            DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: 10,
                client_max_window_bits: 15,
            }
        );
        let (params, _) = negotiate(
            &["permessage-deflate; client_max_window_bits=11"],
            &DeflatePolicy::default(),
        )
        .unwrap();
        assert_eq!(params.client_max_window_bits, 11, "the client's own promise");
        assert!(!params.client_no_context_takeover);
    }

    #[test]
    fn policy_limits_the_client_window_only_when_the_client_offered_the_parameter() {
        let policy = DeflatePolicy {
            client_max_window_bits: 12,
        };
        let (params, answer) = negotiate(&["permessage-deflate; client_max_window_bits"], &policy).unwrap();
        assert_eq!(
            answer,
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=12"
        );
        assert_eq!(params.client_max_window_bits, 12);
        let (params, answer) = negotiate(&["permessage-deflate"], &policy).unwrap();
        assert_eq!(answer, "permessage-deflate; server_no_context_takeover");
        assert_eq!(params.client_max_window_bits, 15);
    }

    #[test]
    fn offers_spread_over_repeated_header_lines_are_one_list() {
        let values = [
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_max_window_bits=9",
        ];
        let (params, _) = negotiate(&values, &DeflatePolicy::default()).unwrap();
        assert_eq!(params.server_max_window_bits, 9);
    }

    #[test]
    fn every_answer_we_give_is_one_our_client_accepts() {
        let offers = [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=8",
            "permessage-deflate; client_max_window_bits; server_no_context_takeover",
        ];
        // (An offered client_max_window_bits=N is the client's own promise, which the answer need
        // not repeat; our client never makes one.)
        for offer in offers {
            let (params, answer) = negotiate(&[offer], &DeflatePolicy::default()).unwrap();
            assert_eq!(accept_response(&[answer.as_str()]), Ok(Some(params)), "{offer}");
        }
    }

    // RFC 7692 §7.1: the client's check of the answer

    #[test]
    fn client_accepts_every_valid_answer() {
        let table = [
            ("", None),
            ("permessage-deflate", Some((false, false, 15, 15))),
            (
                "permessage-deflate; server_no_context_takeover",
                Some((true, false, 15, 15)),
            ),
            (
                "permessage-deflate; client_no_context_takeover",
                Some((false, true, 15, 15)),
            ),
            (
                "permessage-deflate; client_max_window_bits=9",
                Some((false, false, 15, 9)),
            ),
            (
                "permessage-deflate; client_max_window_bits=8",
                Some((false, false, 15, 8)),
            ),
            (
                "permessage-deflate; server_max_window_bits=8",
                Some((false, false, 8, 15)),
            ),
            (
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=12; client_max_window_bits=\"10\"",
                Some((true, true, 12, 10)),
            ),
        ];
        for (answer, expected) in table {
            let expected = expected.map(
                |(server_nct, client_nct, server_bits, client_bits)| DeflateParams {
                    server_no_context_takeover: server_nct,
                    client_no_context_takeover: client_nct,
                    server_max_window_bits: server_bits,
                    client_max_window_bits: client_bits,
                },
            );
            assert_eq!(accept_response(&[answer]), Ok(expected), "{answer}");
        }
    }

    #[test]
    fn client_fails_on_answers_it_did_not_offer_or_cannot_parse() {
        let table = [
            (
                "x-webkit-deflate-frame",
                ExtensionError::Unrequested("x-webkit-deflate-frame".into()),
            ),
            (
                "permessage-deflate, permessage-deflate",
                ExtensionError::AcceptedTwice,
            ),
            (
                "permessage-deflate; mux",
                ExtensionError::UnknownParam("mux".into()),
            ),
            (
                "permessage-deflate; client_max_window_bits",
                ExtensionError::InvalidWindowBits {
                    param: "client_max_window_bits".into(),
                    value: None,
                },
            ),
            (
                "permessage-deflate; server_max_window_bits=16",
                ExtensionError::InvalidWindowBits {
                    param: "server_max_window_bits".into(),
                    value: Some("16".into()),
                },
            ),
            (
                "permessage-deflate; server_no_context_takeover=yes",
                ExtensionError::UnexpectedValue("server_no_context_takeover".into()),
            ),
            (
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                ExtensionError::DuplicateParam("server_no_context_takeover".into()),
            ),
            (
                "permessage-deflate;",
                ExtensionError::Syntax {
                    at: 19,
                    expected: "a parameter name",
                },
            ),
        ];
        for (answer, error) in table {
            assert_eq!(accept_response(&[answer]), Err(error), "{answer}");
        }
    }

    #[test]
    fn the_client_offer_is_an_offer_servers_accept() {
        let (params, _) = negotiate(&[CLIENT_OFFER], &DeflatePolicy::default()).unwrap();
        assert!(params.server_no_context_takeover);
    }

    // RFC 7692 §7.2.3: the examples, byte for byte

    #[test]
    fn rfc_7_2_3_1_hello_in_one_compressed_block() {
        assert_eq!(compress(15, b"Hello"), [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        assert_eq!(
            inflate_one(15, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn rfc_7_2_3_1_hello_split_in_two_fragments() {
        let pieces: [&[u8]; 2] = [&[0xf2, 0x48, 0xcd], &[0xc9, 0xc9, 0x07, 0x00]];
        assert_eq!(inflate(&mut Decompressor::new(15), &pieces).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7_2_3_2_second_hello_refers_to_the_first_with_context_takeover() {
        let mut compressor = Compressor::new(15, true);
        let mut first = Vec::new();
        compressor.compress(b"Hello", &mut first).unwrap();
        let mut second = Vec::new();
        compressor.compress(b"Hello", &mut second).unwrap();
        assert_eq!(first, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        assert_eq!(second, [0xf2, 0x00, 0x11, 0x00, 0x00]);

        let mut decompressor = Decompressor::new(15);
        assert_eq!(inflate(&mut decompressor, &[&first]).unwrap(), b"Hello");
        assert_eq!(inflate(&mut decompressor, &[&second]).unwrap(), b"Hello");
        assert!(
            inflate_one(15, &second).is_err(),
            "without the first, the second means nothing"
        );
    }

    #[test]
    fn without_context_takeover_each_message_stands_alone() {
        let first = compress(15, b"Hello");
        let second = compress(15, b"Hello");
        assert_eq!(first, second);
        assert_eq!(inflate_one(15, &second).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7_2_3_3_block_with_no_compression() {
        let payload = [0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00];
        assert_eq!(inflate_one(15, &payload).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7_2_3_4_block_with_bfinal_set() {
        let payload = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        let mut decompressor = Decompressor::new(15);
        assert_eq!(inflate(&mut decompressor, &[&payload]).unwrap(), b"Hello");
        // The stream ended; the next message starts a new one.
        assert_eq!(inflate(&mut decompressor, &[&payload]).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7_2_3_5_two_blocks_in_one_message() {
        let payload = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(inflate_one(15, &payload).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7_2_3_6_empty_message_is_the_single_byte_00() {
        assert_eq!(compress(15, b""), [0x00]);
        assert_eq!(inflate_one(15, &[0x00]).unwrap(), b"");
    }

    // Windows

    #[test]
    fn our_compressor_stays_within_the_window_it_announced() {
        let text = far_repeats();
        for bits in MIN_WINDOW_BITS..=MAX_WINDOW_BITS {
            let compressed = compress(bits, &text);
            assert!(
                compressed.len() < text.len() / 2,
                "window {bits}: it does compress"
            );
            assert_eq!(
                inflate_strictly(bits, &compressed).unwrap(),
                text,
                "window {bits}"
            );
            // Twice: the shared compressor was reset, not left with a history.
            assert_eq!(compress(bits, &text), compressed, "window {bits}");
        }
    }

    #[test]
    fn the_window_check_catches_a_reference_too_far_back() {
        // What makes the test above able to fail: 32 KiB back-references into a 512-byte window.
        let text = far_repeats();
        let error = inflate_strictly(9, &compress(15, &text)).unwrap_err();
        assert!(error.contains("beyond the 512-byte window"), "{error}");
    }

    #[test]
    fn larger_windows_compress_better() {
        let text = far_repeats();
        assert!(compress(15, &text).len() < compress(9, &text).len());
    }

    // Decompression limits and streaming

    #[test]
    fn payload_is_the_sync_flush_without_its_last_four_bytes() {
        let message = b"Hello, Hello, Hello";
        let mut zlib = Compress::new_with_window_bits(Compression::new(LEVEL), false, 15);
        let mut flushed = Vec::with_capacity(100);
        zlib.compress_vec(message, &mut flushed, FlushCompress::Sync)
            .unwrap();
        assert!(flushed.ends_with(&TAIL));
        assert_eq!(compress(15, message), flushed[..flushed.len() - 4]);
    }

    #[test]
    fn the_tail_goes_back_once_at_the_end_of_the_message() {
        let compressed = compress(15, b"Hello, Hello, Hello");
        let mut decompressor = Decompressor::new(15);
        let mut out = Vec::new();
        decompressor
            .inflate(&compressed, &mut out, usize::MAX, |_| Ok::<(), InflateError>(()))
            .unwrap();
        decompressor
            .finish(&mut out, usize::MAX, |_| Ok::<(), InflateError>(()))
            .unwrap();
        assert_eq!(out, b"Hello, Hello, Hello");
        // Appended after a piece that ends inside a block (a frame, say), it would break the block.
        let (first, rest) = compressed.split_at(3);
        let mut decompressor = Decompressor::new(15);
        assert_ne!(
            inflate(&mut decompressor, &[first, &TAIL, rest]).as_deref(),
            Ok(&b"Hello, Hello, Hello"[..])
        );
    }

    #[test]
    fn any_split_of_the_payload_inflates_the_same() {
        let text = far_repeats();
        let compressed = compress(12, &text);
        for cut in (0..compressed.len()).step_by(97) {
            let (a, b) = compressed.split_at(cut);
            assert_eq!(
                inflate(&mut Decompressor::new(12), &[a, b]).unwrap(),
                text,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = compressed.chunks(1).collect();
        assert_eq!(inflate(&mut Decompressor::new(12), &bytes).unwrap(), text);
    }

    #[test]
    fn decompression_bomb_stops_at_the_limit() {
        let bomb = compress(15, &vec![0u8; 10 * 1024 * 1024]);
        assert!(bomb.len() < 16 * 1024, "{} bytes", bomb.len());
        let limit = 100_000;
        let mut out = Vec::new();
        let mut steps = Vec::new();
        let result = Decompressor::new(15).inflate(&bomb, &mut out, limit, |step| {
            steps.push(step.len());
            Ok::<(), InflateError>(())
        });
        assert_eq!(result, Err(InflateError::TooBig { limit }));
        assert_eq!(out.len(), limit, "filled to the limit, not past it");
        assert!(out.capacity() <= 2 * limit, "capacity {}", out.capacity());
        assert!(steps.iter().all(|&len| len <= INFLATE_STEP));
    }

    #[test]
    fn message_of_exactly_the_limit_inflates() {
        let message = vec![b'a'; 5000];
        let compressed = compress(15, &message);
        let mut out = Vec::new();
        let mut decompressor = Decompressor::new(15);
        decompressor
            .inflate(&compressed, &mut out, 5000, |_| Ok::<(), InflateError>(()))
            .unwrap();
        decompressor
            .finish(&mut out, 5000, |_| Ok::<(), InflateError>(()))
            .unwrap();
        assert_eq!(out, message);
        let mut out = Vec::new();
        let result =
            Decompressor::new(15).inflate(&compressed, &mut out, 4999, |_| Ok::<(), InflateError>(()));
        assert_eq!(result, Err(InflateError::TooBig { limit: 4999 }));
    }

    #[test]
    fn inspection_stops_inflating_at_its_first_error() {
        let message = vec![b'x'; 100_000];
        let compressed = compress(15, &message);
        let mut out = Vec::new();
        let result =
            Decompressor::new(15).inflate(&compressed, &mut out, usize::MAX, |_| Err(InflateError::Corrupt));
        assert_eq!(result, Err(InflateError::Corrupt));
        assert!(out.len() <= INFLATE_STEP, "stopped after the first step");
    }

    /// A DEFLATE decoder (RFC 1951 §3.2) for the tests alone, after zlib's `puff.c`: slow and
    /// small, and strict about one thing zlib-rs is not, the distance of back-references. Decodes
    /// blocks until the input ends at a block boundary (our payloads end in a sync flush, not a
    /// final block).
    fn checked_inflate(input: &[u8], window: usize) -> Result<Vec<u8>, String> {
        struct Bits<'a> {
            input: &'a [u8],
            bit: usize,
        }
        impl Bits<'_> {
            fn take(&mut self, count: u32) -> Result<usize, String> {
                let mut value = 0;
                for i in 0..count {
                    let byte = self.input.get(self.bit / 8).ok_or("input ends inside a block")?;
                    value |= usize::from(byte >> (self.bit % 8) & 1) << i;
                    self.bit += 1;
                }
                Ok(value)
            }
        }
        /// Canonical Huffman code: how many codes of each length, and the symbols in code order.
        struct Code {
            counts: [usize; 16],
            symbols: Vec<usize>,
        }
        impl Code {
            fn new(lengths: &[usize]) -> Self {
                let mut counts = [0; 16];
                lengths.iter().for_each(|&len| counts[len] += 1);
                counts[0] = 0;
                let mut symbols: Vec<usize> = (0..lengths.len()).filter(|&s| lengths[s] > 0).collect();
                symbols.sort_by_key(|&s| lengths[s]);
                Self { counts, symbols }
            }
            fn decode(&self, bits: &mut Bits) -> Result<usize, String> {
                let (mut code, mut first, mut index) = (0, 0, 0);
                for len in 1..16 {
                    code |= bits.take(1)?;
                    let count = self.counts[len];
                    if code < first + count {
                        return Ok(self.symbols[index + code - first]);
                    }
                    index += count;
                    first = (first + count) << 1;
                    code <<= 1;
                }
                Err("invalid Huffman code".into())
            }
        }
        const LEN_BASE: [usize; 29] = [
            3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
            163, 195, 227, 258,
        ];
        const LEN_EXTRA: [u32; 29] = [
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
        ];
        const DIST_BASE: [usize; 30] = [
            1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049,
            3073, 4097, 6145, 8193, 12289, 16385, 24577,
        ];
        const DIST_EXTRA: [u32; 30] = [
            0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13,
        ];
        const CODE_LENGTH_ORDER: [usize; 19] =
            [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

        let mut bits = Bits { input, bit: 0 };
        let mut out: Vec<u8> = Vec::new();
        while bits.bit < input.len() * 8 {
            let last = bits.take(1)?;
            let (literals, distances) = match bits.take(2)? {
                0 => {
                    bits.bit = bits.bit.div_ceil(8) * 8;
                    let len = bits.take(16)?;
                    if bits.take(16)? != !len & 0xffff {
                        return Err("stored length check".into());
                    }
                    for _ in 0..len {
                        out.push(bits.take(8)? as u8);
                    }
                    continue;
                }
                1 => {
                    let mut lengths = [8; 288];
                    lengths[144..256].fill(9);
                    lengths[256..280].fill(7);
                    (Code::new(&lengths), Code::new(&[5; 30]))
                }
                2 => {
                    let (nlen, ndist, ncode) = (bits.take(5)? + 257, bits.take(5)? + 1, bits.take(4)? + 4);
                    let mut code_lengths = [0; 19];
                    for &symbol in &CODE_LENGTH_ORDER[..ncode] {
                        code_lengths[symbol] = bits.take(3)?;
                    }
                    let code_lengths = Code::new(&code_lengths);
                    let mut lengths = Vec::new();
                    while lengths.len() < nlen + ndist {
                        match code_lengths.decode(&mut bits)? {
                            len @ 0..=15 => lengths.push(len),
                            16 => {
                                let previous = *lengths.last().ok_or("repeat with nothing before")?;
                                lengths.extend(std::iter::repeat_n(previous, 3 + bits.take(2)?));
                            }
                            17 => lengths.extend(std::iter::repeat_n(0, 3 + bits.take(3)?)),
                            _ => lengths.extend(std::iter::repeat_n(0, 11 + bits.take(7)?)),
                        }
                    }
                    (Code::new(&lengths[..nlen]), Code::new(&lengths[nlen..]))
                }
                _ => return Err("reserved block type".into()),
            };
            loop {
                let symbol = literals.decode(&mut bits)?;
                if symbol < 256 {
                    out.push(symbol as u8);
                    continue;
                }
                if symbol == 256 {
                    break;
                }
                let i = symbol - 257;
                let len = LEN_BASE[i] + bits.take(LEN_EXTRA[i])?;
                let d = distances.decode(&mut bits)?;
                let distance = DIST_BASE[d] + bits.take(DIST_EXTRA[d])?;
                if distance > window || distance > out.len() {
                    return Err(format!("distance {distance} beyond the {window}-byte window"));
                }
                for _ in 0..len {
                    out.push(out[out.len() - distance]);
                }
            }
            if last == 1 {
                break;
            }
        }
        Ok(out)
    }

    #[test]
    fn the_checking_decoder_agrees_with_the_rfc_examples() {
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate_strictly(15, &hello).unwrap(), b"Hello");
        let stored = [0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00];
        assert_eq!(inflate_strictly(15, &stored).unwrap(), b"Hello");
        // "HelloHello": the second "Hello" is 5 bytes back.
        let twice = compress(15, b"HelloHello");
        assert_eq!(inflate_strictly(15, &twice).unwrap(), b"HelloHello");
        assert!(
            inflate_strictly(2, &twice).is_err(),
            "a 4-byte window is too small for it"
        );
    }

    #[test]
    fn output_before_corrupt_data_is_inspected_first() {
        // Found by the fuzzer: text that goes bad, then data that is not DEFLATE. Whole or
        // byte by byte, the bad text is what is reported.
        let mut payload = compress(15, b"ok \xff and then");
        payload.truncate(payload.len() - 1);
        payload.extend_from_slice(&[0xff; 8]);
        use crate::ws::protocol::ProtocolError;
        let first_fault = |pieces: &[&[u8]]| {
            let mut out = Vec::new();
            let mut decompressor = Decompressor::new(15);
            let mut validator = crate::ws::utf8::Utf8Validator::new();
            for piece in pieces {
                decompressor.inflate(piece, &mut out, usize::MAX, |step| {
                    validator.feed(step).map_err(|_| ProtocolError::InvalidUtf8)
                })?;
            }
            Ok::<(), ProtocolError>(())
        };
        let bytes: Vec<&[u8]> = payload.chunks(1).collect();
        assert_eq!(first_fault(&[&payload]), Err(ProtocolError::InvalidUtf8));
        assert_eq!(first_fault(&bytes), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn garbage_is_corrupt_data() {
        assert_eq!(inflate_one(15, &[0xff, 0xff, 0xff]), Err(InflateError::Corrupt));
        // A stored block whose length check fails.
        assert_eq!(
            inflate_one(15, &[0x00, 0x05, 0x00, 0x00, 0x00]),
            Err(InflateError::Corrupt)
        );
    }
}
