//! Metrics in the Prometheus text exposition format, version 0.0.4: counters, gauges and
//! histograms with labels, rendered for a scrape of `/metrics`.
//!
//! **Why by hand.** The format is a page of rules (Prometheus' "Exposition formats" document; its
//! grammar is Go's `expfmt` parser): `# HELP` and `# TYPE` lines, one sample a line, three escapes in
//! label values, two in help text, and histograms as cumulative `_bucket` series with `_sum` and
//! `_count`. The well-kept crate, `prometheus-client` (the Prometheus project's own), was
//! considered and not taken:
//!
//! - it writes only OpenMetrics text (`application/openmetrics-text`, ending in `# EOF`), not the
//!   0.0.4 format this server is asked to serve;
//! - its metrics are shared between threads (`Arc` around atomics, a `parking_lot` lock in the
//!   registry) and its label sets are derived structs (a proc-macro crate): all of it machinery for
//!   a multi-threaded program, where this server updates its numbers from one thread, by plain
//!   `&mut`;
//! - what it would save is about the size of this module, and this project reads as a textbook of
//!   the formats it speaks.
//!
//! The output is checked against Python's `prometheus_client` parser by `tests/metrics/run.sh`.
//!
//! **Shape.** A [`Registry`] holds families (one name, help, type and list of label names each);
//! a family holds series (one value per combination of label values). Handles ([`Counter`],
//! [`Gauge`], [`Histogram`]) are indices, resolved once, so an update is an index and an add.
//! [`Metrics`] is wschat's own set of families on top of it, with the labels `transport`,
//! `phase`, `status`, `code`, `by`, `reason` and `protocol`. Most are counted where they happen;
//! what the chat counts for itself is copied in when a scrape renders ([`ChatFigures`]).

use std::fmt::Write as _;
use std::time::Duration;

use crate::conn::Wire;

/// The `Content-Type` of a scrape's answer: the 0.0.4 text format, UTF-8 (the charset is what
/// Prometheus' own Go client sends with it).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Most series one family may hold. Every label of this server takes its values from a closed
/// set (enums, HTTP statuses, close codes grouped by range), so this is never reached by design;
/// it stops a label fed from input by mistake from growing the registry without bound.
pub const MAX_SERIES_PER_FAMILY: usize = 256;

/// The kinds of metric the format knows (and that we use; it also has `summary` and `untyped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }

    /// The suffixes of the sample names a family of this kind writes.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            Kind::Counter | Kind::Gauge => &[""],
            Kind::Histogram => &["_bucket", "_sum", "_count"],
        }
    }
}

/// A rule of the format (or of this registry) that a definition or a lookup broke. These are
/// mistakes in our own code, found by the tests, never caused by a client.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsError {
    /// A metric name must match `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    InvalidName(String),
    /// A label name must match `[a-zA-Z_][a-zA-Z0-9_]*`.
    InvalidLabelName(String),
    /// Label names starting with `__` are Prometheus' own; `le` is a histogram's bucket bound.
    ReservedLabelName(String),
    DuplicateLabelName(String),
    /// Two families whose sample names would mix (`x_count` next to a histogram `x`).
    DuplicateName(String),
    /// Histogram bounds must be finite and strictly increasing; `+Inf` is added by the registry.
    InvalidBuckets,
    /// A lookup gave a different number of label values than the family has label names.
    WrongLabelCount {
        family: String,
        expected: usize,
        got: usize,
    },
    /// A lookup asked a family for a kind of metric it does not hold.
    WrongKind {
        family: String,
        kind: Kind,
    },
    /// The family already holds [`MAX_SERIES_PER_FAMILY`] series.
    TooManySeries(String),
    /// A family id from another registry.
    UnknownFamily,
}

