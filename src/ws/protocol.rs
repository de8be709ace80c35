//! The connection state machine, RFC 6455 §5 (framing), §6 (sending and receiving data), §7
//! (closing) — sans-IO.
//!
//! A [`Connection`] is fed the bytes that arrived ([`Connection::receive`]) and the passage of time
//! ([`Connection::handle_timeout`]); it reports what the peer said as [`Event`]s and leaves what must
//! be sent in its [`Outbox`]. It never touches a socket or reads a clock, so every rule below is
//! unit-tested by feeding bytes, and the same code drives the server and (with [`Role::Client`]) the
//! test and benchmark clients.
//!
//! Input may be split at any byte: a header cut short is kept (at most 14 bytes), a payload cut
//! short is unmasked and validated as far as it goes. A message that fits in the bytes at hand is
//! delivered straight from them, unmasked in place; only a message spread over several reads is
//! copied into a buffer, which is released as soon as the message is delivered.
//!
//! States (§4.1 "OPEN", §7.1.3 "CLOSING", §7.1.4 "CLOSED"):
//!
//! ```text
//!            we send Close                      peer's Close arrives / close timeout
//!   Open ────────────────────► ClosingByUs ─────────────────────────────────────────► Closed
//!     │  peer's Close arrives: we answer it at once                                    ▲
//!     └────────────────────────────────────────────────────────────────────────────────┤
//!     │  the peer breaks a rule: we send Close with the rule's code ("Fail the          │
//!     └──────────────────────── WebSocket Connection", §7.1.7) ────────────────────────┘
//! ```
//!
//! With permessage-deflate (RFC 7692, negotiated in the handshake and handed over with
//! [`Connection::with_deflate`]) the extension claims RSV1, the "Per-Message Compressed" bit: it may
//! be set on the first frame of a data message only, and such a message is inflated as its pieces
//! arrive ([`crate::ws::deflate`]), with the limits and the UTF-8 check applied to the inflated
//! bytes. Without the extension every reserved bit still fails the connection, as §5.2 asks.
//!
//! There is no lasting "closing by peer" state: we answer a peer's Close in the same call that
//! receives it, so the handshake is complete as soon as the peer's Close is read. In `Closed` the
//! connection accepts no input and emits nothing; the transport flushes the outbox and closes TCP
//! (the server first, §7.1.1).

use std::cell::OnceCell;
use std::fmt;
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use crate::outbox::{Outbox, SharedBytes};
use crate::trace::{self, Direction, Preview};
use crate::ws::close::{self, CloseCode, CloseError};
use crate::ws::deflate::{self, Decompressor, DeflateParams, InflateError};
use crate::ws::frame::{self, FrameError, FrameHeader, OpCode};
use crate::ws::mask::apply_mask;
use crate::ws::utf8::Utf8Validator;

/// Which end of the connection we are. It decides the masking direction (§5.1, §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// The close handshake's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent Close and wait for the peer's, reading and discarding its data frames meanwhile.
    ClosingByUs,
    /// Nothing more is read or sent.
    Closed,
}

/// Size limits on what the peer may send. Each is checked against a frame's header, before any of
/// its payload is buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of one frame.
    pub max_frame_size: usize,
    /// Largest message, summed over its fragments.
    pub max_message_size: usize,
    /// Most frames one message may be split into.
    pub max_fragments: usize,
}

impl Default for Limits {
    /// Chat-sized: a chat line is a few hundred bytes and browsers never fragment what they send.
    fn default() -> Self {
        Self {
            max_frame_size: 64 * 1024,
            max_message_size: 64 * 1024,
            max_fragments: 128,
        }
    }
}

/// Timers a connection runs. Durations are measured on the `now` values the caller passes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Send a Ping this often (`None`: never).
    pub ping_interval: Option<Duration>,
    /// Close a connection that has sent nothing for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// After sending Close, wait this long for the peer's Close before giving up.
    pub close_timeout: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            ping_interval: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(90)),
            close_timeout: Duration::from_secs(5),
        }
    }
}

/// Everything a connection needs to know about its limits and timers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    pub limits: Limits,
    pub timeouts: Timeouts,
}

/// RSV1 as [`FrameHeader::rsv`] holds it: permessage-deflate's "Per-Message Compressed" bit
/// (RFC 7692 §6).
const RSV1: u8 = 0b100;

/// A permessage-deflate agreement, for [`Connection::with_deflate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// What the opening handshake agreed ([`deflate::negotiate`] or [`deflate::accept_response`]).
    pub params: DeflateParams,
    /// Messages of at least this many bytes are sent compressed, shorter ones as they are (RFC 7692
    /// §6: a sender chooses message by message).
    pub deflate_threshold: usize,
}

impl DeflateConfig {
    /// The agreement, with the default threshold ([`deflate::DEFAULT_THRESHOLD`]).
    pub fn new(params: DeflateParams) -> Self {
        Self {
            params,
            deflate_threshold: deflate::DEFAULT_THRESHOLD,
        }
    }
}

