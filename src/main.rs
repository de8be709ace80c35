//! `wschat`: serves the chat (and with `--echo`, the echo endpoint) until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use wschat::config::Config;
use wschat::server::Server;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = Config::parse();
    let mut server = match Server::bind(config) {
        Ok(server) => server,
        Err(error) => {
            log::error!("cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    match server.local_addr() {
        Ok(addr) => log::info!("listening on http://{addr}"),
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
