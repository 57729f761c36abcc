//! Who may call the API: the bearer token compared in constant time, and requests from a
//! browser on another site refused (a loopback server's host checked against DNS
//! rebinding).

use super::*;

/// Whether two secrets are equal, in a time that depends on their lengths only.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut differ = u8::from(given.len() != expected.len());
    for (i, &e) in expected.iter().enumerate() {
        differ |= e ^ given.get(i).copied().unwrap_or(!e);
    }
    differ == 0
}

/// The token of an `Authorization` value `<scheme> <token>` whose scheme is `Bearer` in
/// any case (RFC 9110: schemes are case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim_start())
}

/// Whether a `Host` (or an origin's host) names this machine's loopback: `localhost`,
/// `127.x.y.z` or `[::1]`, with any port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Why a request to a server without a token looks like a browser page's (another
/// site's, or a DNS-rebound name's), if it does: its `Host` or `Origin` is not a loopback
/// name, or it is a POST a page may send without asking (no content type, or a form's or
/// plain text's). Such a server listens on loopback only, so its clients name loopback.
fn browser_refusal(request: &Request) -> Option<String> {
    let headers = request.headers();
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if let Some(host) = text(header::HOST) {
        if !loopback_host(host) {
            return Some(
                "this server has no token and answers loopback names only (Host: localhost, \
                 127.0.0.1 or [::1])"
                    .into(),
            );
        }
    }
    if let Some(origin) = text(header::ORIGIN) {
        let host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if !host.is_some_and(loopback_host) {
            return Some(
                "this server has no token and takes no request from another site's page \
                 (Origin)"
                    .into(),
            );
        }
    }
    if request.method() == axum::http::Method::POST {
        let content_type = text(header::CONTENT_TYPE)
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let simple = matches!(
            content_type.as_str(),
            "" | "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
        );
        if simple {
            return Some(
                "this server has no token, so a POST must say what it carries with a content \
                 type a web page cannot send unasked (application/json, \
                 application/octet-stream, application/x-ndjson, application/x-protobuf)"
                    .into(),
            );
        }
    }
    None
}

/// Requires `Authorization: Bearer <token>` when the server has a token; without one (a
/// loopback server), refuses what a browser page could send it ([`browser_refusal`]).
pub(super) async fn auth(State(state): State<Shared>, request: Request, next: Next) -> Response {
    if state.token.is_none() {
        if let Some(refusal) = browser_refusal(&request) {
            return error(StatusCode::FORBIDDEN, refusal);
        }
    }
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        if !given.is_some_and(|given| same_secret(given.as_bytes(), token.as_bytes())) {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer <token>)",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}