/// What the peer did. Payloads borrow the input (or the connection's message buffer) and live only
/// for the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete text message, valid UTF-8 (§5.6).
    Text(&'a str),
    /// A complete binary message.
    Binary(&'a [u8]),
    /// A Ping; its Pong is already queued (§5.5.2).
    Ping(&'a [u8]),
    /// A Pong (§5.5.3).
    Pong(&'a [u8]),
    /// The peer's Close, with its code and reason (`None`: it had no body, 1005). If we had not
    /// sent Close yet, the answer is already queued.
    Close(Option<(CloseCode, &'a str)>),
}

/// An [`Event`] that owns its payload, to keep it past the callback (tests, fuzzing, tools).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedEvent {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The close code as a number and the reason; `None` for a Close without a body.
    Close(Option<(u16, String)>),
}

impl From<Event<'_>> for OwnedEvent {
    fn from(event: Event<'_>) -> Self {
        match event {
            Event::Text(text) => Self::Text(text.to_owned()),
            Event::Binary(data) => Self::Binary(data.to_vec()),
            Event::Ping(data) => Self::Ping(data.to_vec()),
            Event::Pong(data) => Self::Pong(data.to_vec()),
            Event::Close(body) => Self::Close(body.map(|(code, reason)| (code.as_u16(), reason.to_owned()))),
        }
    }
}

/// A message to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// A rule of RFC 6455 the peer broke. Each maps to the close code we answer with in exactly one
/// place, [`ProtocolError::close_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// A header that breaks a wire-format rule.
    Frame(FrameError),
    /// §5.2: "RSV1, RSV2, RSV3: MUST be 0 unless an extension is negotiated".
    ReservedBits(u8),
    /// §5.1: "a client MUST mask all frames that it sends to the server".
    UnmaskedClientFrame,
    /// §5.1: "A server MUST NOT mask any frames that it sends to the client."
    MaskedServerFrame,
    /// §5.4: a continuation frame with no fragmented message to continue.
    UnexpectedContinuation,
    /// §5.4: a new data frame while a fragmented message is still open.
    ExpectedContinuation,
    /// §5.5.1: a Close frame with a malformed body.
    Close(CloseError),
    /// §8.1: text that is not UTF-8.
    InvalidUtf8,
    /// A frame larger than [`Limits::max_frame_size`].
    FrameTooBig { len: u64, max: usize },
    /// A message larger than [`Limits::max_message_size`].
    MessageTooBig { len: u64, max: usize },
    /// A message in more than [`Limits::max_fragments`] frames.
    TooManyFragments { max: usize },
    /// RFC 7692 §6: RSV1 on a control frame ("An endpoint MUST NOT set the 'Per-Message
    /// Compressed' bit of control frames").
    CompressedControlFrame,
    /// RFC 7692 §6: RSV1 on a continuation frame ("... and non-first fragments of a data message").
    CompressedContinuation,
    /// RFC 7692 §7.2.2: a compressed message that is not valid DEFLATE data.
    InvalidCompressedData,
    /// A compressed message that inflates to more than [`Limits::max_message_size`] (the limit
    /// is on what the message costs us, its inflated size).
    InflatedTooBig { max: usize },
}

impl ProtocolError {
    /// The status code of the Close frame that fails the connection (§7.4.1).
    pub fn close_code(self) -> CloseCode {
        match self {
            Self::Frame(_)
            | Self::ReservedBits(_)
            | Self::UnmaskedClientFrame
            | Self::MaskedServerFrame
            | Self::UnexpectedContinuation
            | Self::ExpectedContinuation
            | Self::CompressedControlFrame
            | Self::CompressedContinuation
            | Self::Close(CloseError::OneBytePayload | CloseError::InvalidCode(_)) => {
                CloseCode::ProtocolError
            }
            // Data that does not inflate is data inconsistent with its message, like bad UTF-8.
            Self::InvalidUtf8 | Self::InvalidCompressedData | Self::Close(CloseError::ReasonNotUtf8) => {
                CloseCode::InvalidPayload
            }
            Self::FrameTooBig { .. }
            | Self::MessageTooBig { .. }
            | Self::TooManyFragments { .. }
            | Self::InflatedTooBig { .. } => CloseCode::MessageTooBig,
        }
    }

    /// The RFC that states the rule: RFC 6455, or RFC 7692 for permessage-deflate's rules.
    pub fn rfc(self) -> &'static str {
        match self {
            Self::CompressedControlFrame | Self::CompressedContinuation | Self::InvalidCompressedData => {
                "RFC 7692"
            }
            _ => "RFC 6455",
        }
    }

    /// The section of [`ProtocolError::rfc`] that states the rule.
    pub fn rfc_section(self) -> &'static str {
        match self {
            Self::Frame(FrameError::ReservedOpcode(_) | FrameError::LengthHighBitSet) => "§5.2",
            Self::Frame(_) => "§5.5",
            Self::ReservedBits(_) => "§5.2",
            Self::UnmaskedClientFrame | Self::MaskedServerFrame => "§5.1",
            Self::UnexpectedContinuation | Self::ExpectedContinuation => "§5.4",
            Self::Close(_) => "§5.5.1",
            Self::InvalidUtf8 => "§8.1",
            Self::FrameTooBig { .. }
            | Self::MessageTooBig { .. }
            | Self::TooManyFragments { .. }
            | Self::InflatedTooBig { .. } => "§10.4",
            Self::CompressedControlFrame | Self::CompressedContinuation => "§6",
            Self::InvalidCompressedData => "§7.2.2",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Frame(error) => error.fmt(f),
            Self::ReservedBits(bits) => {
                write!(f, "reserved bits {bits:03b} set, not claimed by an extension")
            }
            Self::UnmaskedClientFrame => f.write_str("client frame is not masked"),
            Self::MaskedServerFrame => f.write_str("server frame is masked"),
            Self::UnexpectedContinuation => f.write_str("continuation frame without a message"),
            Self::ExpectedContinuation => f.write_str("new message inside a fragmented message"),
            Self::Close(error) => error.fmt(f),
            Self::InvalidUtf8 => f.write_str("text is not valid UTF-8"),
            Self::FrameTooBig { len, max } => write!(f, "frame of {len} bytes exceeds {max}"),
            Self::MessageTooBig { len, max } => write!(f, "message of {len} bytes exceeds {max}"),
            Self::TooManyFragments { max } => write!(f, "message in more than {max} fragments"),
            Self::CompressedControlFrame => f.write_str("compressed control frame"),
            Self::CompressedContinuation => f.write_str("RSV1 on a continuation frame"),
            Self::InvalidCompressedData => f.write_str("compressed message is not valid DEFLATE data"),
            Self::InflatedTooBig { max } => write!(f, "message inflates to more than {max} bytes"),
        }
    }
}

impl std::error::Error for ProtocolError {}

impl From<FrameError> for ProtocolError {
    fn from(error: FrameError) -> Self {
        Self::Frame(error)
    }
}

impl From<InflateError> for ProtocolError {
    fn from(error: InflateError) -> Self {
        match error {
            InflateError::Corrupt => Self::InvalidCompressedData,
            InflateError::TooBig { limit } => Self::InflatedTooBig { max: limit },
        }
    }
}

/// Why sending was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// §5.5.1: after sending a Close frame, "the endpoint MUST NOT send any more data frames".
    Closing,
    /// A client must mask every frame with a fresh key, so it cannot send bytes shared with others.
    SharedFrameFromClient,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closing => f.write_str("the connection is closing"),
            Self::SharedFrameFromClient => f.write_str("a client cannot send a shared frame"),
        }
    }
}

impl std::error::Error for SendError {}