impl std::fmt::Display for MetricsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsError::InvalidName(name) => write!(f, "{name:?} is not a valid metric name"),
            MetricsError::InvalidLabelName(name) => write!(f, "{name:?} is not a valid label name"),
            MetricsError::ReservedLabelName(name) => write!(f, "the label name {name:?} is reserved"),
            MetricsError::DuplicateLabelName(name) => write!(f, "the label name {name:?} is given twice"),
            MetricsError::DuplicateName(name) => write!(f, "the metric name {name:?} is taken"),
            MetricsError::InvalidBuckets => f.write_str("bucket bounds must be finite and increasing"),
            MetricsError::WrongLabelCount {
                family,
                expected,
                got,
            } => {
                write!(f, "{family} has {expected} labels, not {got}")
            }
            MetricsError::WrongKind { family, kind } => write!(f, "{family} is not a {}", kind.as_str()),
            MetricsError::TooManySeries(family) => {
                write!(f, "{family} already holds {MAX_SERIES_PER_FAMILY} series")
            }
            MetricsError::UnknownFamily => f.write_str("no such family in this registry"),
        }
    }
}

impl std::error::Error for MetricsError {}

/// A family in a [`Registry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyId(usize);

/// A counter series: only goes up (by whole events, so it is kept as an integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter(SeriesId);

/// A gauge series: a value that goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauge(SeriesId);

/// A histogram series: observations counted into buckets, with their sum and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram(SeriesId);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SeriesId {
    family: usize,
    series: usize,
}

#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    kind: Kind,
    label_names: Vec<String>,
    /// Upper bounds of a histogram's buckets, without the implicit `+Inf`.
    bounds: Vec<f64>,
    series: Vec<Series>,
}

#[derive(Debug)]
struct Series {
    label_values: Vec<String>,
    value: Value,
}

