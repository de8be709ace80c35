//! `wschat`: serves the chat (and with `--echo`, the echo endpoint) until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use wschat::config::Config;
use wschat::server::Server;

fn main() -> ExitCode {
    let config = Config::parse();
    init_logging(config.trace);
    let mut server = match Server::bind(config) {
        Ok(server) => server,
        Err(error) => {
            log::error!("cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    match server.local_addr() {
        Ok(addr) => log::info!(
            "listening on {}://{addr}",
            if server.is_tls() { "https" } else { "http" }
        ),
        Err(error) => log::warn!("listening (address unknown: {error})"),
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("event loop failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` (default `info`) to stderr; `--trace` adds the wire trace. Trace lines are printed
/// bare, so that frames line up in a terminal.
fn init_logging(trace: bool) {
    use std::io::Write;

    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if trace {
        builder.filter_module(wschat::trace::TARGET, log::LevelFilter::Trace);
    }
    builder.format(|out, record| {
        if record.target() == wschat::trace::TARGET {
            writeln!(out, "{}", record.args())
        } else {
            writeln!(
                out,
                "[{} {:<5} {}] {}",
                out.timestamp_seconds(),
                record.level(),
                record.target(),
                record.args()
            )
        }
    });
    builder.init();
}
