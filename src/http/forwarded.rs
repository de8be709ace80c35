//! Which address a request came from, behind reverse proxies: `X-Forwarded-For`.
//!
//! Behind a proxy (nginx, a load balancer), every connection's peer is the proxy. The client's
//! address travels in `X-Forwarded-For`, a list that each proxy extends on the right with the
//! address *it* received the request from: `client, proxy1, proxy2`, the last proxy being our
//! peer. The field has no RFC of its own; RFC 7239 (`Forwarded`, which replaces it) describes it in
//! §1 and explains in §8.1 why its content cannot be trusted: a client can send the field too, with
//! whatever it likes in it, and a proxy only appends.
//!
//! So the list is read from the right, the end that our own proxies wrote, and only as far as the
//! hops are ours:
//!
//! 1. A peer that is not a trusted proxy is the client, whatever the field says: anybody can send
//!    it.
//! 2. From a trusted peer, the rightmost entry is the address that proxy saw. If it is a trusted
//!    proxy too, the entry before it is believed, and so on; the first address that is not a
//!    trusted proxy is the client. Everything to its left was written by the client or by
//!    proxies we do not run, and is ignored.
//! 3. An entry that is not an address (`unknown`, garbage, an obfuscated RFC 7239 §6.3 token)
//!    stops the walk: the client is the last trusted hop, the one that wrote or passed it on. The
//!    same goes for a list longer than [`MAX_HOPS`]: nothing honest is that deep.
//! 4. If every entry is a trusted proxy, the leftmost is the client (a request from inside).
//!
//! Several `X-Forwarded-For` lines are one list, joined by commas in order (RFC 9110 §5.3). An
//! entry is an IPv4 or IPv6 address, optionally with a port (`192.0.2.1:4711`,
//! `[2001:db8::1]:4711`, as some load balancers write it), or a bracketed IPv6 address. IPv4
//! addresses mapped into IPv6 (`::ffff:192.0.2.1`, what a dual-stack socket reports) are read as
//! the IPv4 address, so that limits and trusted prefixes see one form.
//!
//! The `Forwarded` header (RFC 7239) is not read: nginx and most load balancers send
//! `X-Forwarded-For`, and reading both would let a client pick the one our proxy did not clean.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use super::head::{RequestHead, list_elements};

/// The field's name (compared ignoring case, RFC 9110 §5.1).
pub const X_FORWARDED_FOR: &str = "X-Forwarded-For";

/// Most entries walked, from the right, before the walk stops. A chain of proxies we run is a few
/// hops (CDN, load balancer, nginx); a longer list is padding that only costs time, and the
/// request head's own size limit already bounds its memory.
pub const MAX_HOPS: usize = 16;

/// The prefix length by which an IPv6 host is counted ([`IpPrefix::host`]).
pub const HOST_PREFIX_LEN_V6: u8 = 64;