#[derive(Debug)]
enum Value {
    Counter(u64),
    Gauge(f64),
    /// Observations per bucket (not cumulative; the last is `+Inf`), their sum and count.
    Histogram {
        buckets: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

/// Every metric the process exposes.
#[derive(Debug, Default)]
pub struct Registry {
    families: Vec<Family>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn counter_family(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<FamilyId, MetricsError> {
        self.family(name, help, Kind::Counter, labels, &[])
    }

    pub fn gauge_family(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<FamilyId, MetricsError> {
        self.family(name, help, Kind::Gauge, labels, &[])
    }

    /// A histogram family whose buckets have these upper bounds (`le`), plus `+Inf`.
    pub fn histogram_family(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        bounds: &[f64],
    ) -> Result<FamilyId, MetricsError> {
        let increasing = bounds.windows(2).all(|pair| pair[0] < pair[1]);
        if !increasing || bounds.iter().any(|bound| !bound.is_finite()) {
            return Err(MetricsError::InvalidBuckets);
        }
        self.family(name, help, Kind::Histogram, labels, bounds)
    }

    fn family(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[&str],
        bounds: &[f64],
    ) -> Result<FamilyId, MetricsError> {
        if !is_metric_name(name) {
            return Err(MetricsError::InvalidName(name.to_owned()));
        }
        for (i, label) in labels.iter().enumerate() {
            if !is_label_name(label) {
                return Err(MetricsError::InvalidLabelName((*label).to_owned()));
            }
            if label.starts_with("__") || (kind == Kind::Histogram && *label == "le") {
                return Err(MetricsError::ReservedLabelName((*label).to_owned()));
            }
            if labels[..i].contains(label) {
                return Err(MetricsError::DuplicateLabelName((*label).to_owned()));
            }
        }
        // Two families may share neither their name (one HELP and TYPE each) nor a sample name.
        let taken = |other: &Family| {
            other.name == name
                || sample_names(&other.name, other.kind).any(|a| sample_names(name, kind).any(|b| a == b))
        };
        if self.families.iter().any(taken) {
            return Err(MetricsError::DuplicateName(name.to_owned()));
        }
        self.families.push(Family {
            name: name.to_owned(),
            help: help.to_owned(),
            kind,
            label_names: labels.iter().map(|label| (*label).to_owned()).collect(),
            bounds: bounds.to_vec(),
            series: Vec::new(),
        });
        Ok(FamilyId(self.families.len() - 1))
    }

    /// The counter of `family` with these label values (in the order of its label names),
    /// created at zero on first use.
    pub fn counter(&mut self, family: FamilyId, values: &[&str]) -> Result<Counter, MetricsError> {
        self.series(family, Kind::Counter, values).map(Counter)
    }

    pub fn gauge(&mut self, family: FamilyId, values: &[&str]) -> Result<Gauge, MetricsError> {
        self.series(family, Kind::Gauge, values).map(Gauge)
    }

    pub fn histogram(&mut self, family: FamilyId, values: &[&str]) -> Result<Histogram, MetricsError> {
        self.series(family, Kind::Histogram, values).map(Histogram)
    }

    fn series(&mut self, id: FamilyId, kind: Kind, values: &[&str]) -> Result<SeriesId, MetricsError> {
        let family = self.families.get_mut(id.0).ok_or(MetricsError::UnknownFamily)?;
        if family.kind != kind {
            return Err(MetricsError::WrongKind {
                family: family.name.clone(),
                kind,
            });
        }
        if values.len() != family.label_names.len() {
            return Err(MetricsError::WrongLabelCount {
                family: family.name.clone(),
                expected: family.label_names.len(),
                got: values.len(),
            });
        }
        let existing = family
            .series
            .iter()
            .position(|series| series.label_values == values);
        let index = match existing {
            Some(index) => index,
            None if family.series.len() >= MAX_SERIES_PER_FAMILY => {
                return Err(MetricsError::TooManySeries(family.name.clone()));
            }
            None => {
                let value = match kind {
                    Kind::Counter => Value::Counter(0),
                    Kind::Gauge => Value::Gauge(0.0),
                    Kind::Histogram => Value::Histogram {
                        buckets: vec![0; family.bounds.len() + 1],
                        sum: 0.0,
                        count: 0,
                    },
                };
                family.series.push(Series {
                    label_values: values.iter().map(|value| (*value).to_owned()).collect(),
                    value,
                });
                family.series.len() - 1
            }
        };
        Ok(SeriesId {
            family: id.0,
            series: index,
        })
    }

    fn value_mut(&mut self, id: SeriesId) -> Option<&mut Value> {
        let family = self.families.get_mut(id.family)?;
        Some(&mut family.series.get_mut(id.series)?.value)
    }

    /// A counter's value (0 for a handle of another registry).
    pub fn counter_value(&self, counter: Counter) -> u64 {
        let id = counter.0;
        match self
            .families
            .get(id.family)
            .and_then(|family| family.series.get(id.series))
        {
            Some(Series {
                value: Value::Counter(value),
                ..
            }) => *value,
            _ => 0,
        }
    }

    pub fn inc(&mut self, counter: Counter) {
        self.add(counter, 1);
    }

    pub fn add(&mut self, counter: Counter, n: u64) {
        if let Some(Value::Counter(value)) = self.value_mut(counter.0) {
            *value = value.saturating_add(n);
        }
    }

    /// Sets a counter to a total kept elsewhere (a count the chat or the store keeps for itself,
    /// copied in when a scrape renders). A total only grows; a smaller value is ignored, so the
    /// counter never goes down.
    pub fn set_total(&mut self, counter: Counter, total: u64) {
        if let Some(Value::Counter(value)) = self.value_mut(counter.0) {
            *value = (*value).max(total);
        }
    }

    pub fn set(&mut self, gauge: Gauge, to: f64) {
        if let Some(Value::Gauge(value)) = self.value_mut(gauge.0) {
            *value = to;
        }
    }

    /// Adds `delta` (negative to decrease).
    pub fn shift(&mut self, gauge: Gauge, delta: f64) {
        if let Some(Value::Gauge(value)) = self.value_mut(gauge.0) {
            *value += delta;
        }
    }

    /// Counts `value` into the first bucket whose bound is at least `value`. NaN is not counted:
    /// one would make the sum NaN for the rest of the process's life.
    pub fn observe(&mut self, histogram: Histogram, value: f64) {
        if value.is_nan() {
            return;
        }
        let Some(family) = self.families.get_mut(histogram.0.family) else {
            return;
        };
        let bucket = family.bounds.partition_point(|bound| *bound < value);
        let series = family.series.get_mut(histogram.0.series);
        if let Some(Series {
            value: Value::Histogram { buckets, sum, count },
            ..
        }) = series
        {
            if let Some(slot) = buckets.get_mut(bucket) {
                *slot += 1;
            }
            *sum += value;
            *count += 1;
        }
    }

    /// The exposition: every family, in the order they were defined, each with its `# HELP`,
    /// `# TYPE` and samples together (the format requires a family's lines to be contiguous).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for family in &self.families {
            render_family(&mut out, family);
        }
        out
    }
}

fn sample_names<'a>(name: &'a str, kind: Kind) -> impl Iterator<Item = String> + 'a {
    kind.suffixes()
        .iter()
        .map(move |suffix| format!("{name}{suffix}"))
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn render_family(out: &mut String, family: &Family) {
    out.push_str("# HELP ");
    out.push_str(&family.name);
    out.push(' ');
    escape_help(out, &family.help);
    out.push('\n');
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
    for series in &family.series {
        let labels = || {
            family
                .label_names
                .iter()
                .map(String::as_str)
                .zip(series.label_values.iter().map(String::as_str))
        };
        match &series.value {
            Value::Counter(value) => sample(out, &family.name, "", labels(), None, &value.to_string()),
            Value::Gauge(value) => sample(out, &family.name, "", labels(), None, &float(*value)),
            Value::Histogram { buckets, sum, count } => {
                let mut cumulative = 0;
                let bounds = family.bounds.iter().copied().chain([f64::INFINITY]);
                for (bound, observed) in bounds.zip(buckets) {
                    cumulative += observed;
                    let le = float(bound);
                    let count = cumulative.to_string();
                    sample(out, &family.name, "_bucket", labels(), Some(("le", &le)), &count);
                }
                sample(out, &family.name, "_sum", labels(), None, &float(*sum));
                sample(out, &family.name, "_count", labels(), None, &count.to_string());
            }
        }
    }
}

/// One sample line: `name{label="value",...} value`. `extra` is a histogram's `le`, always last.
fn sample<'a>(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
    extra: Option<(&'a str, &'a str)>,
    value: &str,
) {
    out.push_str(name);
    out.push_str(suffix);
    let mut first = true;
    for (label, label_value) in labels.chain(extra) {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(label);
        out.push_str("=\"");
        escape_label_value(out, label_value);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// Label values escape backslash, double quote and line feed.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Help text escapes backslash and line feed (a double quote is itself there).
fn escape_help(out: &mut String, help: &str) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value or bound as Go's `strconv.ParseFloat` reads it: `+Inf`, `-Inf`, `NaN`, or the
/// shortest decimal that reads back as the same `f64` (Rust's `Display` for `f64`).
fn float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        value.to_string()
    }
}

