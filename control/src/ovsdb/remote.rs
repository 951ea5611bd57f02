//! OVSDB remotes: `unix:PATH`, `tcp:HOST:PORT`, and comma-separated lists of
//! them as in ovn-controller's `ovn-remote`.
//!
//! `ssl:` is recognised and refused with a clear error: TLS needs a
//! certificate setup (ovn-controller's `-p/-c/-C`) that is not implemented
//! yet.

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use super::Error;

/// Default OVSDB port (IANA 6640) when `tcp:HOST` has none.
pub const DEFAULT_PORT: u16 = 6640;

/// One remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `tcp:HOST:PORT` (IPv6 as `tcp:[ADDR]:PORT`), kept as `HOST:PORT`.
    Tcp(String),
}

impl FromStr for Remote {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(Error::BadRemote(s.to_owned()));
            }
            return Ok(Remote::Unix(PathBuf::from(path)));
        }
        if let Some(hp) = s.strip_prefix("tcp:") {
            if hp.is_empty() {
                return Err(Error::BadRemote(s.to_owned()));
            }
            // A port is present when the text after the last ':' is digits and
            // the colon is not inside an IPv6 literal.
            let has_port = match hp.rfind(':') {
                Some(i) => !hp[i..].contains(']') && hp[i + 1..].parse::<u16>().is_ok(),
                None => false,
            };
            let hp = if has_port { hp.to_owned() } else { format!("{hp}:{DEFAULT_PORT}") };
            return Ok(Remote::Tcp(hp));
        }
        if s.starts_with("ssl:") {
            return Err(Error::UnsupportedRemote(s.to_owned()));
        }
        Err(Error::BadRemote(s.to_owned()))
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remote::Unix(p) => write!(f, "unix:{}", p.display()),
            Remote::Tcp(hp) => write!(f, "tcp:{hp}"),
        }
    }
}

/// Parses a comma-separated remote list (`ovn-remote` syntax).
///
/// # Errors
///
/// [`Error::BadRemote`] / [`Error::UnsupportedRemote`] for the first bad
/// entry; an empty list is [`Error::BadRemote`].
pub fn parse_remotes(list: &str) -> Result<Vec<Remote>, Error> {
    let remotes = list.split(',').filter(|s| !s.trim().is_empty()).map(str::parse).collect::<Result<Vec<_>, _>>()?;
    if remotes.is_empty() {
        return Err(Error::BadRemote(list.to_owned()));
    }
    Ok(remotes)
}

/// A connected byte stream to a remote.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Pin<Box<dyn Stream>>;

impl Remote {
    /// Opens a stream to this remote.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] on failure or when `timeout` passes.
    pub async fn connect(&self, timeout: Duration) -> Result<BoxStream, Error> {
        let connect = async {
            Ok::<BoxStream, std::io::Error>(match self {
                Remote::Unix(p) => Box::pin(UnixStream::connect(p).await?),
                Remote::Tcp(hp) => {
                    let s = TcpStream::connect(hp.as_str()).await?;
                    s.set_nodelay(true)?;
                    Box::pin(s)
                }
            })
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(Error::Connect { remote: self.to_string(), reason: e.to_string() }),
            Err(_) => Err(Error::Connect { remote: self.to_string(), reason: format!("timed out after {timeout:?}") }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn test_parse() {
        let r = parse_remotes("unix:/a/b.sock, tcp:10.0.0.1:6642,tcp:[::1]:6641,tcp:[fe80::1],tcp:h").unwrap();
        assert_eq!(
            r,
            vec![
                Remote::Unix("/a/b.sock".into()),
                Remote::Tcp("10.0.0.1:6642".into()),
                Remote::Tcp("[::1]:6641".into()),
                Remote::Tcp("[fe80::1]:6640".into()),
                Remote::Tcp("h:6640".into()),
            ]
        );
        assert!(matches!(parse_remotes("ssl:1.2.3.4:6642"), Err(Error::UnsupportedRemote(_))));
        assert!(matches!(parse_remotes("bogus"), Err(Error::BadRemote(_))));
        assert!(matches!(parse_remotes(""), Err(Error::BadRemote(_))));
    }
}