/// An address prefix in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), or a single address (a
/// prefix of full length). `--trusted-proxy` takes these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    network: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// The prefix of `len` bits starting at `network`, whose host bits must be zero.
    pub fn new(network: IpAddr, len: u8) -> Result<IpPrefix, PrefixError> {
        let max = max_len(network);
        if len > max {
            return Err(PrefixError::LengthTooLong { len, max });
        }
        // A prefix inside ::ffff:0:0/96 (IPv4 mapped into IPv6) is the IPv4 prefix it maps, as
        // the addresses it is compared with are (see `contains`).
        let (network, len) = match network {
            IpAddr::V6(v6) if len >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), len - 96),
                None => (network, len),
            },
            _ => (network, len),
        };
        let masked = mask(network, len);
        if masked != network {
            return Err(PrefixError::HostBitsSet {
                suggestion: IpPrefix { network: masked, len },
            });
        }
        Ok(IpPrefix { network, len })
    }

    /// The prefix of `len` bits that holds `addr` (IPv4-mapped addresses as IPv4, `len` capped at
    /// the address's length): `containing(2001:db8::1:2:3:4, 64)` is `2001:db8::/64`.
    pub fn containing(addr: IpAddr, len: u8) -> IpPrefix {
        let addr = addr.to_canonical();
        let len = len.min(max_len(addr));
        IpPrefix {
            network: mask(addr, len),
            len,
        }
    }

    /// What one host is counted as for per-address limits: an IPv4 address alone (mapped ones
    /// too), an IPv6 address by its /64 — one host may use any address of its /64 (an end site
    /// gets at least that, RFC 6177 §3; SLAAC privacy addresses, RFC 8981, change by design), so a
    /// per-/128 limit would limit nothing.
    pub fn host(addr: IpAddr) -> IpPrefix {
        IpPrefix::containing(addr, HOST_PREFIX_LEN_V6)
    }

    /// Whether `addr` is inside this prefix. IPv4 prefixes hold IPv4 addresses (mapped ones too);
    /// IPv6 prefixes hold IPv6 addresses.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        addr.is_ipv4() == self.network.is_ipv4() && mask(addr, self.len) == self.network
    }
}

/// `addr` with all but its first `len` bits cleared.
fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((bits & kept).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((bits & kept).into())
        }
    }
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

impl FromStr for IpPrefix {
    type Err = PrefixError;

    fn from_str(text: &str) -> Result<IpPrefix, PrefixError> {
        let (address, len) = match text.split_once('/') {
            Some((address, len)) => (address, Some(len)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| PrefixError::BadAddress(address.to_owned()))?;
        let len = match len {
            None => max_len(network),
            // Digits only: `u8::from_str` would also take a leading `+`.
            Some(len) if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => {
                len.parse().map_err(|_| PrefixError::BadLength(len.to_owned()))?
            }
            Some(len) => return Err(PrefixError::BadLength(len.to_owned())),
        };
        IpPrefix::new(network, len)
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

/// Why a `--trusted-proxy` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixError {
    /// The part before `/` is not an IP address.
    BadAddress(String),
    /// The part after `/` is not a number.
    BadLength(String),
    /// More bits than the address has.
    LengthTooLong { len: u8, max: u8 },
    /// `10.0.0.1/8`: probably a typo for the network, so refused rather than guessed.
    HostBitsSet { suggestion: IpPrefix },
}

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrefixError::BadAddress(text) => write!(f, "{text:?} is not an IP address"),
            PrefixError::BadLength(text) => write!(f, "{text:?} is not a prefix length"),
            PrefixError::LengthTooLong { len, max } => {
                write!(
                    f,
                    "a prefix of {len} bits is longer than the address ({max} bits)"
                )
            }
            PrefixError::HostBitsSet { suggestion } => {
                write!(
                    f,
                    "the address has bits set past the prefix length (did you mean {suggestion}?)"
                )
            }
        }
    }
}

impl std::error::Error for PrefixError {}

/// The proxies whose `X-Forwarded-For` entries are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    prefixes: Vec<IpPrefix>,
}

impl TrustedProxies {
    pub fn new(prefixes: Vec<IpPrefix>) -> Self {
        Self { prefixes }
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        self.prefixes.iter().any(|prefix| prefix.contains(addr))
    }

    /// No proxy is trusted: every request's address is its peer's.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// The client's address for a request that came from `peer` with this head.
    pub fn client_addr(&self, peer: IpAddr, head: &RequestHead) -> IpAddr {
        self.client_addr_from(peer, head.header_values(X_FORWARDED_FOR))
    }

