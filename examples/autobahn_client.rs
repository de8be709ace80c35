//! wschat as the client under test of Autobahn|Testsuite's fuzzing server (`wstest -m
//! fuzzingserver`): asks how many cases there are, runs each one (echoing every text and binary
//! message back, offering permessage-deflate), then has the server write its reports.
//!
//! ```sh
//! tests/autobahn/run-client.sh        # starts the fuzzing server, runs this, judges the report
//! cargo run --release --example autobahn_client -- ws://127.0.0.1:9001
//! ```
//!
//! The session code is `wschat-client`'s ([`wschat_client::Session`]): this file only adds the
//! fuzzing server's three endpoints.
#![allow(clippy::disallowed_methods)] // A program at the I/O edge: it reads the clock itself.

use std::io;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use wschat::ws::protocol::{Config, Event, Limits, State, Timeouts};

#[allow(dead_code)] // Its command line and stdin loop are not used here.
#[path = "../src/bin/wschat-client.rs"]
mod wschat_client;

use wschat_client::{Options, Session};

/// The agent name the reports are filed under.
const AGENT: &str = "wschat";

fn main() -> ExitCode {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".into());
    match run_all(base.trim_end_matches('/')) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("autobahn_client: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_all(base: &str) -> io::Result<()> {
    let count = case_count(base)?;
    eprintln!("autobahn_client: {count} cases");
    let started = Instant::now();
    for case in 1..=count {
        // A case's failure is the report's business, not a reason to stop.
        if let Err(error) = run_case(base, case) {
            eprintln!("autobahn_client: case {case}: {error}");
        }
        if case % 50 == 0 {
            eprintln!("autobahn_client: {case}/{count} in {:.0?}", started.elapsed());
        }
    }
    let mut session = Session::connect(&format!("{base}/updateReports?agent={AGENT}"), &options())?;
    run_until_closed(&mut session, |_, _| {})
}

/// How we connect for every case: deflate offered and used for every message we echo; limits
/// high enough for the 16 MiB messages and the many-fragment cases of section 9.
fn options() -> Options {
    Options {
        offer_deflate: true,
        deflate_threshold: 0,
        config: Config {
            limits: Limits {
                max_frame_size: 16 << 20,
                max_message_size: 16 << 20,
                max_fragments: 1_000_000,
            },
            timeouts: Timeouts {
                ping_interval: None,
                idle_timeout: None,
                close_timeout: Duration::from_secs(5),
            },
        },
        trace: false,
    }
}

/// `/getCaseCount` answers with one text message: the number of cases.
fn case_count(base: &str) -> io::Result<usize> {
    let mut session = Session::connect(&format!("{base}/getCaseCount"), &options())?;
    let mut count = None;
    run_until_closed(&mut session, |event, _| {
        if let Event::Text(text) = event {
            count = text.trim().parse().ok();
        }
    })?;
    count.ok_or_else(|| io::Error::other("getCaseCount sent no number"))
}

/// `/runCase` sends the case's frames; we echo every message.
fn run_case(base: &str, case: usize) -> io::Result<()> {
    let mut session = Session::connect(&format!("{base}/runCase?case={case}&agent={AGENT}"), &options())?;
    run_until_closed(&mut session, |event, sender| {
        let _ = match event {
            Event::Text(text) => sender.send_text(text),
            Event::Binary(data) => sender.send_binary(data),
            _ => Ok(()),
        };
    })
}

fn run_until_closed(
    session: &mut Session,
    mut on_event: impl FnMut(Event<'_>, &mut wschat::ws::protocol::Sender<'_>),
) -> io::Result<()> {
    while session.conn.state() != State::Closed {
        session.pump(&mut on_event)?;
    }
    session.wait_for_eof(Duration::from_secs(5))
}
