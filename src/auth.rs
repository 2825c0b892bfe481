//! Who is calling: verifies HS256 bearer tokens and mints them.
//!
//! Tokens issued by the platform's Django backend (djangorestframework-
//! simplejwt) work unchanged: the user id may come from `user_id` (an integer
//! or a string) instead of `sub`, and refresh tokens are refused. A token
//! whose `scope` contains [`ADMIN_SCOPE`] (or whose `role` is `service`) is a
//! service token. This module knows nothing about gRPC; it must never accept
//! an algorithm other than HS256 or a token without `exp`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::domain::{Caller, ServiceId, UserId};

/// The scope that admits a token to JobAdminService.
pub const ADMIN_SCOPE: &str = "jobstatus.admin";
/// Larger tokens are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// UNAUTHENTICATED
    #[error("missing authorization metadata: send `authorization: Bearer <token>`")]
    Missing,
    /// UNAUTHENTICATED
    #[error("authorization must be `Bearer <token>`")]
    NotBearer,
    /// UNAUTHENTICATED: a proxy or log reading the other header would
    /// disagree with the server about who is calling.
    #[error("more than one authorization header; send exactly one")]
    Duplicate,
    /// UNAUTHENTICATED
    #[error("token is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    /// UNAUTHENTICATED
    #[error("token has expired")]
    Expired,
    /// UNAUTHENTICATED
    #[error("refresh tokens are not accepted; send an access token")]
    NotAccessToken,
    /// UNAUTHENTICATED
    #[error("token names no user: it needs `sub` or `user_id`")]
    NoSubject,
    /// UNAUTHENTICATED: `nbf` is later than now plus the leeway.
    #[error("token is not valid yet (its nbf is in the future); check the issuer's clock")]
    NotYetValid,
    /// UNAUTHENTICATED: `iat` is later than now plus the leeway.
    #[error("token was issued in the future (its iat); check the issuer's clock")]
    IssuedInFuture,
    /// UNAUTHENTICATED: RFC 7515 §4.1.11 says a header naming extensions
    /// in `crit` must be refused by a verifier that does not know them.
    #[error("token header lists critical extensions (crit) that this server does not support")]
    CriticalHeader,
    /// UNAUTHENTICATED
    #[error("invalid token: {0}")]
    Invalid(String),
    /// PERMISSION_DENIED: a valid token without the admin scope.
    #[error("this call needs a service token with the `{ADMIN_SCOPE}` scope")]
    NotAService,
}

/// A verified caller and when their token stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub caller: Caller,
    pub expires_at: DateTime<Utc>,
}

impl Identity {
    pub fn is_service(&self) -> bool {
        matches!(self.caller, Caller::Service(_))
    }
}

/// simplejwt writes `user_id` as an integer; other issuers use strings.
#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
enum FlexibleId {
    Int(i64),
    Str(String),
}

#[derive(Debug, Deserialize, Serialize)]
struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<FlexibleId>,
    exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    /// A string or an array of strings (RFC 7519); jsonwebtoken checks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<serde_json::Value>,
}

