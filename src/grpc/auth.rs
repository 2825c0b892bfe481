//! Authentication at the edge: every request's `authorization` header is
//! verified once, by [`authenticate`] (in the edge layer, which also needs
//! to know whether a call is anonymous), and the outcome travels in the
//! request's extensions. The interceptor on JobService and JobAdminService
//! then admits or refuses the call from it, and logs refusals at a bounded
//! rate. Health and reflection stay open.

use std::sync::Arc;

use http::HeaderMap;
use http::header::AUTHORIZATION;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::connection::Connection;
use crate::auth::{AuthError, Identity, Verifier};
use crate::telemetry::LogBudget;

/// What the edge learned from a request's `authorization` header.
#[derive(Debug, Clone)]
pub enum Authentication {
    Verified(Identity),
    Refused(AuthError),
}

/// The path (`/package.Service/Method`) of a call without a valid token,
/// for the refusal's log line. Only such calls carry it.
#[derive(Debug, Clone)]
pub struct CallPath(pub Box<str>);

impl Authentication {
    pub fn is_verified(&self) -> bool {
        matches!(self, Authentication::Verified(_))
    }
}

/// Verifies the request's bearer token. More than one `authorization`
/// header is refused: a proxy or an audit log reading the other one would
/// disagree with us about who is calling.
pub fn authenticate(headers: &HeaderMap, verifier: &Verifier) -> Authentication {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let header = match (values.next(), values.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => return Authentication::Refused(AuthError::Duplicate),
        (Some(value), None) => match value.to_str() {
            Ok(text) => Some(text),
            Err(_) => return Authentication::Refused(AuthError::NotBearer),
        },
    };
    match verifier.verify_header(header) {
        Ok(identity) => Authentication::Verified(identity),
        Err(err) => Authentication::Refused(err),
    }
}

#[derive(Debug, Clone)]
pub struct Authenticate {
    /// JobAdminService: only service tokens.
    services_only: bool,
    log: Arc<LogBudget>,
}

impl Authenticate {
    pub fn users_and_services(log: Arc<LogBudget>) -> Self {
        Self {
            services_only: false,
            log,
        }
    }

    pub fn services_only(log: Arc<LogBudget>) -> Self {
        Self {
            services_only: true,
            log,
        }
    }

    /// One line per refused call, within the budget: the peer and the
    /// reason, never the token.
    fn refuse(&self, request: &Request<()>, err: AuthError) -> Status {
        metrics::counter!(crate::telemetry::metrics::AUTH_REFUSALS, "reason" => err.reason())
            .increment(1);
        if let Some(suppressed) = self.log.admit() {
            let peer = request
                .extensions()
                .get::<Arc<Connection>>()
                .map(|c| c.peer().to_string())
                .unwrap_or_default();
            let method = request
                .extensions()
                .get::<CallPath>()
                .map(|p| p.0.as_ref())
                .unwrap_or_default();
            let request_id = request
                .extensions()
                .get::<super::observe::RequestId>()
                .map(super::observe::RequestId::as_str)
                .unwrap_or_default();
            if matches!(err, AuthError::Expired) {
                // Routine: a client that has not refreshed yet.
                tracing::info!(%peer, method, request_id, reason = %err, suppressed, "call refused: authentication");
            } else {
                tracing::warn!(%peer, method, request_id, reason = %err, suppressed, "call refused: authentication");
            }
        }
        err.into()
    }
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let outcome = request.extensions_mut().remove::<Authentication>();
        let identity = match outcome {
            Some(Authentication::Verified(identity)) => identity,
            Some(Authentication::Refused(err)) => return Err(self.refuse(&request, err)),
            // Only a wiring bug can leave it out; refuse, never trust.
            None => return Err(self.refuse(&request, AuthError::Missing)),
        };
        if self.services_only && !identity.is_service() {
            return Err(self.refuse(&request, AuthError::NotAService));
        }
        request.extensions_mut().insert(identity);
        Ok(request)
    }
}

/// The caller's identity, put there by [`Authenticate`].
/// Its absence can only be a wiring bug; it is still refused, never trusted.
pub fn identity<T>(request: &Request<T>) -> Result<Identity, Status> {
    request
        .extensions()
        .get::<Identity>()
        .cloned()
        .ok_or_else(|| AuthError::Missing.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{JwtSettings, TokenKind, mint};

    fn settings() -> JwtSettings {
        JwtSettings {
            leeway_secs: 0,
            ..JwtSettings::new(b"edge-test-secret-0123456789abcdef".to_vec())
        }
    }

    #[test]
    fn one_header_is_verified_and_two_are_refused() {
        let verifier = Verifier::new(&settings());
        let token = mint(
            &settings(),
            "alice",
            TokenKind::User,
            chrono::Duration::hours(1),
        )
        .unwrap();
        let bearer = format!("Bearer {token}");
        let mut headers = HeaderMap::new();
        assert!(matches!(
            authenticate(&headers, &verifier),
            Authentication::Refused(AuthError::Missing)
        ));
        headers.append(AUTHORIZATION, bearer.parse().unwrap());
        assert!(authenticate(&headers, &verifier).is_verified());
        // The same valid token twice is still two headers.
        headers.append(AUTHORIZATION, bearer.parse().unwrap());
        assert!(matches!(
            authenticate(&headers, &verifier),
            Authentication::Refused(AuthError::Duplicate)
        ));
    }
}
