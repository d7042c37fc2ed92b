//! The client side of `host serve`'s API, for the commands that talk to a running host
//! (`host deploy`, `host udfs`, `host rollback`, …): where the server is, the token, and a small
//! blocking HTTP/1.1 client over a `TcpStream` (one request per connection).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use sluice_host::server::tenants::DEFAULT_TOKEN_FILE;

use super::serve::default_data_dir;

/// Where the server is and who we are, shared by every client subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The host's API, `http://HOST:PORT`.
    #[arg(
        long,
        env = "SLUICE_SERVER",
        value_name = "URL",
        default_value = "http://127.0.0.1:8470"
    )]
    pub server: String,

    /// The tenant's bearer token. [default: the token file `default.token` in the data
    /// directory, which `host serve` writes on its first start without --config]
    #[arg(
        long,
        env = "SLUICE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// The data directory whose `default.token` to use when no token is given.
    /// [default: $SLUICE_DATA_DIR, else ~/.local/share/sluice]
    #[arg(long, env = "SLUICE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// What went wrong talking to the host.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL is not one this client speaks.
    #[error(
        "the server {url:?} is not an http://HOST:PORT address; give one with --server or SLUICE_SERVER"
    )]
    BadUrl {
        /// The URL.
        url: String,
    },
    /// Nothing listens there.
    #[error(
        "no host is listening on {url}; start one with `host serve`, or point --server / SLUICE_SERVER at the one running"
    )]
    NotRunning {
        /// The URL.
        url: String,
        /// The connection error.
        source: std::io::Error,
    },
    /// The connection broke.
    #[error("talking to the host at {url} failed; is it still running? (`host serve`)")]
    Io {
        /// The URL.
        url: String,
        /// Why.
        source: std::io::Error,
    },
    /// The answer was not HTTP.
    #[error(
        "the host at {url} answered something that is not HTTP; is --server the address of `host serve`?"
    )]
    NotHttp {
        /// The URL.
        url: String,
    },
    /// No token given and no token file.
    #[error(
        "no token: give --token or SLUICE_TOKEN, or start `host serve` without --config once so it writes the default tenant's token to {path}"
    )]
    NoToken {
        /// The token file looked for.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// 401.
    #[error("the token was refused ({error}); {hint}")]
    Unauthorized {
        /// The server's error.
        error: String,
        /// Where the token is.
        hint: String,
    },
    /// Any other error answer.
    #[error("{error} (HTTP {status})\nhint: {hint}")]
    Api {
        /// The status.
        status: u16,
        /// The server's error.
        error: String,
        /// The server's hint.
        hint: String,
    },
}

/// A client of one host, with one tenant's token.
#[derive(Debug, Clone)]
pub struct Client {
    url: String,
    authority: String,
    token: String,
    token_file: Option<PathBuf>,
}

/// An answer: its status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl Client {
    /// The client `args` describe: the server URL checked, the token found.
    pub fn new(args: &ClientArgs) -> Result<Self, ClientError> {
        let url = args.server.trim_end_matches('/').to_string();
        let authority = url
            .strip_prefix("http://")
            .map(|rest| rest.split('/').next().unwrap_or(rest))
            .filter(|a| !a.is_empty())
            .ok_or_else(|| ClientError::BadUrl { url: url.clone() })?;
        let authority = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let (token, token_file) = match &args.token {
            Some(t) => (t.trim().to_string(), None),
            None => {
                let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
                let path = dir.join(DEFAULT_TOKEN_FILE);
                let token =
                    std::fs::read_to_string(&path).map_err(|source| ClientError::NoToken {
                        path: path.clone(),
                        source,
                    })?;
                (token.trim().to_string(), Some(path))
            }
        };
        Ok(Self {
            url,
            authority,
            token,
            token_file,
        })
    }

    /// Send `method path` with `body`; the answer whatever its status, or why there was none.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<Answer, ClientError> {
        let mut stream = TcpStream::connect(self.authority.as_str()).map_err(|source| {
            ClientError::NotRunning {
                url: self.url.clone(),
                source,
            }
        })?;
        let io = |source| ClientError::Io {
            url: self.url.clone(),
            source,
        };
        // Deploys compile before answering: allow for the host's --compile-timeout.
        stream
            .set_read_timeout(Some(Duration::from_secs(600)))
            .map_err(io)?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.authority,
            self.token,
            body.len()
        );
        // The server may answer (413, 401) before taking the whole body: read its answer even
        // when writing fails.
        let written = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body));
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        if answer.is_empty() {
            written.map_err(io)?;
            read.map_err(io)?;
        }
        self.parse(&answer)
    }

    fn parse(&self, answer: &[u8]) -> Result<Answer, ClientError> {
        let not_http = || ClientError::NotHttp {
            url: self.url.clone(),
        };
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(not_http)?;
        let head = std::str::from_utf8(&answer[..split]).map_err(|_| not_http())?;
        let rest = &answer[split + 4..];
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(not_http)?;
        let chunked = lines.any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let body = if chunked {
            dechunk(rest).ok_or_else(not_http)?
        } else {
            rest.to_vec()
        };
        Ok(Answer { status, body })
    }

    /// Send `method path` with `body` and return the JSON of a 2xx answer; any other answer is
    /// a [`ClientError`] with the server's error and hint.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let answer = self.request(method, path, body)?;
        let value: serde_json::Value =
            serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null);
        if (200..300).contains(&answer.status) {
            return Ok((answer.status, value));
        }
        let text = |k: &str| value.get(k).and_then(|v| v.as_str()).map(String::from);
        let error = text("error")
            .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).trim().to_string());
        let hint = text("hint").unwrap_or_default();
        if answer.status == 401 {
            let hint = match &self.token_file {
                Some(path) => format!(
                    "the token was read from {}; the default tenant's token is in that file of the host's data directory (--data-dir)",
                    path.display()
                ),
                None => hint,
            };
            return Err(ClientError::Unauthorized { error, hint });
        }
        Err(ClientError::Api {
            status: answer.status,
            error,
            hint,
        })
    }
}

/// The body of a chunked answer.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}
