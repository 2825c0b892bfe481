//! Browser access: grpc-web (binary and text) on the same port as native
//! gRPC, and the CORS policy that lets a page from another origin call it.
//!
//! Browsers cannot speak native gRPC (no trailers over fetch), so tonic-web
//! translates grpc-web requests; native gRPC requests pass through
//! untouched. The CORS layer sits outside it and answers preflights itself;
//! requests without an `Origin` (not from a browser) bypass it.
//!
//! The policy is an allow-list: a request from an origin not on it gets a
//! normal response with no `access-control-allow-origin`, which the browser
//! turns into a failed call. There is deliberately no wildcard and no
//! reflection of the request's origin: every call carries a bearer token,
//! and a page the operator did not list must not be able to use one.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, request::Parts};
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};

/// Request headers a grpc-web client sends (connect-web and grpc-web alike).
pub const ALLOWED_REQUEST_HEADERS: [&str; 6] = [
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "x-request-id",
];

/// Response headers a browser script must be able to read to see how a call
/// ended (grpc-web may send the status in headers for trailers-only answers).
pub const EXPOSED_RESPONSE_HEADERS: [&str; 4] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "x-request-id",
];

/// How long a browser may cache a preflight answer.
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Which web origins may call the API from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsPolicy {
    /// Exact origins (`scheme://host[:port]`), as browsers send them.
    pub origins: Vec<String>,
    /// Also allow any `http(s)://localhost`, `127.0.0.1` or `[::1]` origin,
    /// whatever the port (`--dev`: the Vite dev server picks its own port).
    pub allow_localhost: bool,
}

impl CorsPolicy {
    /// Whether a browser page at `origin` may call the API.
    pub fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == origin) || (self.allow_localhost && is_localhost(origin))
    }

    /// True when no browser origin may call the API (CORS is then off).
    pub fn is_closed(&self) -> bool {
        self.origins.is_empty() && !self.allow_localhost
    }
}

/// Validates one configured origin: `http` or `https`, a host, an optional
/// port, nothing else (no path, no trailing slash, no wildcard). Returns it
/// lower-cased, the form browsers send.
pub fn parse_origin(raw: &str) -> Result<String, String> {
    let origin = raw.trim().to_ascii_lowercase();
    let advice = "expected an origin like https://app.example.com or http://localhost:5173";
    if origin == "*" || origin.contains('*') {
        return Err(format!(
            "CORS origin {raw:?}: wildcards are not allowed; list each origin ({advice})"
        ));
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err(format!("CORS origin {raw:?}: no scheme; {advice}"));
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "CORS origin {raw:?}: scheme must be http or https; {advice}"
        ));
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "CORS origin {raw:?}: must be scheme://host[:port] with no path; {advice}"
        ));
    }
    if HeaderValue::from_str(&origin).is_err() {
        return Err(format!("CORS origin {raw:?}: not a valid header value"));
    }
    Ok(origin)
}

/// `http(s)://localhost`, `127.0.0.1` or `[::1]`, with any port or none.
fn is_localhost(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = if let Some(v6) = rest.strip_prefix("[::1]") {
        return v6.is_empty() || is_port(v6);
    } else {
        rest
    };
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    matches!(name, "localhost" | "127.0.0.1") && port.is_none_or(|p| is_port(&format!(":{p}")))
}

fn is_port(s: &str) -> bool {
    s.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The CORS layer for `policy`: preflights for allowed origins are answered
/// with the grpc-web request headers and a cache lifetime; everything else
/// passes through without any CORS grant.
fn cors_layer(policy: &CorsPolicy) -> CorsLayer {
    let policy = policy.clone();
    let allow = AllowOrigin::predicate(move |origin: &HeaderValue, _: &Parts| {
        origin.to_str().is_ok_and(|o| policy.allows(o))
    });
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers(
            ALLOWED_REQUEST_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect::<Vec<_>>(),
        )
        .expose_headers(
            EXPOSED_RESPONSE_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect::<Vec<_>>(),
        )
        .max_age(PREFLIGHT_MAX_AGE)
        // Tokens travel in `authorization`, never in cookies.
        .allow_credentials(false)
        .vary([header::ORIGIN])
}

/// Applies [`BrowserCors`].
#[derive(Debug, Clone)]
pub struct BrowserCorsLayer {
    cors: Arc<CorsLayer>,
}

impl BrowserCorsLayer {
    pub fn new(policy: &CorsPolicy) -> Self {
        Self {
            cors: Arc::new(cors_layer(policy)),
        }
    }
}

impl<S> Layer<S> for BrowserCorsLayer {
    type Service = BrowserCors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BrowserCors {
            cors: self.cors.clone(),
            inner,
        }
    }
}

/// CORS for the requests that carry an `Origin` (a browser's calls and
/// preflights: browsers send it with every cross-origin request and every
/// POST), and nothing for the rest. A backend's or grpcurl's call has no
/// origin to grant, so the CORS layer would only add its `vary` and
/// `access-control-expose-headers` to every answer and build a header map
/// per call to hold them. The policy is shared, not copied, by the service
/// stack cloned for every request; only a browser's call gets a CORS
/// service of its own, since tower-http's layer copies its policy into
/// each service it makes.
#[derive(Debug, Clone)]
pub struct BrowserCors<S> {
    cors: Arc<CorsLayer>,
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for BrowserCors<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Either<<Cors<S> as Service<Request<ReqBody>>>::Future, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if request.headers().contains_key(header::ORIGIN) {
            // The service made ready goes to the CORS layer; a clone stays
            // for the next call, which makes it ready first.
            let next = self.inner.clone();
            let ready = std::mem::replace(&mut self.inner, next);
            Either::Left(self.cors.layer(ready).call(request))
        } else {
            Either::Right(self.inner.call(request))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_validated_and_normalised() {
        assert_eq!(
            parse_origin("https://App.Example.com").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            parse_origin("http://localhost:5173").unwrap(),
            "http://localhost:5173"
        );
        for bad in [
            "*",
            "https://*.example.com",
            "app.example.com",
            "ftp://x",
            "https://x/",
            "https://x/path",
            "https://",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn localhost_rule_matches_only_loopback_names() {
        let dev = CorsPolicy {
            origins: vec![],
            allow_localhost: true,
        };
        for ok in [
            "http://localhost:5173",
            "http://127.0.0.1:8080",
            "https://localhost",
            "http://[::1]:3000",
        ] {
            assert!(dev.allows(ok), "{ok}");
        }
        for no in [
            "http://localhost.evil.com",
            "http://127.0.0.1.evil.com:80",
            "http://evil.com",
            "http://localhost:abc",
            "null",
        ] {
            assert!(!dev.allows(no), "{no}");
        }
        let listed = CorsPolicy {
            origins: vec!["https://app.example.com".into()],
            allow_localhost: false,
        };
        assert!(listed.allows("https://app.example.com"));
        assert!(!listed.allows("http://localhost:5173"));
        assert!(CorsPolicy::default().is_closed());
    }
}
