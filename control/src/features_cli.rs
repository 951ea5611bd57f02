//! `petrelctl qos`, `petrelctl mirror` and `petrelctl capture`: the
//! command-line side of petreld's per-port features (policers, local
//! mirrors, packet capture). The protocol is
//! [`petrel_dataplane::ctl::features`].

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use petrel_dataplane::capture::{write_pcap_header, write_pcap_record};
use petrel_dataplane::ctl::features::{
    render_mirrors, render_qos, unhex, CaptureRequest, Direction, MirrorRequest, QosRequest,
};
use petrel_dataplane::ctl::{Client, ClientError};
use petrel_dataplane::qos::{parse_si, PortQos, RateSpec, Unit};

/// `petrelctl qos ...`.
#[derive(Debug, Subcommand)]
pub enum QosCmd {
    /// Set a port's policers (live: no port flap, conforming traffic is
    /// not lost). Rates in bit/s (or packet/s with --pps), SI suffixes
    /// allowed: 1500, 10k, 2.5M, 1G. A direction not given is left as it is.
    Set {
        /// Port name.
        port: String,
        /// Limit what the port sends petreld (the pod's transmit).
        #[arg(long, value_name = "RATE")]
        ingress_rate: Option<String>,
        /// Limit what petreld sends the port (the pod's receive).
        #[arg(long, value_name = "RATE")]
        egress_rate: Option<String>,
        /// Bucket size in bits (or packets with --pps); default 100 ms at
        /// the rate, at least two 1518-byte frames (32 packets).
        #[arg(long, value_name = "SIZE")]
        burst: Option<String>,
        /// Rates and burst count packets, not bits.
        #[arg(long)]
        pps: bool,
    },
    /// Clear a port's policers set with `qos set` (OVN's then apply).
    Clear {
        /// Port name.
        port: String,
        /// Only this side.
        #[arg(long, value_enum, default_value_t = DirArg::Both)]
        direction: DirArg,
    },
    /// Policers of every port, where they come from, and what they dropped.
    Show,
}

/// A direction on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DirArg {
    /// What the port sends petreld.
    Ingress,
    /// What petreld sends the port.
    Egress,
    /// Both.
    Both,
}

impl From<DirArg> for Direction {
    fn from(d: DirArg) -> Self {
        match d {
            DirArg::Ingress => Direction::Ingress,
            DirArg::Egress => Direction::Egress,
            DirArg::Both => Direction::Both,
        }
    }
}

/// `petrelctl mirror ...`.
#[derive(Debug, Subcommand)]
pub enum MirrorCmd {
    /// Copy SRC's traffic to DST (a local port).
    Add {
        /// Mirrored port.
        src: String,
        /// Port the copies go out of.
        dst: String,
        /// ingress: what SRC sends petreld; egress: what petreld sends SRC.
        #[arg(long, value_enum, default_value_t = DirArg::Both)]
        direction: DirArg,
    },
    /// Remove SRC's mirrors (only the one to DST, if given).
    Del {
        /// Mirrored port.
        src: String,
        /// Destination.
        dst: Option<String>,
    },
    /// List mirrors (local, and remote ones from OVN) and the copies they made.
    List,
}

/// `petrelctl capture PORT [-c N] -w FILE`.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Port name.
    pub port: String,
    /// Stop after this many frames.
    #[arg(short = 'c', value_name = "N")]
    pub count: Option<u64>,
    /// pcap file to write, `-` for standard output (`| tcpdump -r -`).
    #[arg(short = 'w', value_name = "FILE")]
    pub write: PathBuf,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Which side of the port.
    #[arg(long, value_enum, default_value_t = DirArg::Both)]
    pub direction: DirArg,
    /// Bytes kept of each frame.
    #[arg(short = 's', long, value_name = "BYTES")]
    pub snaplen: Option<usize>,
}

fn arg_err(e: String) -> ClientError {
    ClientError::Protocol(e)
}

/// Runs a `qos` command; returns what to print.
///
/// # Errors
/// Bad arguments, or petreld's.
pub fn qos(c: &mut Client, json: bool, cmd: &QosCmd) -> Result<String, ClientError> {
    let req = match cmd {
        QosCmd::Set { port, ingress_rate, egress_rate, burst, pps } => {
            let unit = if *pps { Unit::Packets } else { Unit::Bits };
            let burst = burst.as_deref().map(parse_si).transpose().map_err(arg_err)?;
            let spec = |r: &Option<String>| -> Result<Option<RateSpec>, ClientError> {
                r.as_deref().map(|r| Ok(RateSpec { rate: parse_si(r).map_err(arg_err)?, burst, unit })).transpose()
            };
            let qos = PortQos { ingress: spec(ingress_rate)?, egress: spec(egress_rate)? };
            if qos.is_empty() {
                return Err(arg_err("qos set: give --ingress-rate and/or --egress-rate".into()));
            }
            QosRequest::Set { port: port.clone(), qos }
        }
        QosCmd::Clear { port, direction } => QosRequest::Clear { port: port.clone(), direction: (*direction).into() },
        QosCmd::Show => QosRequest::Show,
    };
    let r = c.qos(req)?;
    if json {
        return serde_json::to_string_pretty(&r).map(|s| s + "\n").map_err(|e| ClientError::Protocol(e.to_string()));
    }
    Ok(render_qos(&r))
}