/// The token settings shared by verifying and minting.
#[derive(Clone)]
pub struct JwtSettings {
    pub secret: Vec<u8>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew allowed for `nbf` and `iat` in the future (the issuer's
    /// clock ahead of ours). `exp` gets none: a stream ends at `exp`.
    pub leeway_secs: u64,
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("secret", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// Verifies tokens. Cheap to clone (every connection's service holds one):
/// the key and the rules are shared, not copied.
#[derive(Clone)]
pub struct Verifier {
    key: Arc<DecodingKey>,
    validation: Arc<Validation>,
    leeway_secs: i64,
    verified: Arc<Mutex<HashMap<Box<str>, Identity>>>,
}

/// At most this many verified tokens are remembered.
const VERIFIED_TOKENS: usize = 4096;

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(settings: &JwtSettings) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.required_spec_claims = HashSet::from(["exp".to_owned()]);
        validation.validate_exp = true;
        // simplejwt's default leeway is 0 too; streams end exactly at `exp`.
        validation.leeway = 0;
        // A configured claim must also be present: jsonwebtoken only checks
        // the claims it is told are required.
        match &settings.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                validation.required_spec_claims.insert("iss".to_owned());
            }
            None => validation.iss = None,
        }
        match &settings.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        Self {
            key: Arc::new(DecodingKey::from_secret(&settings.secret)),
            validation: Arc::new(validation),
            leeway_secs: i64::try_from(settings.leeway_secs).unwrap_or(i64::MAX),
            verified: Arc::default(),
        }
    }

    /// Verifies the value of an `authorization` header.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Identity, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let token = header
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
            .map(|_| header[7..].trim())
            .ok_or(AuthError::NotBearer)?;
        self.verify(token)
    }

    /// Verifies `token`. A client sends the same token with every call until
    /// it expires, and decoding it (base64, HMAC, JSON) was a twentieth of a
    /// call's CPU, so tokens that verified are remembered, byte for byte,
    /// until their `exp`. Only successes are remembered: a bad token is
    /// checked afresh every time and cannot push good ones out.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        if token.is_empty() {
            return Err(AuthError::NotBearer);
        }
        let now = Utc::now();
        let remembered = self.remembered().get(token).cloned();
        if let Some(identity) = remembered {
            // jsonwebtoken's rule with no leeway: valid up to and including `exp`.
            if identity.expires_at.timestamp() >= now.timestamp() {
                return Ok(identity);
            }
            self.remembered().remove(token);
            return Err(AuthError::Expired);
        }
        let identity = self.decode(token)?;
        let mut verified = self.remembered();
        if verified.len() >= VERIFIED_TOKENS {
            verified.retain(|_, id| id.expires_at.timestamp() >= now.timestamp());
            if verified.len() >= VERIFIED_TOKENS {
                verified.clear();
            }
        }
        verified.insert(token.into(), identity.clone());
        Ok(identity)
    }

    fn remembered(&self) -> MutexGuard<'_, HashMap<Box<str>, Identity>> {
        // Every operation on the map is a single insert/remove/lookup.
        self.verified.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn decode(&self, token: &str) -> Result<Identity, AuthError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?
            .claims;
        if claims.token_type.as_deref().is_some_and(|t| t != "access") {
            return Err(AuthError::NotAccessToken);
        }
        let latest = Utc::now().timestamp().saturating_add(self.leeway_secs);
        if claims.nbf.is_some_and(|nbf| nbf > latest) {
            return Err(AuthError::NotYetValid);
        }
        if claims.iat.is_some_and(|iat| iat > latest) {
            return Err(AuthError::IssuedInFuture);
        }
        if names_critical_extensions(token) {
            return Err(AuthError::CriticalHeader);
        }
        let expires_at = DateTime::from_timestamp(claims.exp, 0)
            .ok_or_else(|| AuthError::Invalid("exp is out of range".into()))?;
        let subject = match (claims.sub, claims.user_id) {
            (Some(sub), _) => sub,
            (None, Some(FlexibleId::Int(id))) => id.to_string(),
            (None, Some(FlexibleId::Str(id))) => id,
            (None, None) => return Err(AuthError::NoSubject),
        };
        let is_service = claims
            .scope
            .as_deref()
            .is_some_and(|s| s.split_whitespace().any(|s| s == ADMIN_SCOPE))
            || claims.role.as_deref() == Some("service");
        let caller = if is_service {
            Caller::Service(
                ServiceId::parse("sub", subject)
                    .map_err(|e| AuthError::Invalid(format!("bad subject: {e}")))?,
            )
        } else {
            Caller::User(
                UserId::parse("sub", subject)
                    .map_err(|e| AuthError::Invalid(format!("bad subject: {e}")))?,
            )
        };
        Ok(Identity { caller, expires_at })
    }
}

/// Whether the token's (already verified) header has a `crit` member.
/// jsonwebtoken ignores it; RFC 7515 says a verifier must not.
fn names_critical_extensions(token: &str) -> bool {
    use base64::Engine;
    let header = token.split('.').next().unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|json| {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&json).ok()
        })
        .is_none_or(|members| members.contains_key("crit"))
}

/// What kind of token to mint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    User,
    Service,
}