/// How a connection reached us, for the `transport` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Tcp, Transport::Tls];

    pub fn label(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// The phase an open connection is in, for the `phase` label: the phases of `conn::Phase`, with
/// the HTTP phase's long exchanges (an event stream, a parked poll) apart from its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Http,
    EventStream,
    ParkedPoll,
    WebSocket,
    Draining,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Http,
        Phase::EventStream,
        Phase::ParkedPoll,
        Phase::WebSocket,
        Phase::Draining,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Phase::Http => "http",
            Phase::EventStream => "sse",
            Phase::ParkedPoll => "poll",
            Phase::WebSocket => "websocket",
            Phase::Draining => "draining",
        }
    }
}

/// Which side started a WebSocket's closing handshake, for the `by` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Server,
    Client,
}

impl By {
    pub const ALL: [By; 2] = [By::Server, By::Client];

    pub fn label(self) -> &'static str {
        match self {
            By::Server => "server",
            By::Client => "client",
        }
    }
}

/// Why a connection was turned away, for the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-connections` reached.
    MaxConnections,
    /// The client's address holds its share (`conn::per_ip`).
    PerAddress,
    /// The per-address table is full.
    AddressTable,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [
        Refusal::MaxConnections,
        Refusal::PerAddress,
        Refusal::AddressTable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::PerAddress => "per_address",
            Refusal::AddressTable => "address_table",
        }
    }
}

