//! `petrel-cni`: run by a container runtime with the `CNI_*` environment and
//! the network configuration on stdin; prints a result or a CNI error JSON
//! on stdout (see the crate docs and README "petrel-cni").
#![deny(unsafe_code)]

use std::io::{Read, Write};
use std::process::ExitCode;

use petrel_cni::config::raw_version;
use petrel_cni::plugin::{connect_petreld, run};
use petrel_cni::spec::{code, is_supported, CniError, Env, LATEST};

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let env = Env::from_vars(|k| std::env::var(k).ok());
    let outcome = env.and_then(|env| {
        if env.command != petrel_cni::spec::Command::Version {
            std::io::stdin().read_to_end(&mut stdin).map_err(|e| {
                CniError::new(code::IO_FAILURE, "cannot read the network configuration from stdin").details(e)
            })?;
        }
        run(&env, &stdin, &connect_petreld)
    });
    // Errors are reported in the version the runtime asked for, if it is one we speak.
    let version = raw_version(&stdin).filter(|v| is_supported(v)).unwrap_or_else(|| LATEST.to_owned());
    let (json, rc) = match outcome {
        Ok(Some(v)) => (Some(v), ExitCode::SUCCESS),
        Ok(None) => (None, ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("petrel-cni: {e}");
            (Some(e.to_json(&version)), ExitCode::FAILURE)
        }
    };
    if let Some(v) = json {
        let mut out = std::io::stdout().lock();
        let text = serde_json::to_string(&v).unwrap_or_else(|_| "{}".to_owned());
        if writeln!(out, "{text}").is_err() {
            return ExitCode::FAILURE;
        }
    }
    rc
}
