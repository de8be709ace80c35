//! Append throughput and latency of the SQLite message store, the way the event loop uses it.
//!
//! A closed loop keeps `--in-flight` messages outstanding: each time the store wakes it, the loop
//! collects the answers and submits as many new messages as were answered, in one `submit` (one
//! loop turn). Latency is from that submit to the answer, so it includes waiting for the commit
//! in progress and the fsync of its own.
//!
//! ```text
//! cargo run --release --example store_bench -- --db /tmp/bench.db --in-flight 1,16,256
//! cargo run --release --example store_bench -- --db :memory:
//! ```
#![allow(clippy::disallowed_methods)] // A program at the I/O edge: it measures time itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use wschat::store::sqlite::{SqliteOptions, SqliteStore};
use wschat::store::{Command, IdempotencyKey, NewMessage, Outcome, Token};

#[derive(Parser, Debug)]
struct Args {
    /// Database file (`:memory:` keeps nothing). An existing store is appended to.
    #[arg(long, default_value = ":memory:")]
    db: PathBuf,
    /// Messages to append per run.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Messages outstanding at once, one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    in_flight: Vec<u64>,
    /// Characters of text per message.
    #[arg(long, default_value_t = 100)]
    text_len: usize,
    /// Rooms the messages are spread over.
    #[arg(long, default_value_t = 10)]
    rooms: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    println!(
        "store {}: {} messages of {} characters per run",
        args.db.display(),
        args.messages,
        args.text_len
    );
    for &in_flight in &args.in_flight {
        run(&args, in_flight.max(1))?;
    }
    Ok(())
}

fn run(args: &Args, in_flight: u64) -> Result<(), Box<dyn std::error::Error>> {
    let (wake, woken) = mpsc::channel();
    let (mut store, _) = SqliteStore::open(
        &args.db,
        SqliteOptions::default(),
        Box::new(move || {
            let _ = wake.send(());
        }),
    )?;
    let text = "x".repeat(args.text_len);
    // Keys make every message carry the exactly-once check the chat will use.
    let run_id = Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id());
    let new_message = |token: Token| -> Result<NewMessage, Box<dyn std::error::Error>> {
        Ok(NewMessage {
            token,
            room: format!("room-{}", token % args.rooms),
            nickname: "bench".to_owned(),
            text: text.clone(),
            ts: token,
            key: Some(IdempotencyKey::new(format!("{run_id:x}-{token}"))?),
            lease: None,
        })
    };

    let started = Instant::now();
    let mut submitted_at: HashMap<Token, Instant> = HashMap::new();
    let mut latencies: Vec<Duration> = Vec::with_capacity(args.messages as usize);
    let mut next: Token = 0;
    let mut failed = 0;
    while latencies.len() + failed < args.messages as usize {
        let mut batch = Vec::new();
        while next < args.messages && (submitted_at.len() + batch.len()) < in_flight as usize {
            batch.push(new_message(next)?);
            next += 1;
        }
        if !batch.is_empty() {
            let now = Instant::now();
            submitted_at.extend(batch.iter().map(|message| (message.token, now)));
            store.submit(vec![Command::Append(batch)])?;
        }
        woken.recv_timeout(Duration::from_secs(30))?;
        for outcome in store.try_results() {
            let Outcome::Append { token, result } = outcome else {
                continue;
            };
            match (result, submitted_at.remove(&token)) {
                (Ok(_), Some(at)) => latencies.push(at.elapsed()),
                _ => failed += 1,
            }
        }
    }
    let elapsed = started.elapsed();
    let stats = store.stats();
    store.close()?;

    latencies.sort();
    let percentile =
        |p: usize| latencies.get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)));
    let ms = |latency: Option<&Duration>| latency.map_or(f64::NAN, |latency| latency.as_secs_f64() * 1000.0);
    println!(
        "in flight {in_flight:>4}: {:>8.0} appends/s, {:>6.1} messages/commit ({} commits, largest {}), \
         latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms, {failed} failed",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        stats.messages as f64 / stats.commits.max(1) as f64,
        stats.commits,
        stats.largest_commit,
        ms(percentile(50)),
        ms(percentile(99)),
        ms(latencies.last()),
    );
    Ok(())
}