/// Mints an HS256 access token for `subject`, valid for `ttl`.
pub fn mint(
    settings: &JwtSettings,
    subject: &str,
    kind: TokenKind,
    ttl: chrono::Duration,
) -> Result<String, AuthError> {
    let now = Utc::now();
    let claims = Claims {
        sub: Some(subject.to_owned()),
        user_id: None,
        exp: (now + ttl).timestamp(),
        iat: Some(now.timestamp()),
        nbf: None,
        token_type: Some("access".into()),
        scope: (kind == TokenKind::Service).then(|| ADMIN_SCOPE.to_owned()),
        role: None,
        iss: settings.issuer.clone(),
        aud: settings.audience.clone().map(serde_json::Value::from),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&settings.secret),
    )
    .map_err(|e| AuthError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> JwtSettings {
        JwtSettings {
            secret: b"test-secret".to_vec(),
            issuer: None,
            audience: None,
            leeway_secs: 30,
        }
    }

    fn sign(claims: serde_json::Value, alg: Algorithm, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn future() -> i64 {
        Utc::now().timestamp() + 600
    }

    /// A token for `subject` that is valid for an hour.
    fn hour_token(subject: &str, kind: TokenKind) -> String {
        mint(&settings(), subject, kind, chrono::Duration::hours(1)).unwrap()
    }

    #[test]
    fn minted_tokens_round_trip() {
        let v = Verifier::new(&settings());
        let t = hour_token("alice", TokenKind::User);
        let id = v.verify_header(Some(&format!("Bearer {t}"))).unwrap();
        assert_eq!(
            id.caller,
            Caller::User(UserId::parse("u", "alice").unwrap())
        );
        let t = hour_token("payments", TokenKind::Service);
        assert!(v.verify(&t).unwrap().is_service());
    }

    /// A remembered token is answered from memory with the same identity,
    /// still expires at its `exp`, and a refused token is never remembered.
    #[test]
    fn verified_tokens_are_remembered_until_they_expire() {
        let v = Verifier::new(&settings());
        let t = hour_token("alice", TokenKind::User);
        let first = v.verify(&t).unwrap();
        assert_eq!(v.remembered().len(), 1);
        assert_eq!(v.verify(&t).unwrap(), first);

        // Same bytes but one: refused, and not remembered.
        let mut forged = t.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert!(matches!(v.verify(&forged), Err(AuthError::Invalid(_))));
        assert_eq!(v.remembered().len(), 1);

        // Its exp passes: refused as expired, and forgotten.
        v.remembered().get_mut(t.as_str()).unwrap().expires_at =
            Utc::now() - chrono::Duration::seconds(1);
        assert_eq!(v.verify(&t), Err(AuthError::Expired));
        assert!(v.remembered().is_empty());
    }

    #[test]
    fn the_remembered_tokens_are_bounded() {
        let v = Verifier::new(&settings());
        for i in 0..=VERIFIED_TOKENS {
            let t = hour_token(&format!("user-{i}"), TokenKind::User);
            v.verify(&t).unwrap();
            assert!(v.remembered().len() <= VERIFIED_TOKENS);
        }
    }

    #[test]
    fn simplejwt_access_tokens_with_integer_user_id() {
        let v = Verifier::new(&settings());
        let t = sign(
            json!({"token_type": "access", "exp": future(), "jti": "x", "user_id": 42}),
            Algorithm::HS256,
            b"test-secret",
        );
        assert_eq!(
            v.verify(&t).unwrap().caller,
            Caller::User(UserId::parse("u", "42").unwrap())
        );
        let t = sign(
            json!({"token_type": "access", "exp": future(), "user_id": "abc"}),
            Algorithm::HS256,
            b"test-secret",
        );
        assert_eq!(
            v.verify(&t).unwrap().caller,
            Caller::User(UserId::parse("u", "abc").unwrap())
        );
    }

    #[test]
    fn refuses_what_it_must() {
        let v = Verifier::new(&settings());
        let refresh = sign(
            json!({"token_type": "refresh", "exp": future(), "user_id": 42}),
            Algorithm::HS256,
            b"test-secret",
        );
        assert_eq!(v.verify(&refresh), Err(AuthError::NotAccessToken));
        let expired = sign(
            json!({"sub": "a", "exp": Utc::now().timestamp() - 10}),
            Algorithm::HS256,
            b"test-secret",
        );
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        let no_exp = sign(json!({"sub": "a"}), Algorithm::HS256, b"test-secret");
        assert!(matches!(v.verify(&no_exp), Err(AuthError::Invalid(_))));
        let wrong_key = sign(
            json!({"sub": "a", "exp": future()}),
            Algorithm::HS256,
            b"other",
        );
        assert!(matches!(v.verify(&wrong_key), Err(AuthError::Invalid(_))));
        let wrong_alg = sign(
            json!({"sub": "a", "exp": future()}),
            Algorithm::HS384,
            b"test-secret",
        );
        assert!(matches!(v.verify(&wrong_alg), Err(AuthError::Invalid(_))));
        let no_subject = sign(json!({"exp": future()}), Algorithm::HS256, b"test-secret");
        assert_eq!(v.verify(&no_subject), Err(AuthError::NoSubject));
        assert_eq!(v.verify_header(None), Err(AuthError::Missing));
        assert_eq!(
            v.verify_header(Some("Token abc")),
            Err(AuthError::NotBearer)
        );
        assert_eq!(v.verify_header(Some("Bearer ")), Err(AuthError::NotBearer));
        assert_eq!(
            v.verify(&"a".repeat(MAX_TOKEN_BYTES + 1)),
            Err(AuthError::TooLarge)
        );
    }

    #[test]
    fn alg_none_is_refused() {
        use base64_like::encode;
        let header = encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = encode(format!(r#"{{"sub":"a","exp":{}}}"#, future()).as_bytes());
        let v = Verifier::new(&settings());
        assert!(matches!(
            v.verify(&format!("{header}.{body}.")),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let strict = JwtSettings {
            issuer: Some("marketplace".into()),
            audience: Some("jobstatus".into()),
            ..settings()
        };
        let v = Verifier::new(&strict);
        let good = mint(&strict, "a", TokenKind::User, chrono::Duration::hours(1)).unwrap();
        assert!(v.verify(&good).is_ok());
        let listed = sign(
            json!({"sub": "a", "exp": future(), "iss": "marketplace", "aud": ["other", "jobstatus"]}),
            Algorithm::HS256,
            b"test-secret",
        );
        assert!(
            v.verify(&listed).is_ok(),
            "an aud array naming us is accepted"
        );
        let bare = mint(
            &settings(),
            "a",
            TokenKind::User,
            chrono::Duration::hours(1),
        )
        .unwrap();
        assert!(matches!(v.verify(&bare), Err(AuthError::Invalid(_))));
    }

    /// `nbf` and `iat` in the future are refused beyond the leeway and
    /// accepted within it (an issuer whose clock runs a little ahead), the
    /// way simplejwt and PyJWT issue and check them.
    #[test]
    fn not_before_and_issued_at_allow_only_the_leeway() {
        let v = Verifier::new(&settings());
        let now = Utc::now().timestamp();
        let claims = |extra: serde_json::Value| {
            let mut c = json!({"token_type": "access", "exp": future(), "jti": "j", "user_id": 7});
            for (k, val) in extra.as_object().unwrap() {
                c[k] = val.clone();
            }
            sign(c, Algorithm::HS256, b"test-secret")
        };
        // simplejwt: iat is now.
        assert!(v.verify(&claims(json!({"iat": now}))).is_ok());
        assert!(
            v.verify(&claims(json!({"iat": now + 20, "nbf": now + 20})))
                .is_ok()
        );
        assert_eq!(
            v.verify(&claims(json!({"nbf": now + 120}))),
            Err(AuthError::NotYetValid)
        );
        assert_eq!(
            v.verify(&claims(json!({"iat": now + 120}))),
            Err(AuthError::IssuedInFuture)
        );
        // nbf in the past is fine; with no leeway, a second ahead is not.
        assert!(v.verify(&claims(json!({"nbf": now - 5}))).is_ok());
        let strict = Verifier::new(&JwtSettings {
            leeway_secs: 0,
            ..settings()
        });
        assert_eq!(
            strict.verify(&claims(json!({"nbf": now + 5}))),
            Err(AuthError::NotYetValid)
        );
    }

    /// RFC 7515 §4.1.11: a header with `crit` names extensions this server
    /// does not implement, so the token is refused even though it is signed.
    #[test]
    fn a_header_with_crit_is_refused() {
        let v = Verifier::new(&settings());
        let header = base64_like::encode(br#"{"alg":"HS256","typ":"JWT","crit":["exp"]}"#);
        let body = base64_like::encode(format!(r#"{{"sub":"a","exp":{}}}"#, future()).as_bytes());
        let signing_input = format!("{header}.{body}");
        let signature = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &EncodingKey::from_secret(b"test-secret"),
            Algorithm::HS256,
        )
        .unwrap();
        let token = format!("{signing_input}.{signature}");
        assert_eq!(v.verify(&token), Err(AuthError::CriticalHeader));
        // The same claims without crit pass.
        let plain = sign(
            json!({"sub": "a", "exp": future()}),
            Algorithm::HS256,
            b"test-secret",
        );
        assert!(v.verify(&plain).is_ok());
    }

    /// URL-safe base64 without padding, enough to hand-craft an unsigned JWT.
    mod base64_like {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        pub fn encode(bytes: &[u8]) -> String {
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let b = [
                    chunk[0],
                    *chunk.get(1).unwrap_or(&0),
                    *chunk.get(2).unwrap_or(&0),
                ];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for i in 0..=chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
    }
}
