//! Who may use the web view, and the headers every answer carries.
//!
//! "Loopback" means the listening address: an address of `127.0.0.0/8` or
//! `::1` (or `::ffff:127.x.y.z`), which the kernel delivers only from this
//! host. A listener there needs no token, but answers only requests whose
//! `Host` names a loopback host (`localhost`, `127.x.y.z`, `[::1]`, any port),
//! so a web page elsewhere cannot reach it through a DNS name that it points
//! at 127.0.0.1 (DNS rebinding). An SSH tunnel (`ssh -L 8686:127.0.0.1:8686`)
//! arrives as `localhost:8686` and passes.
//!
//! Any other listening address (`0.0.0.0`, a LAN or namespace address)
//! needs the token: in an `Authorization: Bearer` header, in the
//! `flowsql_token` cookie (HttpOnly, SameSite=Strict) that the page gets
//! when it is opened once as `/?token=...`, and nothing else; without it the
//! answer is 401. Tokens are compared in constant time.
//!
//! Every answer forbids scripts, styles and connections from anywhere but
//! the server itself (Content-Security-Policy), inline scripts included, and
//! framing; requests a browser marks as cross-site are refused.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::WebError;

/// The shortest token accepted from the configuration.
pub const MIN_TOKEN_LEN: usize = 16;

const COOKIE: &str = "flowsql_token";

/// The page's policy: everything from this server only, no inline script or
/// style, no plugins, no framing, no forms posting elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How requests are let in.
#[derive(Debug, Clone)]
pub enum Access {
    /// A loopback listener: requests for a loopback host name.
    Loopback,
    /// Any other listener: requests with this token.
    Token(Token),
}

impl Access {
    /// The access a listener on `address` gets: loopback needs no token;
    /// anything else takes `given`, or a new random token.
    pub fn for_listener(address: SocketAddr, given: Option<&str>) -> Result<Access, WebError> {
        if is_loopback(address.ip()) {
            return Ok(Access::Loopback);
        }
        let token = match given {
            Some(text) => Token::new(text)?,
            None => Token::generate()?,
        };
        Ok(Access::Token(token))
    }
}

/// Whether the kernel delivers connections to `ip` only from this host.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// A secret that lets a request in.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A token from the configuration: long enough not to be guessed, and
    /// of characters that need no escaping in an address or a cookie
    /// (letters, digits, `-`, `_`, `.`, `~`).
    pub fn new(text: &str) -> Result<Token, WebError> {
        let text = text.trim();
        let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        if text.len() < MIN_TOKEN_LEN || !text.bytes().all(plain) {
            return Err(WebError::BadToken);
        }
        Ok(Token(text.to_owned()))
    }

    /// 32 random bytes from the kernel, as 64 hexadecimal digits.
    pub fn generate() -> Result<Token, WebError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(WebError::Random)?;
        Ok(Token(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares without stopping at the first difference.
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        let mut difference = a.len() ^ b.len();
        for (i, byte) in a.iter().enumerate() {
            difference |= usize::from(byte ^ b.get(i).copied().unwrap_or(0));
        }
        difference == 0
    }
}

/// Whether a `Host` header names this machine's loopback: `localhost`,
/// `127.x.y.z` or `[::1]`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, after)) if after.is_empty() || after.starts_with(':') => inside,
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    if name.eq_ignore_ascii_case("localhost") || name.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    name.parse::<IpAddr>().is_ok_and(is_loopback)
}

/// The middleware in front of every route: access, then headers.
pub async fn guard(State(access): State<Access>, request: Request, next: Next) -> Response {
    let mut response = match admit(&access, &request) {
        Admission::Allowed => next.run(request).await,
        Admission::SetCookie(token) => {
            // Keep the token in a cookie and take it out of the address bar.
            let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
            let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Admission::Refused(status, message) => (status, message).into_response(),
    };
    secure_headers(response.headers_mut());
    response
}

enum Admission {
    Allowed,
    SetCookie(String),
    Refused(StatusCode, &'static str),
}

fn admit(access: &Access, request: &Request<Body>) -> Admission {
    let headers = request.headers();
    if headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"cross-site") {
        return Admission::Refused(StatusCode::FORBIDDEN, "flowsql serve answers no cross-site request\n");
    }
    match access {
        Access::Loopback => {
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
            if is_loopback_host(host) {
                Admission::Allowed
            } else {
                Admission::Refused(
                    StatusCode::FORBIDDEN,
                    "this flowsql serve listens on loopback: open it as localhost or 127.0.0.1\n",
                )
            }
        }
        Access::Token(token) => {
            if presented(headers).is_some_and(|given| token.matches(given)) {
                return Admission::Allowed;
            }
            if request.uri().path() == "/"
                && let Some(given) = query_token(request.uri().query())
                && token.matches(given)
            {
                return Admission::SetCookie(token.as_str().to_owned());
            }
            Admission::Refused(
                StatusCode::UNAUTHORIZED,
                "flowsql serve needs its token: open the address it printed (ending in /?token=...)\n",
            )
        }
    }
}

/// The token a request carries in its Authorization header or cookie.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.trim());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE).and_then(|rest| rest.strip_prefix('=')))
}

fn query_token(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|pair| pair.strip_prefix("token="))
}

/// The headers every answer carries.
fn secure_headers(headers: &mut HeaderMap) {
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
        (header::HeaderName::from_static("cross-origin-resource-policy"), "same-origin"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_127_slash_8_and_colon_colon_1() {
        for ip in ["127.0.0.1", "127.0.0.2", "127.255.0.9", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "fe80::1", "::ffff:10.0.0.1"] {
            assert!(!is_loopback(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn loopback_host_names() {
        for host in [
            "localhost",
            "localhost:8686",
            "LOCALHOST:1",
            "127.0.0.1:8686",
            "127.0.0.2",
            "[::1]:8686",
            "[::1]",
            "app.localhost:9",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in
            ["", "evil.test:8686", "127.0.0.1.evil.test", "10.0.0.1:8686", "[::1]x", "localhost.evil.test"]
        {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn tokens() {
        let token = Token::generate().expect("random");
        assert_eq!(token.as_str().len(), 64);
        assert!(token.matches(token.as_str()));
        assert!(!token.matches(&token.as_str()[..63]));
        assert!(!token.matches(""));
        assert_ne!(Token::generate().expect("random").as_str(), token.as_str());
        assert!(Token::new("short").is_err());
        assert!(Token::new("has a space in it, long enough").is_err());
        assert!(Token::new("0123456789abcdef&x=1").is_err());
        assert!(Token::new("0123456789abcdef").is_ok());
    }

    #[test]
    fn non_loopback_listeners_need_a_token() {
        let any: SocketAddr = "0.0.0.0:8686".parse().expect("addr");
        assert!(matches!(Access::for_listener(any, None), Ok(Access::Token(_))));
        let lo: SocketAddr = "127.0.0.1:8686".parse().expect("addr");
        assert!(matches!(Access::for_listener(lo, None), Ok(Access::Loopback)));
    }
}