    /// The client's address for a request from `peer` whose `X-Forwarded-For` field lines are
    /// `values`, in the order they came. The rules are in the module documentation.
    pub fn client_addr_from<'a, I>(&self, peer: IpAddr, values: I) -> IpAddr
    where
        I: IntoIterator<Item = &'a str>,
        I::IntoIter: DoubleEndedIterator,
    {
        let mut client = peer.to_canonical();
        // Rule 1: only a trusted peer's field is read at all.
        if !self.contains(client) {
            return client;
        }
        // RFC 9110 §5.3: the lines are one list; its right end is the last line's last element.
        let entries = values
            .into_iter()
            .rev()
            .flat_map(|value| list_elements(value).rev());
        for entry in entries.take(MAX_HOPS) {
            // Rule 3: garbage stops the walk at the last hop we trust.
            let Some(hop) = parse_hop(entry) else {
                return client;
            };
            client = hop;
            // Rule 2: the first hop that is not ours is the client.
            if !self.contains(hop) {
                return client;
            }
        }
        // Rule 4 (every entry trusted), or rule 3 for a list longer than MAX_HOPS.
        client
    }
}

/// One list entry as an address: `192.0.2.1`, `2001:db8::1`, either with a port, or `[2001:db8::1]`.
pub(crate) fn parse_hop(entry: &str) -> Option<IpAddr> {
    let addr = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
        .or_else(|| {
            let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
            inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        })?;
    Some(addr.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "203.0.113.7";
    const NGINX: &str = "127.0.0.1";
    const BALANCER: &str = "10.1.2.3";

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusted(prefixes: &[&str]) -> TrustedProxies {
        TrustedProxies::new(prefixes.iter().map(|p| p.parse().unwrap()).collect())
    }

    /// Our deployment: nginx on loopback, behind a load balancer in 10.0.0.0/8.
    fn ours() -> TrustedProxies {
        trusted(&["127.0.0.1", "10.0.0.0/8", "::1"])
    }

    fn client(peer: &str, lines: &[&str]) -> IpAddr {
        ours().client_addr_from(ip(peer), lines.iter().copied())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_the_field_says() {
        assert_eq!(client(CLIENT, &["198.51.100.1"]), ip(CLIENT));
        assert_eq!(client(CLIENT, &["127.0.0.1"]), ip(CLIENT));
        // With no trusted proxy configured at all, likewise.
        let none = TrustedProxies::default();
        assert_eq!(none.client_addr_from(ip(NGINX), ["198.51.100.1"]), ip(NGINX));
    }

    #[test]
    fn a_trusted_peer_without_the_field_is_the_client() {
        assert_eq!(client(NGINX, &[]), ip(NGINX));
        assert_eq!(client(NGINX, &[""]), ip(NGINX));
        assert_eq!(client(NGINX, &[" , ,"]), ip(NGINX));
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let table: &[(&[&str], &str)] = &[
            (&["203.0.113.7"], CLIENT),
            (&["203.0.113.7, 10.1.2.3"], CLIENT),
            // Entries left of the client were written by the client: a spoof is ignored.
            (&["6.6.6.6, 203.0.113.7, 10.1.2.3"], CLIENT),
            (&["127.0.0.1, 203.0.113.7"], CLIENT),
            (&["10.9.9.9, 6.6.6.6, 203.0.113.7"], CLIENT),
        ];
        for (lines, expected) in table {
            assert_eq!(client(NGINX, lines), ip(expected), "{lines:?}");
        }
    }

    #[test]
    fn every_hop_trusted_makes_the_leftmost_the_client() {
        assert_eq!(client(NGINX, &["10.0.0.5, 10.1.2.3"]), ip("10.0.0.5"));
    }

    #[test]
    fn a_malformed_entry_stops_the_walk_at_the_last_trusted_hop() {
        let table: &[(&str, &str)] = &[
            ("unknown", NGINX),
            ("garbage", NGINX),
            ("203.0.113.7, unknown", NGINX),
            ("203.0.113.7, _hidden, 10.1.2.3", BALANCER),
            ("203.0.113.7, 10.1.2.3 10.1.2.4", NGINX), // two addresses in one entry
            ("\"203.0.113.7\"", NGINX),                // quoted
            ("203.0.113.7/32", NGINX),
            ("for=203.0.113.7", NGINX), // RFC 7239 syntax in the wrong field
            ("203.0.113.256", NGINX),
            ("0x7f.1", NGINX),
            ("203.0.113.7:", NGINX),
            ("203.0.113.7:99999", NGINX),
            ("[203.0.113.7]", NGINX),
            ("[2001:db8::1", NGINX),
            ("fe80::1%eth0", NGINX),
            ("2001:db8::1, \u{0}", NGINX),
        ];
        for (line, expected) in table {
            assert_eq!(client(NGINX, &[line]), ip(expected), "{line:?}");
        }
    }

    #[test]
    fn spaces_and_tabs_around_entries_are_optional_whitespace() {
        for line in [
            "203.0.113.7,10.1.2.3",
            " 203.0.113.7 ,\t10.1.2.3\t",
            "203.0.113.7 , , 10.1.2.3,",
        ] {
            assert_eq!(client(NGINX, &[line]), ip(CLIENT), "{line:?}");
        }
    }

    #[test]
    fn entries_may_carry_a_port_or_brackets() {
        let table: &[(&str, &str)] = &[
            ("203.0.113.7:4711", CLIENT),
            ("2001:db8::7", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("[2001:db8::7]:4711", "2001:db8::7"),
            ("203.0.113.7:4711, 10.1.2.3:80", CLIENT),
        ];
        for (line, expected) in table {
            assert_eq!(client(NGINX, &[line]), ip(expected), "{line:?}");
        }
    }

    #[test]
    fn ipv4_mapped_addresses_are_read_as_ipv4() {
        // A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d.
        assert_eq!(client("::ffff:127.0.0.1", &[CLIENT]), ip(CLIENT));
        assert_eq!(client(NGINX, &["::ffff:203.0.113.7"]), ip(CLIENT));
        assert_eq!(client(NGINX, &["203.0.113.7, ::ffff:10.1.2.3"]), ip(CLIENT));
        // And an untrusted mapped peer is reported in its IPv4 form.
        assert_eq!(client("::ffff:203.0.113.7", &["1.1.1.1"]), ip(CLIENT));
    }

    #[test]
    fn ipv6_proxies_and_clients() {
        assert_eq!(client("::1", &["2001:db8::7"]), ip("2001:db8::7"));
        let v6 = trusted(&["2001:db8:1::/48"]);
        let from = |lines: &[&str]| v6.client_addr_from(ip("2001:db8:1::2"), lines.iter().copied());
        assert_eq!(from(&["2001:db8:2::9, 2001:db8:1:ffff::1"]), ip("2001:db8:2::9"));
        assert_eq!(from(&["2001:db8:2::9"]), ip("2001:db8:2::9"));
    }

    #[test]
    fn several_field_lines_are_one_list_in_order() {
        // Split at every comma, the same list gives the same answer.
        let whole = "6.6.6.6, 203.0.113.7, 10.0.0.9, 10.1.2.3";
        let elements: Vec<&str> = whole.split(", ").collect();
        for split in 0..=elements.len() {
            let first = elements[..split].join(", ");
            let second = elements[split..].join(", ");
            assert_eq!(client(NGINX, &[&first, &second]), ip(CLIENT), "split at {split}");
        }
        // One element per line.
        assert_eq!(client(NGINX, &elements), ip(CLIENT));
        // The rightmost is the last line's last element, not the first line's.
        assert_eq!(
            client(NGINX, &["203.0.113.7", "198.51.100.1"]),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn a_list_longer_than_max_hops_stops_at_the_last_hop_walked() {
        let mut entries = vec!["6.6.6.6"];
        entries.extend(std::iter::repeat_n("10.0.0.1", 10_000));
        let line = entries.join(",");
        assert_eq!(client(NGINX, &[&line]), ip("10.0.0.1"));
        // Spread over many field lines, likewise.
        let lines: Vec<&str> = entries.clone();
        assert_eq!(client(NGINX, &lines), ip("10.0.0.1"));
        // Within the limit the walk reaches the client.
        let mut short = vec!["6.6.6.6"];
        short.extend(std::iter::repeat_n("10.0.0.1", MAX_HOPS - 1));
        assert_eq!(client(NGINX, &short), ip("6.6.6.6"));
    }

    #[test]
    fn the_client_addr_reads_every_field_line_of_a_head() {
        let head = RequestHead {
            method: "GET".into(),
            target: "/".into(),
            path: "/".into(),
            query: None,
            minor_version: 1,
            headers: vec![
                ("x-forwarded-for".into(), "6.6.6.6".into()),
                ("Host".into(), "chat.example".into()),
                ("X-FORWARDED-FOR".into(), "203.0.113.7, 10.1.2.3".into()),
            ],
        };
        assert_eq!(ours().client_addr(ip(NGINX), &head), ip(CLIENT));
    }

    #[test]
    fn prefixes_parse_in_cidr_notation_or_as_addresses() {
        let table: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.255.0.1", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("192.168.1.7", "192.168.1.7", true),
            ("192.168.1.7", "192.168.1.8", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("0.0.0.0/0", "2001:db8::1", false), // an IPv4 prefix never holds IPv6
            ("::/0", "2001:db8::1", true),
            ("::/0", "8.8.8.8", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("::ffff:10.0.0.0/104", "10.1.1.1", true), // a mapped prefix is its IPv4 prefix
            ("::ffff:10.0.0.0/104", "::ffff:10.1.1.1", true),
            ("::ffff:10.0.0.0/104", "11.0.0.1", false),
            ("127.0.0.1", "::ffff:127.0.0.1", true),
        ];
        for (prefix, addr, inside) in table {
            let parsed: IpPrefix = prefix.parse().unwrap();
            assert_eq!(parsed.contains(ip(addr)), *inside, "{prefix} ∋ {addr}");
        }
    }

    #[test]
    fn the_prefix_containing_an_address_clears_its_host_bits() {
        let table: &[(&str, u8, &str)] = &[
            ("2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"),
            ("203.0.113.7", 64, "203.0.113.7/32"), // capped at the address's length
            ("203.0.113.7", 24, "203.0.113.0/24"),
            ("::ffff:203.0.113.7", 32, "203.0.113.7/32"),
            ("2001:db8::1", 0, "::/0"),
        ];
        for (addr, len, expected) in table {
            assert_eq!(IpPrefix::containing(ip(addr), *len).to_string(), *expected);
        }
    }

    #[test]
    fn malformed_prefixes_are_refused() {
        let table: &[(&str, PrefixError)] = &[
            ("localhost", PrefixError::BadAddress("localhost".into())),
            ("10.0.0.0/", PrefixError::BadLength("".into())),
            ("10.0.0.0/+8", PrefixError::BadLength("+8".into())),
            ("10.0.0.0/8/8", PrefixError::BadLength("8/8".into())),
            ("10.0.0.0/300", PrefixError::BadLength("300".into())),
            ("10.0.0.0/33", PrefixError::LengthTooLong { len: 33, max: 32 }),
            ("::/129", PrefixError::LengthTooLong { len: 129, max: 128 }),
        ];
        for (text, expected) in table {
            assert_eq!(text.parse::<IpPrefix>().as_ref(), Err(expected), "{text}");
        }
    }

    #[test]
    fn a_prefix_with_host_bits_set_is_refused_with_the_network_suggested() {
        let error = "10.1.2.3/8"
            .parse::<IpPrefix>()
            .map_err(|error| error.to_string());
        assert_eq!(
            error,
            Err("the address has bits set past the prefix length (did you mean 10.0.0.0/8?)".into())
        );
        assert!("2001:db8::1/32".parse::<IpPrefix>().is_err());
    }
}
