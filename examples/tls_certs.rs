//! Writes a throw-away CA and server certificates it signs, for the scripts that test and
//! benchmark TLS (tests/tls, tests/browser, tests/autobahn, bench):
//!
//! ```text
//! cargo run --example tls_certs -- DIR [NAME ...]
//! ```
//!
//! `DIR/ca.pem` is the CA (what clients trust); for each NAME (default `server`), `DIR/NAME.pem`
//! and `DIR/NAME-key.pem` are a certificate for `localhost` and `127.0.0.1` and its key. The same
//! code makes the certificates of the Rust tests (tests/common/certs.rs).

#[path = "../tests/common/certs.rs"]
mod certs;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: tls_certs DIR [NAME ...]");
        return ExitCode::FAILURE;
    };
    let mut names: Vec<String> = args.collect();
    if names.is_empty() {
        names.push("server".to_owned());
    }
    let ca = certs::TestCa::new("wschat test CA");
    let mut files = vec![(dir.join("ca.pem"), ca.pem())];
    for name in &names {
        let issued = ca.issue(name);
        files.push((dir.join(format!("{name}.pem")), issued.cert_pem));
        files.push((dir.join(format!("{name}-key.pem")), issued.key_pem));
    }
    if let Err(error) = std::fs::create_dir_all(&dir) {
        eprintln!("tls_certs: {}: {error}", dir.display());
        return ExitCode::FAILURE;
    }
    for (path, pem) in files {
        if let Err(error) = std::fs::write(&path, pem) {
            eprintln!("tls_certs: {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
