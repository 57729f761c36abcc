//! The blocking HTTP client for baton's own API, on `ureq`: what `baton deploy`, `invoke`,
//! `logs`, `graph --server`, `top`, the OTLP exporter and the tests use. Plain HTTP or
//! HTTPS (the Mozilla roots, or a private CA given with [`Client::with_ca_file`]); server
//! URLs as people type them; no redirects followed; a connection per request, as before
//! `ureq` (a pooled connection the server has closed meanwhile would fail a POST, and the
//! peer bench's figures stay comparable); a response body of at most
//! [`MAX_RESPONSE_BYTES`].

use std::path::Path;
use std::time::Duration;
use thiserror::Error;

/// The largest response body read, bytes.
pub const MAX_RESPONSE_BYTES: u64 = 256 << 20;

/// Why a request failed before a response arrived.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The URL is not `http[s]://host[:port]` or `host[:port]`.
    #[error("server URL {0:?}: expected http://HOST[:PORT], https://HOST[:PORT] or HOST:PORT")]
    Url(String),
    /// The CA file could not be read or holds no certificate.
    #[error("CA certificates {path}: {message}")]
    Ca {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// Connecting, securing, sending or reading failed.
    #[error("cannot reach {url}: {cause}")]
    Io {
        /// The server.
        url: String,
        /// The cause (in the message, not chained: it would be printed twice).
        cause: std::io::Error,
    },
    /// The request could not be made, or the response is not HTTP.
    #[error("{url}: bad request or response: {message}")]
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
#[derive(Clone)]
pub struct Client {
    url: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

/// The agent: no redirects, no pooled connections, statuses returned as they are, connect
/// within 10 s, the whole exchange within 120 s, and the TLS roots given.
fn agent(tls: ureq::tls::TlsConfig) -> ureq::Agent {
    agent_within(tls, Duration::from_secs(120))
}

/// [`agent`] with the whole exchange within `total`.
fn agent_within(tls: ureq::tls::TlsConfig, total: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_global(Some(total))
        .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        .build()
        .into()
}

impl Client {
    /// A client for `url` as people type it: `http://host:port`, `https://host:port`,
    /// `host:port`, or any of them without the port (80, or 443 for https), with or without
    /// a trailing `/`; sending `token` if given.
    pub fn new(url: &str, token: Option<String>) -> Result<Client, ClientError> {
        let bad = || ClientError::Url(url.to_owned());
        let trimmed = url.trim();
        let (scheme, rest) = match trimmed.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => ("http", rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => ("https", rest),
            Some(_) => return Err(bad()),
            None => ("http", trimmed),
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ', '\\']) {
            return Err(bad());
        }
        // A port unless one is given (an IPv6 address is bracketed: `[::1]:8080`).
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
                (host, Some(port.parse::<u16>().map_err(|_| bad())?))
            }
            _ => (rest, None),
        };
        let bracketed = host.starts_with('[') && host.ends_with(']');
        if host.is_empty() || (host.contains(':') && !bracketed) {
            return Err(bad());
        }
        let port = port.unwrap_or(if scheme == "https" { 443 } else { 80 });
        Ok(Client {
            url: format!("{scheme}://{host}:{port}"),
            token,
            agent: agent(ureq::tls::TlsConfig::default()),
        })
    }

    /// Trusts the CA certificates in the PEM file at `path` (a private CA) instead of the
    /// Mozilla roots.
    pub fn with_ca_file(mut self, path: &Path) -> Result<Client, ClientError> {
        let failed = |message: String| ClientError::Ca {
            path: path.display().to_string(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
        let mut certificates = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            if let ureq::tls::PemItem::Certificate(certificate) =
                item.map_err(|e| failed(e.to_string()))?
            {
                certificates.push(certificate);
            }
        }
        if certificates.is_empty() {
            return Err(failed("no certificate in the file".into()));
        }
        let roots = ureq::tls::RootCerts::new_with_certs(&certificates);
        self.agent = agent(ureq::tls::TlsConfig::builder().root_certs(roots).build());
        Ok(self)
    }

    /// The same client with each exchange bounded by `total` (connect included) instead of
    /// 120 s, for a sender that must not stall (the OTLP exporter). Plain HTTP only: a
    /// client with a private CA keeps its own agent.
    pub fn within(mut self, total: Duration) -> Client {
        self.agent = agent_within(ureq::tls::TlsConfig::default(), total);
        self
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
        let protocol = |message: String| ClientError::Protocol {
            url: self.url.clone(),
            message,
        };
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("content-type", content_type);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let request = request
            .body(body.to_vec())
            .map_err(|e| protocol(e.to_string()))?;
        let mut response = self.agent.run(request).map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| self.transport(e))?;
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

    /// What a failed exchange was: not reaching, or not securing, the server is I/O (the
    /// CLI's "unreachable"); anything else, a protocol error.
    fn transport(&self, error: ureq::Error) -> ClientError {
        use std::io::ErrorKind;
        let io = |kind: ErrorKind, text: String| ClientError::Io {
            url: self.url.clone(),
            cause: std::io::Error::new(kind, text),
        };
        match error {
            ureq::Error::Io(cause) => ClientError::Io {
                url: self.url.clone(),
                cause,
            },
            ureq::Error::HostNotFound => io(ErrorKind::NotFound, "host not found".into()),
            ureq::Error::ConnectionFailed => {
                io(ErrorKind::ConnectionRefused, "connection failed".into())
            }
            ureq::Error::Timeout(which) => io(ErrorKind::TimedOut, format!("timed out ({which})")),
            e @ (ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_)) => {
                io(ErrorKind::Other, format!("TLS: {e}"))
            }
            ureq::Error::BodyExceedsLimit(limit) => ClientError::Protocol {
                url: self.url.clone(),
                message: format!("response body over {limit} bytes"),
            },
            other => ClientError::Protocol {
                url: self.url.clone(),
                message: other.to_string(),
            },
        }
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
            ("https://example.org", "https://example.org:443"),
            ("HTTPS://example.org:8443/", "https://example.org:8443"),
        ] {
            let client = Client::new(typed, None).unwrap_or_else(|e| panic!("{typed}: {e}"));
            assert_eq!(client.url(), url, "{typed}");
        }
        for wrong in [
            "ftp://nowhere",
            "http://",
            "http://h:port",
            "::1",
            "",
            "a b:1",
            "h:1/x",
        ] {
            let error = Client::new(wrong, None).unwrap_err().to_string();
            assert!(
                error.contains("expected http://HOST[:PORT], https://HOST[:PORT]"),
                "{wrong}: {error}"
            );
        }
    }
}
