//! Command-line configuration. Every limit is a named field with a chat-sized default; the README
//! explains each one.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::conn::StackConfig;
use crate::conn::per_ip::DEFAULT_MAX_PER_ADDRESS;
use crate::http;
use crate::http::forwarded::{IpPrefix, TrustedProxies};
use crate::hub::{HubConfig, SessionConfig};
use crate::ws::deflate::DeflatePolicy;
use crate::ws::handshake::Policy;
use crate::ws::protocol::{self, Limits, Timeouts};

/// wschat: an RFC 6455 WebSocket server and chat, on one thread.
#[derive(Parser, Debug, Clone)]
#[command(name = "wschat", version, about)]
pub struct Config {
    /// Address to listen on. The chat page and its WebSocket are served at `/`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Also serve `/echo`, which sends every text and binary message back to its sender
    /// (for Autobahn|Testsuite and benchmarks).
    #[arg(long)]
    pub echo: bool,

    /// Largest message a client may send, in bytes, summed over its fragments (over it: close 1009).
    #[arg(long, default_value_t = 64 * 1024, value_name = "BYTES")]
    pub max_message_size: usize,

    /// Largest single frame a client may send, in bytes (over it: close 1009).
    #[arg(long, default_value_t = 64 * 1024, value_name = "BYTES")]
    pub max_frame_size: usize,

    /// Most frames one message may be split into (over it: close 1009).
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub max_fragments: usize,

    /// Most simultaneous connections; further handshakes get 503.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max_connections: usize,

    /// Most simultaneous connections from one client address (an IPv4 address, or an IPv6 /64);
    /// further handshakes get 429. The default lets a household or office behind one address
    /// keep dozens of tabs open while no one host takes more than a sliver of --max-connections.
    #[arg(long = "max-connections-per-ip", default_value_t = DEFAULT_MAX_PER_ADDRESS, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_ip: u32,

    /// A reverse proxy whose X-Forwarded-For names the client (repeatable; an address or a CIDR
    /// prefix such as 10.0.0.0/8). Only for requests from these peers is the header believed, for
    /// the per-address limits and the logs.
    #[arg(long = "trusted-proxy", value_name = "ADDR")]
    pub trusted_proxies: Vec<IpPrefix>,

    /// Serve /metrics on this address only (not on --listen), so that it need not be public.
    /// /healthz and /readyz are served on both.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Bytes queued for one client before it counts as slow: an echo client stops being read until
    /// it drains, a chat client is closed with 1008.
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub max_queued_output: usize,

    /// Seconds a client has to complete the HTTP handshake (defeats slowloris).
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = parse_seconds)]
    pub handshake_timeout: Duration,

    /// Seconds between server pings to each client; 0 disables pings.
    #[arg(long, default_value = "30", value_name = "SECS", value_parser = parse_seconds)]
    pub ping_interval: Duration,

    /// Seconds of silence after which a client is closed (1001); 0 disables. Answered pings count
    /// as activity, so only dead peers (half-open TCP) reach it.
    #[arg(long, default_value = "90", value_name = "SECS", value_parser = parse_seconds)]
    pub idle_timeout: Duration,

    /// Seconds to wait for the client's Close after ours, and for TCP to wind down, before dropping it.
    #[arg(long, default_value = "5", value_name = "SECS", value_parser = parse_seconds)]
    pub close_timeout: Duration,

    /// An Origin allowed to open a WebSocket (repeatable). When given, browsers from other origins
    /// get 403; clients that send no Origin are not browsers and are let through.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,

    /// The message store: a SQLite database, created on first start. `:memory:` keeps nothing
    /// across restarts (tests and benchmarks).
    #[arg(long, default_value = "wschat.db", value_name = "PATH")]
    pub db: std::path::PathBuf,

    /// Make Redis the store and the fan-out: every wschat process pointing at the same Redis
    /// (`redis://HOST[:PORT][/DB]`) serves the same rooms, nicknames, ids and history. `--db` is
    /// then unused. Redis must be reachable at start (else the start fails with one line).
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,

    /// This process's name among those sharing `--redis` (letters, digits, `-`, `_`); a fresh
    /// random one by default, so a restarted process never inherits a dead one's leases.
    #[arg(long, value_name = "NAME", value_parser = parse_node)]
    pub node: Option<String>,

    /// Send Redis one request at a time instead of pipelining each turn's requests (only to
    /// measure what pipelining buys).
    #[arg(long, hide = true)]
    pub redis_no_pipeline: bool,

    /// Let several processes listen on the same address (SO_REUSEPORT: the kernel spreads new
    /// connections among them), e.g. one process per core, all with the same `--redis`.
    #[arg(long)]
    pub reuse_port: bool,

    /// Messages kept per room in the store; older ones are pruned in the background (with their
    /// idempotency keys).
    #[arg(long, default_value_t = 10_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub retain_messages: u64,

    /// Seconds a chat session carried over plain HTTP (Server-Sent Events, long-polls) waits for
    /// its client to come back for its events before it ends; within it, nickname and room survive.
    #[arg(long, default_value = "30", value_name = "SECS", value_parser = parse_seconds)]
    pub session_grace: Duration,

    /// Decline permessage-deflate (RFC 7692): every connection runs uncompressed.
    #[arg(long)]
    pub no_deflate: bool,

    /// Messages of at least this many bytes go out compressed to clients that negotiated
    /// permessage-deflate; shorter ones are sent as they are (compressing them saves too little).
    #[arg(long, default_value_t = crate::ws::deflate::DEFAULT_THRESHOLD, value_name = "BYTES")]
    pub deflate_threshold: usize,

    /// PEM file with the server's certificate chain, leaf first: serve `https://` and `wss://`
    /// on the listening port (with --tls-key). SIGHUP reloads it and the key (a renewed
    /// certificate); open connections keep the one they started with.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Print the wire trace to stderr: handshake heads and every frame in both directions,
    /// annotated (same as RUST_LOG=wschat::trace=trace).
    #[arg(long)]
    pub trace: bool,

    #[command(flatten)]
    pub chat: crate::chat::ChatConfig,
}

