//! A small blocking HTTP/1.1 client for baton's own API (plain HTTP, one request per
//! connection): what `baton deploy`, `invoke`, `logs`, `graph --server`, `top` and the
//! tests use. No TLS: put a proxy in front of a server that leaves the host.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;
use thiserror::Error;

/// Why a request failed before a response arrived.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The URL is not `http://host[:port]` or `host[:port]`.
    #[error("server URL {0:?}: expected http://HOST[:PORT] or HOST:PORT (plain HTTP; for a server behind TLS, talk to it through a local proxy)")]
    Url(String),
    /// Connecting, sending or reading failed.
    #[error("{url}: {source}")]
    Io {
        /// The server.
        url: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The response is not HTTP.
    #[error("{url}: bad response: {message}")]
    Protocol {
        /// The server.
        url: String,
        /// What was wrong.
        message: String,
    },
}

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A client for one server.
#[derive(Debug, Clone)]
pub struct Client {
    url: String,
    addr: SocketAddr,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// A client for `url` as people type it: `http://host:port`, `host:port`, or either
    /// without the port (80), with or without a trailing `/`; sending `token` if given.
    pub fn new(url: &str, token: Option<String>) -> Result<Client, ClientError> {
        let bad = || ClientError::Url(url.to_owned());
        let trimmed = url.trim();
        let rest = match trimmed.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some(_) => return Err(bad()),
            None => trimmed,
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
            return Err(bad());
        }
        // A port unless one is given (an IPv6 address is bracketed: `[::1]:8080`).
        let has_port = match rest.rsplit_once(':') {
            Some((host, port)) => {
                (!host.contains(':') || host.ends_with(']')) && port.parse::<u16>().is_ok()
            }
            None => false,
        };
        let rest = if has_port {
            rest.to_owned()
        } else {
            format!("{rest}:80")
        };
        let addr = rest
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(bad)?;
        Ok(Client {
            url: format!("http://{rest}"),
            addr,
            token,
            timeout: Duration::from_secs(120),
        })
    }

    /// The server URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `method path` with `body` of `content_type`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Response, ClientError> {
        self.request_with_headers(method, path, content_type, &[], body)
    }

    /// [`Client::request`] with `extra` headers (name, value).
    pub fn request_with_headers(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, ClientError> {
        if let Some((name, _)) = extra
            .iter()
            .find(|(n, v)| n.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']))
        {
            return Err(ClientError::Protocol {
                url: self.url.clone(),
                message: format!("header {name:?}: a line break or colon in a header"),
            });
        }
        let io = |source| ClientError::Io {
            url: self.url.clone(),
            source,
        };
        let mut stream =
            TcpStream::connect_timeout(&self.addr, Duration::from_secs(10)).map_err(io)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(token) = &self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (name, value) in extra {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).map_err(io)?;
        stream.write_all(body).map_err(io)?;
        let mut reader = BufReader::new(stream);
        let protocol = |message: String| ClientError::Protocol {
            url: self.url.clone(),
            message,
        };
        let mut line = String::new();
        reader.read_line(&mut line).map_err(io)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| protocol(format!("status line {line:?}")))?;
        let mut headers = Vec::new();
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(io)? == 0 || line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
                if name == "content-length" {
                    length = value.parse::<usize>().ok();
                }
                if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
                headers.push((name, value));
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                reader.read_line(&mut line).map_err(io)?;
                let size = usize::from_str_radix(line.trim(), 16)
                    .map_err(|_| protocol(format!("chunk size {line:?}")))?;
                if size == 0 {
                    break;
                }
                let start = body.len();
                body.resize(start + size, 0);
                reader.read_exact(&mut body[start..]).map_err(io)?;
                line.clear();
                reader.read_line(&mut line).map_err(io)?;
            }
        } else if let Some(length) = length {
            body.resize(length, 0);
            reader.read_exact(&mut body).map_err(io)?;
        } else {
            reader.read_to_end(&mut body).map_err(io)?;
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Response, ClientError> {
        self.request("GET", path, "application/json", b"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_taken_as_people_type_them() {
        for (typed, url) in [
            ("http://127.0.0.1:18080", "http://127.0.0.1:18080"),
            ("http://127.0.0.1:18080/", "http://127.0.0.1:18080"),
            ("127.0.0.1:18080", "http://127.0.0.1:18080"),
            ("localhost:18080", "http://localhost:18080"),
            ("HTTP://localhost", "http://localhost:80"),
            ("localhost", "http://localhost:80"),
            ("[::1]:9000", "http://[::1]:9000"),
        ] {
            let client = Client::new(typed, None).unwrap_or_else(|e| panic!("{typed}: {e}"));
            assert_eq!(client.url(), url, "{typed}");
        }
        for wrong in [
            "ftp://nowhere",
            "https://example.org",
            "http://",
            "",
            "a b:1",
            "h:1/x",
        ] {
            let error = Client::new(wrong, None).unwrap_err().to_string();
            assert!(
                error.contains("expected http://HOST[:PORT]"),
                "{wrong}: {error}"
            );
        }
    }
}