/// Runs a `mirror` command; returns what to print.
///
/// # Errors
/// petreld's.
pub fn mirror(c: &mut Client, json: bool, cmd: &MirrorCmd) -> Result<String, ClientError> {
    let req = match cmd {
        MirrorCmd::Add { src, dst, direction } => {
            MirrorRequest::Add { src: src.clone(), dst: dst.clone(), direction: (*direction).into() }
        }
        MirrorCmd::Del { src, dst } => MirrorRequest::Del { src: src.clone(), dst: dst.clone() },
        MirrorCmd::List => MirrorRequest::List,
    };
    let r = c.mirror(req)?;
    if json {
        return serde_json::to_string_pretty(&r).map(|s| s + "\n").map_err(|e| ClientError::Protocol(e.to_string()));
    }
    Ok(render_mirrors(&r))
}

/// Runs a capture until `-c` frames, `--duration`, or SIGINT/SIGTERM (or
/// a closed pipe), writing pcap as frames arrive; returns the summary
/// (printed on standard error, so `-w -` stays a clean pcap stream).
///
/// # Errors
/// Bad arguments, the output, or petreld's.
pub fn capture(c: &mut Client, a: &CaptureArgs) -> Result<String, ClientError> {
    let io = |e: std::io::Error| ClientError::Protocol(format!("writing {}: {e}", a.write.display()));
    let mut out: Box<dyn Write> = if a.write.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(std::fs::File::create(&a.write).map_err(io)?))
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook_consts::SIGINT, signal_hook_consts::SIGTERM] {
        let _ = signal_flag(sig, &stop);
    }
    let start =
        c.capture(CaptureRequest::Start { port: a.port.clone(), direction: a.direction.into(), snaplen: a.snaplen })?;
    let id = start.id;
    let deadline = a.duration.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut n = 0u64;
    let mut dropped = 0;
    let mut reader_gone = false;
    let result = (|| -> Result<(), ClientError> {
        write_pcap_header(&mut out, u32::try_from(start.snaplen).unwrap_or(u32::MAX)).map_err(io)?;
        out.flush().map_err(io)?;
        while a.count.is_none_or(|c| n < c)
            && deadline.is_none_or(|d| Instant::now() < d)
            && !stop.load(std::sync::atomic::Ordering::Relaxed)
        {
            let want = a.count.map_or(256, |c| usize::try_from(c - n).unwrap_or(256).min(256));
            let r = c.capture(CaptureRequest::Read { id, max: want, wait_ms: 200 })?;
            dropped = r.dropped;
            for p in r.packets {
                if a.count.is_some_and(|c| n >= c) {
                    break;
                }
                let data = unhex(&p.data).map_err(arg_err)?;
                if let Err(e) = write_pcap_record(&mut out, p.ns, p.orig_len, &data) {
                    return gone(e, &mut reader_gone).map_err(io);
                }
                n += 1;
            }
            if let Err(e) = out.flush() {
                return gone(e, &mut reader_gone).map_err(io);
            }
        }
        Ok(())
    })();
    let stopped = c.capture(CaptureRequest::Stop { id });
    result?;
    if let Ok(s) = stopped {
        dropped = s.dropped;
    }
    let end = if reader_gone { " (the reader went away)" } else { "" };
    Ok(format!("{n} packets captured on {}, {dropped} not captured (ring full){end}\n", a.port))
}

/// A reader that went away (`| head`, tshark done) ends the capture as
/// tcpdump's does: quietly. Other write errors are errors.
fn gone(e: std::io::Error, flag: &mut bool) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        *flag = true;
        return Ok(());
    }
    Err(e)
}

/// Signal numbers (Linux), without a libc dependency here.
mod signal_hook_consts {
    pub const SIGINT: i32 = 2;
    pub const SIGTERM: i32 = 15;
}

/// Sets `flag` when signal `sig` arrives (tokio is not running in
/// petrelctl; a plain handler thread is enough).
fn signal_flag(sig: i32, flag: &std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::io::Result<()> {
    let flag = std::sync::Arc::clone(flag);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name(format!("sig{sig}")).spawn(move || {
        rt.block_on(async move {
            let kind = tokio::signal::unix::SignalKind::from_raw(sig);
            if let Ok(mut s) = tokio::signal::unix::signal(kind) {
                s.recv().await;
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
    })?;
    Ok(())
}