/// Who ended the connection, and how, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseStatus {
    /// The code of the Close frame that ended the conversation (1005 if the peer's had none, 1006
    /// if the connection ended without one).
    pub code: CloseCode,
    pub reason: String,
    /// Whether the Close (or the failure) came from our side.
    pub by_us: bool,
    /// The rule the peer broke, when we failed the connection.
    pub error: Option<ProtocolError>,
}

/// An unmasked data frame encoded once, to be queued on many server connections.
#[derive(Debug, Clone)]
pub struct SharedFrame(SharedBytes);

impl SharedFrame {
    /// Encodes `message` as a single unmasked, final frame (§5.1: server frames are not masked).
    pub fn new(message: Message<'_>) -> Self {
        let (opcode, payload) = message.parts();
        let mut bytes = Vec::new();
        frame::encode_frame(&mut bytes, true, opcode, payload, None);
        Self(bytes.into())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A data message for many server connections, encoded the way each one needs it: plain, or
/// compressed for the window its client agreed to. Each encoding is made the first time a
/// connection asks for it, at most once, and then shared like a [`SharedFrame`]; one built for a
/// broadcast to clients that all negotiated permessage-deflate never makes the plain one. Sharing
/// a compressed frame is sound because a server never takes over compression context (see
/// [`crate::ws::deflate`]): the bytes depend on the message and the window alone.
///
/// Queue it with [`Sender::send_shared_message`].
#[derive(Debug)]
pub struct SharedMessage {
    message: OwnedMessage,
    plain: OnceCell<SharedFrame>,
    /// The compressed frame per window size 8-15; `None` inside if compression failed (the plain
    /// frame goes instead).
    compressed: [OnceCell<Option<SharedBytes>>; 8],
}

/// A [`Message`] that owns its payload.
#[derive(Debug)]
enum OwnedMessage {
    Text(Box<str>),
    Binary(Box<[u8]>),
}

impl SharedMessage {
    pub fn new(message: Message<'_>) -> Self {
        Self {
            message: match message {
                Message::Text(text) => OwnedMessage::Text(text.into()),
                Message::Binary(data) => OwnedMessage::Binary(data.into()),
            },
            plain: OnceCell::new(),
            compressed: Default::default(),
        }
    }

    /// The message itself.
    pub fn message(&self) -> Message<'_> {
        match &self.message {
            OwnedMessage::Text(text) => Message::Text(text),
            OwnedMessage::Binary(data) => Message::Binary(data),
        }
    }

    /// Length of the payload, before any compression.
    pub fn len(&self) -> usize {
        self.message().parts().1.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The uncompressed frame.
    pub fn plain(&self) -> &SharedFrame {
        self.plain.get_or_init(|| SharedFrame::new(self.message()))
    }

    /// The compressed frame (RSV1) for a client whose server window is `2^window_bits` bytes.
    fn compressed(&self, window_bits: u8) -> Option<&SharedBytes> {
        let bits = window_bits.clamp(deflate::MIN_WINDOW_BITS, deflate::MAX_WINDOW_BITS);
        self.compressed[usize::from(bits - deflate::MIN_WINDOW_BITS)]
            .get_or_init(|| {
                let (opcode, message) = self.message().parts();
                let mut payload = Vec::new();
                deflate::compress_shared(bits, message, &mut payload).ok()?;
                let mut bytes = Vec::new();
                let mut header = FrameHeader::new(true, opcode, None, payload.len());
                header.rsv = RSV1;
                encode(&mut bytes, &header, &payload);
                Some(bytes.into())
            })
            .as_ref()
    }
}

/// Appends a whole frame to `out`: `header`, reserved bits included, and `payload`, masked when
/// the header has a key.
fn encode(out: &mut Vec<u8>, header: &FrameHeader, payload: &[u8]) {
    let start = out.len();
    frame::encode_frame(out, header.fin, header.opcode, payload, header.mask);
    // encode_frame writes no reserved bits; an extension's go into bits 6..4 of the first byte.
    if let Some(first) = out.get_mut(start) {
        *first |= header.rsv << 4;
    }
}

impl<'a> Message<'a> {
    fn parts(self) -> (OpCode, &'a [u8]) {
        match self {
            Message::Text(text) => (OpCode::Text, text.as_bytes()),
            Message::Binary(data) => (OpCode::Binary, data),
        }
    }
}

/// Masking keys for a client: xorshift64* over a seed. §10.3 wants keys an intermediary cannot
/// predict; the seed should come from the OS (see [`random_seed`]). Only clients mask.
///
/// The state is never 0 (xorshift maps non-zero states to non-zero states), and saying so in the
/// type makes `Option<MaskKeys>` 8 bytes instead of 16: every connection carries one.
#[derive(Debug, Clone)]
struct MaskKeys(NonZeroU64);

impl MaskKeys {
    fn new(seed: u64) -> Self {
        Self(NonZeroU64::new(seed).unwrap_or(NonZeroU64::MIN))
    }

    fn next(&mut self) -> [u8; 4] {
        let mut state = self.0.get();
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        *self = Self::new(state);
        let value = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((value >> 32) as u32).to_ne_bytes()
    }
}

/// A seed from the standard library's per-process random hasher keys, which come from the OS.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x5eed);
    hasher.finish() | 1
}

/// The sending half: the outbox and the close handshake's state. Split from the receiving half so
/// that a callback can answer a message while the message still borrows the receive buffer.
#[derive(Debug)]
struct Tx {
    role: Role,
    state: State,
    outbox: Outbox,
    mask_keys: Option<MaskKeys>,
    close_timeout: Duration,
    close_deadline: Option<Instant>,
    /// Boxed: set only once the connection is closing, so open connections carry one pointer.
    status: Option<Box<CloseStatus>>,
    /// The connection's id in the wire trace, when it is traced.
    trace_id: Option<u64>,
}

/// How data messages are compressed on the way out. There is no compressor here: we never take
/// over context, so compressors are shared per thread ([`deflate::compress_shared`]). A copy
/// travels in each [`Sender`], taken from the extension's state in [`Rx`], so that the sending half
/// stays as small as it was.
#[derive(Debug, Clone, Copy)]
struct Compression {
    /// The largest window our direction may use (§7.1.2).
    window_bits: u8,
    threshold: usize,
}

impl Tx {
    fn mask(&mut self) -> Option<[u8; 4]> {
        self.mask_keys.as_mut().map(MaskKeys::next)
    }

    /// Queues a frame as it is: control frames, and data sent uncompressed.
    fn queue_frame(&mut self, opcode: OpCode, payload: &[u8]) {
        let header = FrameHeader::new(true, opcode, self.mask(), payload.len());
        self.queue(&header, payload, None);
    }

