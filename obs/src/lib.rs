//! Observability shared by Petrel's daemons (`petreld`, `petrel-ovn`) and
//! the libraries they log from (`petrel-vhost-user`, `petrel-dataplane`).
//!
//! - [`ratelimit`]: [`log_limited!`], a `tracing` event that one call site
//!   emits at most N times per second, with the number it suppressed
//!   carried by the next one it lets through. Anything a pod or a client
//!   can trigger over and over logs through it.
//! - [`logging`]: the `tracing` subscriber of a daemon, with its filter
//!   replaceable at runtime (`petrelctl log-level`).
//! - [`http`]: a minimal HTTP/1.1 server for Prometheus scrapes of
//!   `/metrics`; what it serves is the caller's (encoded with
//!   `prometheus-client`).
//!
//! Nothing here may be called from a PMD's poll loop: logging formats and
//! writes, and the rate limiter reads the clock.
#![deny(unsafe_code)]

pub mod http;
pub mod logging;
pub mod ratelimit;

#[doc(hidden)]
pub use tracing as __tracing;