/// Seconds as an integer or decimal (`0.5`).
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is not a valid duration"))
}

impl Config {
    /// Defaults, as if no flag was given.
    pub fn defaults() -> Self {
        Self::parse_from(["wschat"])
    }

    /// What each WebSocket connection enforces.
    pub fn connection(&self) -> protocol::Config {
        let optional = |duration: Duration| (!duration.is_zero()).then_some(duration);
        protocol::Config {
            limits: Limits {
                max_frame_size: self.max_frame_size,
                max_message_size: self.max_message_size,
                max_fragments: self.max_fragments,
            },
            timeouts: Timeouts {
                ping_interval: optional(self.ping_interval),
                idle_timeout: optional(self.idle_timeout),
                close_timeout: self.close_timeout,
            },
        }
    }

    /// Who may open a WebSocket.
    pub fn policy(&self) -> Policy {
        Policy {
            allowed_origins: self.allowed_origins.clone(),
            protocols: Vec::new(),
            deflate: (!self.no_deflate).then(DeflatePolicy::default),
        }
    }

    /// What every connection's protocol stack enforces.
    pub fn stack(&self) -> StackConfig {
        StackConfig {
            // The only request bodies are chat messages (`POST /send`), bounded like a WebSocket
            // message.
            http: http::Limits {
                max_body_bytes: self.max_message_size,
                ..http::Limits::default()
            },
            websocket: self.connection(),
            handshake_timeout: self.handshake_timeout,
            close_timeout: self.close_timeout,
            max_queued_output: self.max_queued_output,
            deflate_threshold: self.deflate_threshold,
        }
    }

    /// What the shared state needs: the endpoints, the upgrade policy and the chat's rules.
    pub fn hub(&self) -> HubConfig {
        HubConfig {
            echo: self.echo,
            policy: self.policy(),
            chat: self.chat.clone(),
            sessions: SessionConfig {
                queue_cap: self.max_queued_output,
                grace: self.session_grace,
            },
            trusted_proxies: TrustedProxies::new(self.trusted_proxies.clone()),
            max_per_address: self.max_connections_per_ip,
            max_connections: self.max_connections,
            metrics_separate: self.metrics_listen.is_some(),
        }
    }
}

/// Most characters of a `--node` name: it is part of every key and owner this process writes.
const MAX_NODE_CHARS: usize = 64;

/// A node name: 1 to [`MAX_NODE_CHARS`] ASCII letters, digits, `-` and `_`. Owners are
/// `<node>.<session>` and presence fields `<owner> <nickname>`, so a dot or a space in it would be
/// read as a separator.
fn parse_node(text: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if text.is_empty() || text.len() > MAX_NODE_CHARS || !text.chars().all(allowed) {
        return Err(format!(
            "{text:?}: 1 to {MAX_NODE_CHARS} ASCII letters, digits, '-' or '_'"
        ));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_name_is_ascii_letters_digits_dash_and_underscore() {
        for good in ["a", "node-1", "web_03", &"n".repeat(MAX_NODE_CHARS)] {
            assert_eq!(parse_node(good).as_deref(), Ok(good));
        }
        for bad in ["", "a.b", "a b", "nœud", &"n".repeat(MAX_NODE_CHARS + 1)] {
            assert!(parse_node(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_are_chat_sized() {
        let config = Config::defaults();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.max_message_size, 65536);
        assert!(!config.echo);
        assert_eq!(
            config.connection().timeouts.ping_interval,
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn zero_disables_pings_and_fractional_seconds_parse() {
        let config = Config::parse_from(["wschat", "--ping-interval", "0", "--close-timeout", "0.25"]);
        assert_eq!(config.connection().timeouts.ping_interval, None);
        assert_eq!(config.close_timeout, Duration::from_millis(250));
    }

    #[test]
    fn tls_needs_both_the_certificate_and_the_key() {
        assert!(Config::try_parse_from(["wschat", "--tls-cert", "c.pem"]).is_err());
        assert!(Config::try_parse_from(["wschat", "--tls-key", "k.pem"]).is_err());
        let config = Config::parse_from(["wschat", "--tls-cert", "c.pem", "--tls-key", "k.pem"]);
        assert_eq!(config.tls_cert.as_deref(), Some(std::path::Path::new("c.pem")));
        assert_eq!(config.tls_key.as_deref(), Some(std::path::Path::new("k.pem")));
    }

    #[test]
    fn allowed_origin_repeats() {
        let config = Config::parse_from(["wschat", "--allowed-origin", "a", "--allowed-origin", "b"]);
        assert_eq!(config.policy().allowed_origins, ["a", "b"]);
    }
}