    /// Queues a data message, compressed (RSV1) when the extension is on and the message is at
    /// least the threshold long.
    fn queue_message(&mut self, opcode: OpCode, payload: &[u8], compression: Option<Compression>) {
        if let Some(compression) = compression
            && payload.len() >= compression.threshold
        {
            let mut compressed = Vec::new();
            if deflate::compress_shared(compression.window_bits, payload, &mut compressed).is_ok() {
                let mut header = FrameHeader::new(true, opcode, self.mask(), compressed.len());
                header.rsv = RSV1;
                self.queue(&header, &compressed, Some(payload));
                return;
            }
        }
        self.queue_frame(opcode, payload);
    }

    /// Traces and queues one frame; `inflated` is the message a compressed payload stands for.
    fn queue(&mut self, header: &FrameHeader, payload: &[u8], inflated: Option<&[u8]>) {
        if let Some(id) = self.trace_id {
            trace::line(id, &trace_out(header, payload, inflated));
        }
        self.outbox.append_with(|out| encode(out, header, payload));
    }

    /// Sends Close (once, §5.5.1) and moves to `next`.
    fn send_close(&mut self, payload: &[u8], next: State, now: Instant) {
        if self.state == State::Open {
            self.queue_frame(OpCode::Close, payload);
            if next == State::ClosingByUs {
                self.close_deadline = Some(now + self.close_timeout);
            }
            self.state = next;
        }
    }

    /// Starts the close handshake (§7.1.2).
    fn close(&mut self, code: CloseCode, reason: &str, now: Instant) {
        if self.state == State::Open {
            self.status = Some(Box::new(CloseStatus {
                code,
                reason: reason.to_owned(),
                by_us: true,
                error: None,
            }));
            self.send_close(
                &close::encode_close_payload(code, reason),
                State::ClosingByUs,
                now,
            );
        }
    }

    /// "Fail the WebSocket Connection" (§7.1.7): send Close with the rule's code if we still may,
    /// then stop reading. In `ClosingByUs` our Close is already out, so nothing more is sent.
    fn fail(&mut self, error: ProtocolError, now: Instant) {
        if self.state == State::Open {
            let reason = error.to_string();
            let payload = close::encode_close_payload(error.close_code(), &reason);
            self.status = Some(Box::new(CloseStatus {
                code: error.close_code(),
                reason,
                by_us: true,
                error: Some(error),
            }));
            self.send_close(&payload, State::Closed, now);
        }
        self.state = State::Closed;
    }

    /// The peer's Close arrived (§5.5.1): answer it with the same code unless we started the
    /// handshake, and the handshake is done.
    fn on_peer_close(&mut self, body: Option<(CloseCode, &str)>, payload: &[u8], now: Instant) {
        if self.state == State::Open {
            let echo = &payload[..payload.len().min(2)];
            self.status = Some(Box::new(CloseStatus {
                code: body.map_or(CloseCode::NoStatus, |(code, _)| code),
                reason: body.map_or(String::new(), |(_, reason)| reason.to_owned()),
                by_us: false,
                error: None,
            }));
            self.send_close(echo, State::Closed, now);
        }
        self.state = State::Closed;
    }
}

/// The trace line of a frame we send.
fn trace_out(header: &FrameHeader, payload: &[u8], inflated: Option<&[u8]>) -> String {
    fn preview(bytes: &[u8]) -> &[u8] {
        &bytes[..bytes.len().min(trace::PREVIEW_LEN)]
    }
    match inflated {
        Some(message) => {
            trace::format_compressed_frame(Direction::Out, header, message.len() as u64, preview(message))
        }
        None => trace::format_frame(Direction::Out, header, preview(payload)),
    }
}

/// A handle for sending on a connection, given to the event callback and returned by
/// [`Connection::sender`].
pub struct Sender<'a> {
    tx: &'a mut Tx,
    now: Instant,
    compression: Option<Compression>,
}

impl Sender<'_> {
    /// Queues a message as one final frame, compressed if permessage-deflate is on and the
    /// message reaches [`DeflateConfig::deflate_threshold`].
    pub fn send(&mut self, message: Message<'_>) -> Result<(), SendError> {
        self.check_open()?;
        let (opcode, payload) = message.parts();
        self.tx.queue_message(opcode, payload, self.compression);
        Ok(())
    }

    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.send(Message::Text(text))
    }

    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.send(Message::Binary(data))
    }

    /// Queues a frame encoded once for many connections, without copying it. It goes out as it
    /// is, uncompressed: [`Sender::send_shared_message`] picks the encoding per connection.
    pub fn send_shared(&mut self, frame: &SharedFrame) -> Result<(), SendError> {
        self.check_open()?;
        if self.tx.role == Role::Client {
            return Err(SendError::SharedFrameFromClient);
        }
        self.push_shared(&frame.0, None);
        Ok(())
    }

    /// Queues a message shared by many connections in the encoding this one negotiated: the
    /// compressed frame for its window when permessage-deflate is on and the message reaches the
    /// threshold, else the plain frame. Either is made at most once per message and shared. A
    /// client masks every frame with its own key, so it sends its own copy instead.
    pub fn send_shared_message(&mut self, message: &SharedMessage) -> Result<(), SendError> {
        self.check_open()?;
        if self.tx.role == Role::Client {
            return self.send(message.message());
        }
        if let Some(compression) = self.compression
            && message.len() >= compression.threshold
            && let Some(bytes) = message.compressed(compression.window_bits)
        {
            self.push_shared(bytes, Some(message.message().parts().1));
            return Ok(());
        }
        self.push_shared(&message.plain().0, None);
        Ok(())
    }

    /// Traces and queues a shared frame; `inflated` as in `Tx::queue`.
    fn push_shared(&mut self, bytes: &SharedBytes, inflated: Option<&[u8]>) {
        if let Some(id) = self.tx.trace_id
            && let Ok(Some((header, len))) = FrameHeader::parse(bytes)
        {
            trace::line(id, &trace_out(&header, &bytes[len..], inflated));
        }
        self.tx.outbox.push_shared(bytes.clone());
    }

    /// Sends a Ping (§5.5.2).
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.check_open()?;
        let payload = &payload[..payload.len().min(frame::MAX_CONTROL_PAYLOAD)];
        self.tx.queue_frame(OpCode::Ping, payload);
        Ok(())
    }

    /// Starts the close handshake with `code` and `reason` (cut to fit a control frame).
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        self.tx.close(code, reason, self.now);
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.tx.outbox.len()
    }

    fn check_open(&self) -> Result<(), SendError> {
        match self.tx.state {
            State::Open => Ok(()),
            _ => Err(SendError::Closing),
        }
    }
}

