//! The authentication interceptor: every JobService and JobAdminService
//! call must carry a valid bearer token; the verified [`Identity`] travels
//! in the request's extensions. Health and reflection stay open.

use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::auth::{AuthError, Identity, Verifier};

#[derive(Debug, Clone)]
pub struct Authenticate {
    verifier: Verifier,
    /// JobAdminService: only service tokens.
    services_only: bool,
}

impl Authenticate {
    pub fn users_and_services(verifier: Verifier) -> Self {
        Self {
            verifier,
            services_only: false,
        }
    }

    pub fn services_only(verifier: Verifier) -> Self {
        Self {
            verifier,
            services_only: true,
        }
    }
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = match request.metadata().get("authorization") {
            None => None,
            Some(value) => Some(value.to_str().map_err(|_| AuthError::NotBearer)?),
        };
        let identity = self.verifier.verify_header(header)?;
        if self.services_only && !identity.is_service() {
            return Err(AuthError::NotAService.into());
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