/// Why the server closed a client for its own conduct, for the `reason` label of policy closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyClose {
    /// It did not read what it was sent (`--max-queued-output`): a WebSocket closed with 1008, or
    /// an HTTP session ended with a last `closed` event.
    SlowConsumer,
    /// It went on sending past the rate limit (`--flood-limit`).
    Flood,
}

impl PolicyClose {
    pub const ALL: [PolicyClose; 2] = [PolicyClose::SlowConsumer, PolicyClose::Flood];

    pub fn label(self) -> &'static str {
        match self {
            PolicyClose::SlowConsumer => "slow_consumer",
            PolicyClose::Flood => "flood",
        }
    }
}

/// The `status` label: the status code, or `other` for a number HTTP does not define (RFC 9110
/// §15: three digits, 1xx to 5xx).
pub fn status_label(status: u16) -> String {
    if (100..600).contains(&status) {
        status.to_string()
    } else {
        "other".to_owned()
    }
}

/// The `code` label of a close: the code for those RFC 6455 §7.4.1 and the IANA registry define
/// (1000-1015), `3xxx` and `4xxx` for the registered and private ranges (§7.4.2; a client may send
/// any of 2,000 codes there, one series each would let it grow the registry), `none` for a Close
/// without a code (reported as 1005), `other` for anything else.
pub fn close_code_label(code: Option<u16>) -> String {
    match code {
        None => "none".to_owned(),
        Some(code @ 1000..=1015) => code.to_string(),
        Some(3000..=3999) => "3xxx".to_owned(),
        Some(4000..=4999) => "4xxx".to_owned(),
        Some(_) => "other".to_owned(),
    }
}

/// Bounds of the store-commit histogram, in seconds: a SQLite commit in WAL mode with its fsync
/// takes from about 100 µs (NVMe) to tens of milliseconds (a busy or networked disk); seconds mean
/// trouble. Roughly ×2.5 per step, as Prometheus' own defaults.
pub const COMMIT_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// wschat's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    accepted: [Counter; Transport::ALL.len()],
    refused: [Counter; Refusal::ALL.len()],
    open: [[Gauge; Phase::ALL.len()]; Transport::ALL.len()],
    http_responses: FamilyId,
    rejected: FamilyId,
    closes: FamilyId,
    policy_closes: [Counter; PolicyClose::ALL.len()],
    bytes_in: [Counter; Wire::ALL.len()],
    bytes_out: [Counter; Wire::ALL.len()],
    messages_in: [Counter; Wire::ALL.len()],
    messages_out: [Counter; Wire::ALL.len()],
    chat_accepted: Counter,
    chat_sessions: Gauge,
    chat_rooms: Gauge,
    store_up: Gauge,
    commit: Histogram,
}