/// Where the parser is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum ReadState {
    /// Reading a header; `len` bytes of it are kept in `Rx::header`.
    Header { len: usize },
    /// Reading the payload of `header`, `remaining` bytes to go; `mask_offset` is the position in
    /// the masking key the next byte uses.
    Payload {
        header: FrameHeader,
        remaining: u64,
        mask_offset: usize,
    },
}

/// The receiving half: frame parser and message assembly.
#[derive(Debug)]
struct Rx {
    limits: Limits,
    read: ReadState,
    header: [u8; frame::MAX_HEADER_LEN],
    /// The data type of the message being assembled (`Text` or `Binary`), if one is open.
    message_kind: Option<OpCode>,
    /// Bytes of the open message that arrived in earlier reads.
    message: Vec<u8>,
    message_len: u64,
    fragments: usize,
    utf8: Utf8Validator,
    /// A control frame's payload cut across reads.
    control: Vec<u8>,
    /// The start of the current frame's payload, kept only while the connection is traced; for a
    /// compressed message, the start of what the frame inflated to.
    preview: Option<Box<Preview>>,
    /// How the peer compresses, when permessage-deflate was negotiated.
    deflate: Option<RxDeflate>,
    /// Data messages that arrive after our Close are still delivered.
    deliver_while_closing: bool,
}

/// permessage-deflate's state: the agreement, and the receiving side. It lives in [`Rx`] because
/// receiving is where the state is; sending needs only [`Compression`]. It is kept small and
/// inline, and the zlib state is boxed apart and exists only while it is needed, so that a
/// connection that negotiated the extension and is idle costs a few bytes more, not an allocation.
#[derive(Debug)]
struct RxDeflate {
    params: DeflateParams,
    /// The send threshold ([`DeflateConfig::deflate_threshold`], capped at 4 GiB).
    threshold: u32,
    /// The largest window our direction may use, and the peer's (§7.1.2).
    our_window_bits: u8,
    peer_window_bits: u8,
    /// The peer compresses each message on its own (it agreed to `*_no_context_takeover`), so
    /// the decompressor need not outlive a message.
    peer_resets: bool,
    /// The message being assembled arrived with RSV1.
    compressed: bool,
    /// Exists while a compressed message is being received; for good, once created, when the
    /// peer may refer back to earlier messages.
    inflating: Option<Box<Inflating>>,
}

/// The receiving side's zlib state.
#[derive(Debug)]
struct Inflating {
    decompressor: Decompressor,
    /// Bytes the current frame inflated to so far, for the trace.
    frame_inflated: u64,
}

impl RxDeflate {
    fn config(&self) -> DeflateConfig {
        DeflateConfig {
            params: self.params,
            deflate_threshold: self.threshold as usize,
        }
    }

    fn compression(&self) -> Compression {
        Compression {
            window_bits: self.our_window_bits,
            threshold: self.threshold as usize,
        }
    }

    fn frame_inflated(&self) -> u64 {
        self.inflating
            .as_ref()
            .map_or(0, |inflating| inflating.frame_inflated)
    }
}

impl Rx {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            read: ReadState::Header { len: 0 },
            header: [0; frame::MAX_HEADER_LEN],
            message_kind: None,
            message: Vec::new(),
            message_len: 0,
            fragments: 0,
            utf8: Utf8Validator::new(),
            control: Vec::new(),
            preview: None,
            deflate: None,
            deliver_while_closing: false,
        }
    }

    /// Whether data messages are still delivered. After our Close (§7.1.3) they are read only to
    /// find the peer's Close, unless the connection was built with
    /// [`Connection::deliver_data_while_closing`].
    fn wants_data(&self, state: State) -> bool {
        state == State::Open || (state == State::ClosingByUs && self.deliver_while_closing)
    }

    /// How [`Sender`]s compress, if the extension is on.
    fn compression(&self) -> Option<Compression> {
        self.deflate.as_ref().map(RxDeflate::compression)
    }

    /// Whether `header` is a frame of a compressed message (RSV1 was on its first frame).
    fn is_compressed(&self, header: &FrameHeader) -> bool {
        !header.opcode.is_control() && self.deflate.as_ref().is_some_and(|deflate| deflate.compressed)
    }

    /// Traces the current incoming frame with the payload seen so far (inflated, for a frame of
    /// a compressed message).
    fn trace_frame(&self, header: &FrameHeader, tx: &Tx) {
        let (Some(id), Some(preview)) = (tx.trace_id, &self.preview) else {
            return;
        };
        let line = match &self.deflate {
            Some(deflate) if self.is_compressed(header) => trace::format_compressed_frame(
                Direction::In,
                header,
                deflate.frame_inflated(),
                preview.bytes(),
            ),
            _ => trace::format_frame(Direction::In, header, preview.bytes()),
        };
        trace::line(id, &line);
    }

    /// Consumes bytes from the front of `input` and returns how many.
    fn step<F>(
        &mut self,
        input: &mut [u8],
        tx: &mut Tx,
        now: Instant,
        on_event: &mut F,
    ) -> Result<usize, ProtocolError>
    where
        F: FnMut(Event<'_>, &mut Sender<'_>),
    {
        match self.read {
            ReadState::Header { len } => self.read_header(input, len, tx, now, on_event),
            ReadState::Payload {
                header,
                remaining,
                mask_offset,
            } => {
                let take = remaining.min(input.len() as u64) as usize;
                let piece = &mut input[..take];
                let mask_offset = match header.mask {
                    Some(key) => apply_mask(piece, key, mask_offset),
                    None => mask_offset,
                };
                let remaining = remaining - take as u64;
                // A compressed frame is previewed and traced as it inflates (in `on_payload`).
                let compressed = self.is_compressed(&header);
                if let Some(preview) = &mut self.preview
                    && !compressed
                {
                    preview.extend(piece);
                    if remaining == 0 {
                        self.trace_frame(&header, tx);
                    }
                }
                self.read = if remaining == 0 {
                    ReadState::Header { len: 0 }
                } else {
                    ReadState::Payload {
                        header,
                        remaining,
                        mask_offset,
                    }
                };
                self.on_payload(&header, piece, remaining == 0, tx, now, on_event)?;
                Ok(take)
            }
        }
    }

    /// Parses a header, from `input` directly when it holds a whole one, else from the bytes kept
    /// in `self.header` plus `input`.
    fn read_header<F>(
        &mut self,
        input: &mut [u8],
        kept: usize,
        tx: &mut Tx,
        now: Instant,
        on_event: &mut F,
    ) -> Result<usize, ProtocolError>
    where
        F: FnMut(Event<'_>, &mut Sender<'_>),
    {
        let parsed = if kept == 0 {
            FrameHeader::parse(input)?
        } else {
            let take = (frame::MAX_HEADER_LEN - kept).min(input.len());
            self.header[kept..kept + take].copy_from_slice(&input[..take]);
            FrameHeader::parse(&self.header[..kept + take])?
        };
        let Some((header, header_len)) = parsed else {
            // Fewer bytes than a whole header: keep them for the next read.
            let take = input.len().min(frame::MAX_HEADER_LEN - kept);
            self.header[kept..kept + take].copy_from_slice(&input[..take]);
            self.read = ReadState::Header { len: kept + take };
            return Ok(take);
        };
        let used = header_len - kept;
        if let Some(preview) = &mut self.preview {
            **preview = Preview::new();
        }
        if let Some(inflating) = self
            .deflate
            .as_mut()
            .and_then(|deflate| deflate.inflating.as_mut())
        {
            inflating.frame_inflated = 0;
        }
        if let Err(error) = self.begin_frame(&header, tx.role) {
            self.trace_frame(&header, tx);
            return Err(error);
        }
        if header.payload_len == 0 {
            if !self.is_compressed(&header) {
                self.trace_frame(&header, tx);
            }
            self.read = ReadState::Header { len: 0 };
            self.on_payload(&header, &mut [], true, tx, now, on_event)?;
        } else {
            self.read = ReadState::Payload {
                header,
                remaining: header.payload_len,
                mask_offset: 0,
            };
        }
        Ok(used)
    }

    /// §5.2: "RSV1, RSV2, RSV3: MUST be 0 unless an extension is negotiated that defines
    /// meanings for non-zero values". permessage-deflate defines RSV1, on the first frame of a
    /// data message only (RFC 7692 §6).
    fn check_reserved_bits(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        let claimed = if self.deflate.is_some() { RSV1 } else { 0 };
        if header.rsv & !claimed != 0 {
            return Err(ProtocolError::ReservedBits(header.rsv));
        }
        if header.rsv & RSV1 != 0 {
            if header.opcode.is_control() {
                return Err(ProtocolError::CompressedControlFrame);
            }
            if header.opcode == OpCode::Continuation {
                return Err(ProtocolError::CompressedContinuation);
            }
        }
        Ok(())
    }

    /// Checks a header against the rules that depend on the connection, before any payload.
    fn begin_frame(&mut self, header: &FrameHeader, role: Role) -> Result<(), ProtocolError> {
        self.check_reserved_bits(header)?;
        match (role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedClientFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedServerFrame),
            _ => {}
        }
        let max_frame = self.limits.max_frame_size;
        if header.payload_len > max_frame as u64 {
            return Err(ProtocolError::FrameTooBig {
                len: header.payload_len,
                max: max_frame,
            });
        }
        match header.opcode {
            OpCode::Continuation => {
                if self.message_kind.is_none() {
                    return Err(ProtocolError::UnexpectedContinuation);
                }
                if self.fragments >= self.limits.max_fragments {
                    return Err(ProtocolError::TooManyFragments {
                        max: self.limits.max_fragments,
                    });
                }
            }
            OpCode::Text | OpCode::Binary => {
                if self.message_kind.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                self.message_kind = Some(header.opcode);
                if let Some(deflate) = &mut self.deflate {
                    deflate.compressed = header.rsv & RSV1 != 0;
                }
            }
            OpCode::Close | OpCode::Ping | OpCode::Pong => return Ok(()),
        }
        let message_len = self.message_len + header.payload_len;
        // A compressed message is limited by what it inflates to, as it inflates.
        if !self.is_compressed(header) && message_len > self.limits.max_message_size as u64 {
            return Err(ProtocolError::MessageTooBig {
                len: message_len,
                max: self.limits.max_message_size,
            });
        }
        self.message_len = message_len;
        self.fragments += 1;
        Ok(())
    }

    /// Handles a piece of unmasked payload of the current frame.
    fn on_payload<F>(
        &mut self,
        header: &FrameHeader,
        piece: &mut [u8],
        frame_done: bool,
        tx: &mut Tx,
        now: Instant,
        on_event: &mut F,
    ) -> Result<(), ProtocolError>
    where
        F: FnMut(Event<'_>, &mut Sender<'_>),
    {
        if header.opcode.is_control() {
            return self.on_control_payload(header, piece, frame_done, tx, now, on_event);
        }
        if self.is_compressed(header) {
            return self.on_compressed_payload(header, piece, frame_done, tx, now, on_event);
        }
        let kind = self.message_kind.unwrap_or(OpCode::Binary);
        let message_done = frame_done && header.fin;
        if !self.wants_data(tx.state) {
            if message_done {
                self.end_message();
            }
            return Ok(());
        }
        if message_done && self.message.is_empty() && piece.len() as u64 == header.payload_len {
            // The whole message is in this read: deliver it from the input, no copy.
            deliver(kind, piece, tx, now, self.compression(), on_event)?;
            self.end_message();
            return Ok(());
        }
        if kind == OpCode::Text {
            self.utf8.feed(piece).map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        self.message.extend_from_slice(piece);
        if message_done {
            if kind == OpCode::Text {
                self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            let message = std::mem::take(&mut self.message);
            deliver(kind, &message, tx, now, self.compression(), on_event)?;
            self.end_message();
        }
        Ok(())
    }

    /// Handles a piece of a compressed message: inflates it at once (RFC 7692 §7.2.2), so the
    /// limit and the UTF-8 check apply to the inflated bytes as they come.
    fn on_compressed_payload<F>(
        &mut self,
        header: &FrameHeader,
        piece: &[u8],
        frame_done: bool,
        tx: &mut Tx,
        now: Instant,
        on_event: &mut F,
    ) -> Result<(), ProtocolError>
    where
        F: FnMut(Event<'_>, &mut Sender<'_>),
    {
        let message_done = frame_done && header.fin;
        let open = self.wants_data(tx.state);
        let inflated = if open {
            self.inflate(piece, message_done)
        } else {
            Ok(())
        };
        if frame_done {
            self.trace_frame(header, tx);
        }
        inflated?;
        if message_done {
            if open {
                let message = std::mem::take(&mut self.message);
                let kind = self.message_kind.unwrap_or(OpCode::Binary);
                deliver(kind, &message, tx, now, self.compression(), on_event)?;
            }
            self.end_message();
        }
        Ok(())
    }

    /// Inflates a piece of the current compressed message into `self.message`, and ends the
    /// message when it is the last piece.
    fn inflate(&mut self, piece: &[u8], message_done: bool) -> Result<(), ProtocolError> {
        let Some(deflate) = self.deflate.as_mut() else {
            return Ok(());
        };
        let limit = self.limits.max_message_size;
        let text = self.message_kind == Some(OpCode::Text);
        let window_bits = deflate.peer_window_bits;
        let inflating = deflate.inflating.get_or_insert_with(|| {
            Box::new(Inflating {
                decompressor: Decompressor::new(window_bits),
                frame_inflated: 0,
            })
        });
        let Inflating {
            decompressor,
            frame_inflated,
        } = inflating.as_mut();
        let (utf8, preview) = (&mut self.utf8, &mut self.preview);
        let mut inspect = |inflated: &[u8]| {
            *frame_inflated += inflated.len() as u64;
            if let Some(preview) = preview {
                preview.extend(inflated);
            }
            if text {
                // §8.1 on the inflated text, so it still fails at the first invalid byte.
                utf8.feed(inflated).map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            Ok::<(), ProtocolError>(())
        };
        decompressor.inflate(piece, &mut self.message, limit, &mut inspect)?;
        if !message_done {
            return Ok(());
        }
        decompressor.finish(&mut self.message, limit, &mut inspect)?;
        if text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Ok(())
    }

    fn on_control_payload<F>(
        &mut self,
        header: &FrameHeader,
        piece: &[u8],
        frame_done: bool,
        tx: &mut Tx,
        now: Instant,
        on_event: &mut F,
    ) -> Result<(), ProtocolError>
    where
        F: FnMut(Event<'_>, &mut Sender<'_>),
    {
        if !frame_done {
            self.control.extend_from_slice(piece);
            return Ok(());
        }
        if self.control.is_empty() {
            return on_control_frame(header.opcode, piece, tx, now, self.compression(), on_event);
        }
        let mut payload = std::mem::take(&mut self.control);
        payload.extend_from_slice(piece);
        on_control_frame(header.opcode, &payload, tx, now, self.compression(), on_event)
    }

    /// Resets message assembly and gives its buffer back.
    fn end_message(&mut self) {
        self.message_kind = None;
        self.message = Vec::new();
        self.message_len = 0;
        self.fragments = 0;
        self.utf8 = Utf8Validator::new();
        if let Some(deflate) = &mut self.deflate {
            deflate.compressed = false;
            if deflate.peer_resets {
                deflate.inflating = None;
            }
        }
    }
}

/// Hands a complete data message to the callback.
fn deliver<F>(
    kind: OpCode,
    payload: &[u8],
    tx: &mut Tx,
    now: Instant,
    compression: Option<Compression>,
    on_event: &mut F,
) -> Result<(), ProtocolError>
where
    F: FnMut(Event<'_>, &mut Sender<'_>),
{
    let event = if kind == OpCode::Text {
        Event::Text(std::str::from_utf8(payload).map_err(|_| ProtocolError::InvalidUtf8)?)
    } else {
        Event::Binary(payload)
    };
    on_event(event, &mut Sender { tx, now, compression });
    Ok(())
}

/// Acts on a complete control frame (§5.5).
fn on_control_frame<F>(
    opcode: OpCode,
    payload: &[u8],
    tx: &mut Tx,
    now: Instant,
    compression: Option<Compression>,
    on_event: &mut F,
) -> Result<(), ProtocolError>
where
    F: FnMut(Event<'_>, &mut Sender<'_>),
{
    let event = match opcode {
        OpCode::Ping => {
            if tx.state == State::Open {
                // §5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in
                // response ... [with] identical Application data".
                tx.queue_frame(OpCode::Pong, payload);
            }
            Event::Ping(payload)
        }
        // §5.5.3: a Pong may be unsolicited; no response is expected.
        OpCode::Pong => Event::Pong(payload),
        _ => {
            let body = close::parse_close_payload(payload).map_err(ProtocolError::Close)?;
            tx.on_peer_close(body, payload, now);
            Event::Close(body)
        }
    };
    on_event(event, &mut Sender { tx, now, compression });
    Ok(())
}

/// One WebSocket connection, after the opening handshake.
#[derive(Debug)]
pub struct Connection {
    rx: Rx,
    tx: Tx,
    timeouts: Timeouts,
    /// When the peer last sent anything.
    last_heard: Instant,
    next_ping: Option<Instant>,
}

impl Connection {
    /// A connection that has just completed its opening handshake at `now`.
    pub fn new(role: Role, config: Config, now: Instant) -> Self {
        Self::with_mask_seed(role, config, now, random_seed())
    }

    /// Like [`Connection::new`], with the client's masking keys drawn from `seed` (tests use a
    /// fixed seed to get repeatable bytes).
    pub fn with_mask_seed(role: Role, config: Config, now: Instant, seed: u64) -> Self {
        Self {
            rx: Rx::new(config.limits),
            tx: Tx {
                role,
                state: State::Open,
                outbox: Outbox::new(),
                mask_keys: (role == Role::Client).then(|| MaskKeys::new(seed | 1)),
                close_timeout: config.timeouts.close_timeout,
                close_deadline: None,
                status: None,
                trace_id: None,
            },
            timeouts: config.timeouts,
            last_heard: now,
            next_ping: config.timeouts.ping_interval.map(|interval| now + interval),
        }
    }

    /// Turns on permessage-deflate (RFC 7692) as the opening handshake agreed it. Without it a
    /// connection behaves exactly as RFC 6455 alone says, RSV1 included.
    ///
    /// ```
    /// use std::time::Instant;
    /// use wschat::ws::deflate::{self, DeflatePolicy};
    /// use wschat::ws::protocol::{Config, Connection, DeflateConfig, Role};
    ///
    /// // The server side: the request's Sec-WebSocket-Extensions values, our policy.
    /// let offers = ["permessage-deflate; client_max_window_bits"];
    /// let (params, answer) = deflate::negotiate(&offers, &DeflatePolicy::default()).expect("accepted");
    /// assert_eq!(answer, "permessage-deflate; server_no_context_takeover"); // into the 101 response
    /// let conn = Connection::new(Role::Server, Config::default(), Instant::now())
    ///     .with_deflate(DeflateConfig::new(params));
    /// assert_eq!(conn.deflate().map(|deflate| deflate.params), Some(params));
    /// ```
    pub fn with_deflate(mut self, deflate: DeflateConfig) -> Self {
        let (ours, theirs) = match self.tx.role {
            Role::Server => (
                deflate.params.server_to_client(),
                deflate.params.client_to_server(),
            ),
            Role::Client => (
                deflate.params.client_to_server(),
                deflate.params.server_to_client(),
            ),
        };
        self.rx.deflate = Some(RxDeflate {
            params: deflate.params,
            threshold: u32::try_from(deflate.deflate_threshold).unwrap_or(u32::MAX),
            our_window_bits: ours.max_window_bits,
            peer_window_bits: theirs.max_window_bits,
            peer_resets: theirs.no_context_takeover,
            compressed: false,
            inflating: None,
        });
        self
    }

    /// Keeps delivering the peer's data messages after we sent Close, until its Close arrives
    /// (they can no longer be answered). RFC 6455 §1.4 only has an endpoint discard what follows
    /// the peer's Close; what was in flight when we closed is still the peer's data. A client that
    /// closes at the end of its input wants the replies still on their way (`wschat-client`). Off
    /// by default: a server that closes a connection (shutdown, a client that floods it) has
    /// stopped serving it.
    pub fn deliver_data_while_closing(mut self) -> Self {
        self.rx.deliver_while_closing = true;
        self
    }

    /// The permessage-deflate agreement, if there is one.
    pub fn deflate(&self) -> Option<DeflateConfig> {
        self.rx.deflate.as_ref().map(RxDeflate::config)
    }

    /// Prints every frame of this connection to the wire trace ([`crate::trace`]) as `#id`.
    pub fn enable_trace(&mut self, id: u64) {
        self.tx.trace_id = Some(id);
        self.rx.preview = Some(Box::default());
    }

    pub fn state(&self) -> State {
        self.tx.state
    }

    pub fn role(&self) -> Role {
        self.tx.role
    }

    /// How the connection ended (or is ending): set once a Close was sent or received.
    pub fn close_status(&self) -> Option<&CloseStatus> {
        self.tx.status.as_deref()
    }

    /// Bytes waiting to be written to the peer.
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.tx.outbox
    }

    pub fn queued(&self) -> usize {
        self.tx.outbox.len()
    }

    /// A handle for sending outside the event callback.
    pub fn sender(&mut self, now: Instant) -> Sender<'_> {
        Sender {
            tx: &mut self.tx,
            now,
            compression: self.rx.compression(),
        }
    }

    /// Bytes of a partial message or frame held between reads: the connection's own memory.
    pub fn buffered(&self) -> usize {
        self.rx.message.capacity() + self.rx.control.capacity()
    }

    /// Feeds bytes that arrived from the peer. All of `input` is consumed; it is unmasked in place.
    /// `on_event` is called for every complete message and control frame, with a [`Sender`] to
    /// answer. A broken rule fails the connection: the Close is queued and the state becomes
    /// [`State::Closed`].
    pub fn receive<F>(&mut self, mut input: &mut [u8], now: Instant, mut on_event: F)
    where
        F: FnMut(Event<'_>, &mut Sender<'_>),
    {
        if input.is_empty() || self.tx.state == State::Closed {
            return;
        }
        self.last_heard = now;
        while !input.is_empty() && self.tx.state != State::Closed {
            match self.rx.step(input, &mut self.tx, now, &mut on_event) {
                Ok(used) => input = &mut std::mem::take(&mut input)[used..],
                Err(error) => {
                    if let ReadState::Payload {
                        header, remaining, ..
                    } = self.rx.read
                        && remaining > 0
                    {
                        // The frame the rule broke in, as far as it came.
                        self.rx.trace_frame(&header, &self.tx);
                    }
                    if let Some(id) = self.tx.trace_id {
                        trace::line(id, &trace::format_failure(&error));
                    }
                    self.tx.fail(error, now)
                }
            }
        }
    }

    /// The transport reached end of stream. Without a completed close handshake this is an
    /// abnormal closure (1006, §7.1.5).
    pub fn receive_eof(&mut self) {
        if self.tx.state != State::Closed {
            if self.tx.status.is_none() || self.tx.state == State::Open {
                self.tx.status = Some(Box::new(CloseStatus {
                    code: CloseCode::Abnormal,
                    reason: "connection dropped without a close frame".into(),
                    by_us: false,
                    error: None,
                }));
            }
            self.tx.state = State::Closed;
        }
    }

    /// Starts the close handshake (§7.1.2).
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant) {
        self.tx.close(code, reason, now);
    }

    /// When [`Connection::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.tx.state {
            State::Open => {
                let idle = self.timeouts.idle_timeout.map(|idle| self.last_heard + idle);
                [idle, self.next_ping].into_iter().flatten().min()
            }
            State::ClosingByUs => self.tx.close_deadline,
            State::Closed => None,
        }
    }

    /// Runs the timers that are due at `now`: close an idle peer, ping a quiet one, give up on a
    /// peer that never answers our Close.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.tx.state {
            State::Open => {
                if let Some(idle) = self.timeouts.idle_timeout
                    && now >= self.last_heard + idle
                {
                    self.tx.close(CloseCode::GoingAway, "idle timeout", now);
                    return;
                }
                if let (Some(due), Some(interval)) = (self.next_ping, self.timeouts.ping_interval)
                    && now >= due
                {
                    self.tx.queue_frame(OpCode::Ping, b"");
                    self.next_ping = Some(now + interval);
                }
            }
            State::ClosingByUs => {
                if self.tx.close_deadline.is_some_and(|deadline| now >= deadline) {
                    if let Some(status) = self.tx.status.as_mut() {
                        status.reason = format!("{} (no close from peer)", status.reason);
                    }
                    self.tx.state = State::Closed;
                }
            }
            State::Closed => {}
        }
    }
}

#[cfg(test)]
mod tests;