/// What the chat and the hub count for themselves, copied into the metrics when a scrape renders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChatFigures {
    /// Chat messages stored and broadcast since the start.
    pub accepted: u64,
    /// Chat sessions open now, whatever carries them.
    pub sessions: usize,
    /// Rooms that exist now.
    pub rooms: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family defined, and every series whose labels are known in advance created at zero
    /// (so a rate over them exists before their first event).
    pub fn new() -> Self {
        // The definitions below are constants, checked by the tests: they cannot fail at run time.
        Self::define().expect("wschat's metric definitions are valid")
    }

    fn define() -> Result<Self, MetricsError> {
        let mut registry = Registry::new();
        let r = &mut registry;
        let accepted = r.counter_family(
            "wschat_connections_accepted_total",
            "Connections accepted, by transport.",
            &["transport"],
        )?;
        let refused = r.counter_family(
            "wschat_connections_refused_total",
            "Connections refused before their first response, by reason.",
            &["reason"],
        )?;
        let open = r.gauge_family(
            "wschat_connections",
            "Connections open now, by transport and phase.",
            &["transport", "phase"],
        )?;
        let http_responses = r.counter_family(
            "wschat_http_responses_total",
            "HTTP responses sent (101 included), by status code.",
            &["status"],
        )?;
        let rejected = r.counter_family(
            "wschat_requests_rejected_total",
            "Requests and handshakes refused with an error status, by status code.",
            &["status"],
        )?;
        let closes = r.counter_family(
            "wschat_websocket_closes_total",
            "WebSocket closing handshakes, by close code and by the side that sent the first Close.",
            &["code", "by"],
        )?;
        let policy_closes = r.counter_family(
            "wschat_policy_closes_total",
            "Chat clients closed for their conduct: too slow to read, or flooding.",
            &["reason"],
        )?;
        let bytes_in = r.counter_family(
            "wschat_received_bytes_total",
            "Socket bytes received, by the protocol they carried (HTTP heads and framing included).",
            &["protocol"],
        )?;
        let bytes_out = r.counter_family(
            "wschat_sent_bytes_total",
            "Socket bytes sent, by the protocol they carried (HTTP heads and framing included).",
            &["protocol"],
        )?;
        let messages_in = r.counter_family(
            "wschat_messages_received_total",
            "Messages received: WebSocket data messages, chat envelopes posted to /send.",
            &["protocol"],
        )?;
        let messages_out = r.counter_family(
            "wschat_messages_sent_total",
            "Messages sent: WebSocket data messages, events on event streams and in poll answers.",
            &["protocol"],
        )?;
        let chat_accepted = r.counter_family(
            "wschat_chat_messages_accepted_total",
            "Chat messages stored and broadcast.",
            &[],
        )?;
        let chat_sessions = r.gauge_family("wschat_chat_sessions", "Chat sessions open now.", &[])?;
        let chat_rooms = r.gauge_family("wschat_chat_rooms", "Chat rooms that exist now.", &[])?;
        let store_up = r.gauge_family(
            "wschat_store_up",
            "1 while the message store works (its last operation succeeded), else 0.",
            &[],
        )?;
        let commit = r.histogram_family(
            "wschat_store_commit_seconds",
            "Time from handing a message to the store to its commit, in seconds.",
            &[],
            &COMMIT_BUCKETS,
        )?;
        let by_wire = |r: &mut Registry, family| each(Wire::ALL, |w| r.counter(family, &[w.name()]));
        let metrics = Self {
            accepted: each(Transport::ALL, |t| r.counter(accepted, &[t.label()]))?,
            refused: each(Refusal::ALL, |why| r.counter(refused, &[why.label()]))?,
            open: each(Transport::ALL, |t| {
                each(Phase::ALL, |p| r.gauge(open, &[t.label(), p.label()]))
            })?,
            policy_closes: each(PolicyClose::ALL, |why| r.counter(policy_closes, &[why.label()]))?,
            bytes_in: by_wire(r, bytes_in)?,
            bytes_out: by_wire(r, bytes_out)?,
            messages_in: by_wire(r, messages_in)?,
            messages_out: by_wire(r, messages_out)?,
            chat_accepted: r.counter(chat_accepted, &[])?,
            chat_sessions: r.gauge(chat_sessions, &[])?,
            chat_rooms: r.gauge(chat_rooms, &[])?,
            store_up: r.gauge(store_up, &[])?,
            commit: r.histogram(commit, &[])?,
            http_responses,
            rejected,
            closes,
            registry,
        };
        Ok(metrics)
    }

    pub fn accepted(&mut self, transport: Transport) {
        self.registry.inc(self.accepted[transport as usize]);
    }

    pub fn refused(&mut self, why: Refusal) {
        self.registry.inc(self.refused[why as usize]);
    }

    /// A connection moved from one phase to another; `None` is "not open": `(None, Some(Http))`
    /// when it is accepted, `(Some(phase), None)` when it is closed.
    pub fn phase_changed(&mut self, transport: Transport, from: Option<Phase>, to: Option<Phase>) {
        let gauges = self.open[transport as usize];
        if let Some(from) = from {
            self.registry.shift(gauges[from as usize], -1.0);
        }
        if let Some(to) = to {
            self.registry.shift(gauges[to as usize], 1.0);
        }
    }

    /// A response went out (its status counted; an error status also counts as a rejection).
    pub fn http_response(&mut self, status: u16) {
        let label = status_label(status);
        // A closed set of values (see `status_label`): the lookup cannot hit the series limit.
        if let Ok(counter) = self.registry.counter(self.http_responses, &[&label]) {
            self.registry.inc(counter);
        }
        if status >= 400
            && let Ok(counter) = self.registry.counter(self.rejected, &[&label])
        {
            self.registry.inc(counter);
        }
    }

    /// A WebSocket's closing handshake, with the code of the first Close (`None`: it had none).
    pub fn websocket_closed(&mut self, code: Option<u16>, by: By) {
        let label = close_code_label(code);
        if let Ok(counter) = self.registry.counter(self.closes, &[&label, by.label()]) {
            self.registry.inc(counter);
        }
    }

    pub fn policy_close(&mut self, why: PolicyClose) {
        self.registry.inc(self.policy_closes[why as usize]);
    }

    pub fn bytes_received(&mut self, wire: Wire, len: usize) {
        self.registry.add(self.bytes_in[wire as usize], len as u64);
    }

    pub fn bytes_sent(&mut self, wire: Wire, len: usize) {
        self.registry.add(self.bytes_out[wire as usize], len as u64);
    }

    pub fn messages_received(&mut self, wire: Wire, count: usize) {
        self.registry.add(self.messages_in[wire as usize], count as u64);
    }

    pub fn messages_sent(&mut self, wire: Wire, count: usize) {
        self.registry.add(self.messages_out[wire as usize], count as u64);
    }

    pub fn store_commit(&mut self, latency: Duration) {
        self.registry.observe(self.commit, latency.as_secs_f64());
    }

    pub fn store_up(&mut self, up: bool) {
        self.registry.set(self.store_up, if up { 1.0 } else { 0.0 });
    }

    /// Copies in what the chat counts for itself.
    pub fn chat(&mut self, figures: ChatFigures) {
        self.registry.set_total(self.chat_accepted, figures.accepted);
        self.registry.set(self.chat_sessions, figures.sessions as f64);
        self.registry.set(self.chat_rooms, figures.rooms as f64);
    }

    /// Socket bytes received and sent so far for `wire`.
    pub fn wire_bytes(&self, wire: Wire) -> (u64, u64) {
        (
            self.registry.counter_value(self.bytes_in[wire as usize]),
            self.registry.counter_value(self.bytes_out[wire as usize]),
        )
    }

    /// Socket bytes so far, received and sent, by protocol: one line for the log at shutdown
    /// (`http 1234/5678, websocket ...`).
    pub fn wire_summary(&self) -> String {
        Wire::ALL
            .iter()
            .map(|wire| {
                let (received, sent) = self.wire_bytes(*wire);
                format!("{} {received}/{sent}", wire.name())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The body of a scrape (serve it with [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        self.registry.render()
    }

    /// The registry, to define further families.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }
}

/// `make` applied to every item of `items`, as an array, or the first error.
fn each<T: Copy, U, const N: usize>(
    items: [T; N],
    mut make: impl FnMut(T) -> Result<U, MetricsError>,
) -> Result<[U; N], MetricsError> {
    let mut made = Vec::with_capacity(N);
    for item in items {
        made.push(make(item)?);
    }
    made.try_into().map_err(|_| MetricsError::UnknownFamily)
}

#[cfg(test)]
mod tests;
