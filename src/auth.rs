//! Who is calling: verifies HS256 bearer tokens and mints them.
//!
//! Tokens issued by the platform's Django backend (djangorestframework-
//! simplejwt) work unchanged: the user id may come from `user_id` (an integer
//! or a string) instead of `sub`, and refresh tokens are refused. A token
//! whose `scope` contains [`ADMIN_SCOPE`] (or whose `role` is `service`) is a
//! service token. This module knows nothing about gRPC; it must never accept
//! an algorithm other than HS256 or a token without `exp`.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::Sha256;

use crate::clock_map::ClockMap;
use crate::domain::{Caller, ServiceId, UserId};
use crate::telemetry::metrics as m;

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

impl AuthError {
    /// A short, fixed name for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::NotBearer => "not_bearer",
            AuthError::Duplicate => "duplicate_header",
            AuthError::TooLarge => "too_large",
            AuthError::Expired => "expired",
            AuthError::NotAccessToken => "not_access_token",
            AuthError::NoSubject => "no_subject",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::IssuedInFuture => "issued_in_future",
            AuthError::CriticalHeader => "critical_header",
            AuthError::Invalid(_) => "invalid",
            AuthError::NotAService => "not_a_service",
        }
    }
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
    /// A string or an array of strings (RFC 7519).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<serde_json::Value>,
}

/// The members of a token's header that verifying reads.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    /// Whether the header has `crit` at all (RFC 7515 §4.1.11: a verifier
    /// that knows none of the extensions must refuse it, whatever it lists).
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

fn present<'de, D: Deserializer<'de>>(member: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(member).map(|_| true)
}

/// The token settings shared by verifying and minting.
#[derive(Clone)]
pub struct JwtSettings {
    /// Signs the tokens this server mints (`jobstatus token`, `--dev`), and
    /// verifies.
    pub secret: Vec<u8>,
    /// Also verify with these: while a secret is rotated, tokens signed
    /// with the old one (or already with the new one) stay valid.
    pub also_accept: Vec<Vec<u8>>,
    /// Verified tokens remembered at most (each until its `exp`).
    pub cache_size: u64,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew allowed for `nbf` and `iat` in the future (the issuer's
    /// clock ahead of ours). `exp` gets none: a stream ends at `exp`.
    pub leeway_secs: u64,
}

/// The default of [`JwtSettings::leeway_secs`].
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

impl JwtSettings {
    /// Settings with one secret, no issuer or audience, and the defaults.
    pub fn new(secret: Vec<u8>) -> Self {
        Self {
            secret,
            also_accept: Vec::new(),
            cache_size: TOKEN_CACHE_SIZE,
            issuer: None,
            audience: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("secret", &"<redacted>")
            .field("also_accept", &self.also_accept.len())
            .field("cache_size", &self.cache_size)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// Verifies tokens. Cheap to clone (every connection's service holds one):
/// the keys, the rules and the cache are shared, not copied.
#[derive(Clone)]
pub struct Verifier {
    /// HMAC-SHA256 keyed with the signing secret first, then with the
    /// others accepted; each verification starts from a copy, so the key
    /// is not hashed again per token.
    keys: Arc<[Hmac<Sha256>]>,
    issuer: Option<Arc<str>>,
    audience: Option<Arc<str>>,
    leeway_secs: i64,
    /// Verified tokens, byte for byte, each until its `exp`.
    verified: Arc<TokenCache>,
}

/// The default of [`JwtSettings::cache_size`]: about 500 bytes a token,
/// so some 32 MB when full.
pub const TOKEN_CACHE_SIZE: u64 = 65_536;

/// Verified tokens, byte for byte. Bounded: in shards (so that calls on
/// many threads rarely wait for one another), each a second-chance map of
/// its share ([`ClockMap`]), so every token it holds can be found, a token
/// in use stays however many new tokens arrive, and a new token pushes out
/// at most one that nobody used lately. An entry past its `exp` is refused
/// and removed when it is next asked for.
struct TokenCache {
    shards: Box<[Mutex<TokenShard>]>,
}

/// One shard of the token cache: tokens, byte for byte, and who they name.
type TokenShard = ClockMap<Arc<str>, Identity>;

/// Shards of a full-size token cache: more than the threads that call at
/// once on most machines. A small cache has fewer, at least 4 096 tokens
/// each, so that an uneven spread of tokens over the shards stays small
/// beside each shard's share.
const TOKEN_SHARDS: usize = 16;
const TOKENS_PER_SHARD: usize = 4096;

impl TokenCache {
    fn new(capacity: u64) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        let shards = (capacity / TOKENS_PER_SHARD).clamp(1, TOKEN_SHARDS);
        Self {
            shards: (0..shards)
                .map(|_| Mutex::new(ClockMap::new(capacity / shards)))
                .collect(),
        }
    }

    fn shard(&self, token: &str) -> MutexGuard<'_, TokenShard> {
        // The token's tail is its signature's, which nobody without the
        // secret can choose: a few of its characters spread tokens evenly
        // (its very last one carries only four bits).
        let tail = &token.as_bytes()[token.len().saturating_sub(9)..];
        let hash = tail.iter().fold(0x811c_9dc5_u32, |h, &b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let at = hash as usize % self.shards.len();
        // A panic while the lock was held leaves both maps whole.
        self.shards[at]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, token: &str) -> Option<Identity> {
        self.shard(token).get(token).cloned()
    }

    fn insert(&self, token: &str, identity: Identity) {
        // What made room is dropped after the shard is unlocked.
        let _evicted = self.shard(token).insert(token.into(), identity);
    }

    fn remove(&self, token: &str) {
        self.shard(token).remove(token);
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(settings: &JwtSettings) -> Self {
        let keys: Vec<Hmac<Sha256>> = std::iter::once(&settings.secret)
            .chain(&settings.also_accept)
            .filter_map(|secret| Hmac::<Sha256>::new_from_slice(secret).ok())
            .collect();
        Self {
            keys: keys.into(),
            issuer: settings.issuer.as_deref().map(Arc::from),
            audience: settings.audience.as_deref().map(Arc::from),
            leeway_secs: i64::try_from(settings.leeway_secs).unwrap_or(i64::MAX),
            verified: Arc::new(TokenCache::new(settings.cache_size)),
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
        if let Some(identity) = self.verified.get(token) {
            static HITS: m::Kept<metrics::Counter> = m::Kept::new();
            HITS.increment(1, || metrics::counter!(m::TOKEN_CACHE_HITS));
            // jsonwebtoken's rule with no leeway: valid up to and including `exp`.
            if identity.expires_at.timestamp() >= Utc::now().timestamp() {
                return Ok(identity);
            }
            self.verified.remove(token);
            return Err(AuthError::Expired);
        }
        static MISSES: m::Kept<metrics::Counter> = m::Kept::new();
        MISSES.increment(1, || metrics::counter!(m::TOKEN_CACHE_MISSES));
        let identity = self.decode(token)?;
        self.verified.insert(token, identity.clone());
        Ok(identity)
    }

    /// Verified tokens in the cache now (approximate: expired entries leave
    /// it lazily).
    pub fn cached_tokens(&self) -> u64 {
        self.verified.len() as u64
    }

    fn decode(&self, token: &str) -> Result<Identity, AuthError> {
        let (header, claims) = self.verified_parts(token)?;
        if claims.exp < Utc::now().timestamp() {
            // Valid up to and including `exp`, with no leeway.
            return Err(AuthError::Expired);
        }
        if let Some(issuer) = &self.issuer
            && claims.iss.as_deref() != Some(issuer)
        {
            return Err(AuthError::Invalid(format!("its iss must be {issuer:?}")));
        }
        if let Some(audience) = &self.audience
            && !names_audience(claims.aud.as_ref(), audience)
        {
            return Err(AuthError::Invalid(format!(
                "its aud must name {audience:?}"
            )));
        }
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
        if header.crit {
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

    /// Splits a compact HS256 JWS, checks its algorithm and its signature
    /// against every accepted key (in constant time), and only then decodes
    /// its claims.
    fn verified_parts(&self, token: &str) -> Result<(JoseHeader, Claims), AuthError> {
        let invalid = |why: &str| AuthError::Invalid(why.to_owned());
        let mut parts = token.split('.');
        let (Some(encoded_header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("a JWT has three dot-separated parts"));
        };
        let decoded = URL_SAFE_NO_PAD
            .decode(encoded_header)
            .map_err(|_| invalid("its header is not unpadded base64url"))?;
        let header: JoseHeader = serde_json::from_slice(&decoded)
            .map_err(|e| AuthError::Invalid(format!("its header does not decode: {e}")))?;
        if header.alg != "HS256" {
            return Err(AuthError::Invalid(format!(
                "its algorithm is {:?}; only HS256 is accepted",
                header.alg
            )));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| invalid("its signature is not unpadded base64url"))?;
        // What was signed: `header.payload`, as sent.
        let signed = &token[..encoded_header.len() + 1 + payload.len()];
        let matches = self.keys.iter().any(|key| {
            let mut mac = key.clone();
            mac.update(signed.as_bytes());
            mac.verify_slice(&signature).is_ok()
        });
        if !matches {
            return Err(invalid("its signature does not match"));
        }
        let decoded = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| invalid("its claims are not unpadded base64url"))?;
        let claims = serde_json::from_slice(&decoded)
            .map_err(|e| AuthError::Invalid(format!("its claims do not decode: {e}")))?;
        Ok((header, claims))
    }
}

/// Whether `aud` (a string or an array of strings) names `audience`.
fn names_audience(aud: Option<&serde_json::Value>, audience: &str) -> bool {
    match aud {
        Some(serde_json::Value::String(one)) => one == audience,
        Some(serde_json::Value::Array(many)) => many.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    }
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
        JwtSettings::new(b"test-secret".to_vec())
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
        assert_eq!(v.cached_tokens(), 1);
        assert_eq!(v.verify(&t).unwrap(), first);

        // Same bytes but one: refused, and not remembered.
        let mut forged = t.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert!(matches!(v.verify(&forged), Err(AuthError::Invalid(_))));
        assert_eq!(v.cached_tokens(), 1);

        // Its exp passes: refused as expired, and forgotten.
        let stale = Identity {
            expires_at: Utc::now() - chrono::Duration::seconds(1),
            ..first
        };
        v.verified.insert(&t, stale);
        assert_eq!(v.verify(&t), Err(AuthError::Expired));
        assert!(v.verified.get(&t).is_none());
    }

    /// The cache is bounded, and a flood of new tokens neither empties it
    /// nor pushes out a token in use.
    #[test]
    fn the_remembered_tokens_are_bounded_without_a_cliff() {
        let v = Verifier::new(&JwtSettings {
            cache_size: 100,
            ..settings()
        });
        let busy = hour_token("busy", TokenKind::User);
        // One user calls steadily while a thousand others call once each.
        for i in 0..1_000 {
            v.verify(&hour_token(&format!("user-{i}"), TokenKind::User))
                .unwrap();
            if i % 10 == 0 {
                v.verify(&busy).unwrap();
            }
        }
        assert!(v.cached_tokens() <= 100, "{}", v.cached_tokens());
        assert!(v.cached_tokens() >= 50, "no cliff: {}", v.cached_tokens());
        assert!(v.verified.get(&busy).is_some(), "the token in use stays");
    }

    /// A full-size cache, in shards, keeps its bound and a token in use
    /// through a flood of new tokens ten times its size, and its tokens
    /// spread over every shard.
    #[test]
    fn a_full_size_cache_is_bounded_in_every_shard() {
        let cache = TokenCache::new(TOKEN_CACHE_SIZE);
        assert_eq!(cache.shards.len(), TOKEN_SHARDS);
        let identity = Identity {
            caller: Caller::User(UserId::parse("sub", "u").unwrap()),
            expires_at: Utc::now() + chrono::Duration::hours(1),
        };
        let busy = hour_token("busy", TokenKind::User);
        cache.insert(&busy, identity.clone());
        for i in 0..10 * TOKEN_CACHE_SIZE {
            // Distinct tails, as distinct signatures have.
            cache.insert(&format!("{i:016x}"), identity.clone());
            if i % 1000 == 0 {
                assert!(cache.get(&busy).is_some(), "the token in use went at {i}");
            }
        }
        let len = cache.len() as u64;
        assert!(len <= TOKEN_CACHE_SIZE, "{len}");
        assert!(len >= TOKEN_CACHE_SIZE / 2, "no cliff: {len}");
        for shard in cache.shards.iter() {
            assert!(shard.lock().unwrap().len() > 0, "an empty shard");
        }
    }

    /// During a rotation, tokens signed with either secret verify; a token
    /// signed with neither does not. Minting always uses the first.
    #[test]
    fn every_accepted_secret_verifies_and_the_first_signs() {
        let old = b"the-secret-being-retired-0123456789abcdef".to_vec();
        let rotating = JwtSettings {
            also_accept: vec![old.clone()],
            ..settings()
        };
        let v = Verifier::new(&rotating);
        let with_new = mint(
            &rotating,
            "alice",
            TokenKind::User,
            chrono::Duration::hours(1),
        )
        .unwrap();
        let with_old = mint(
            &JwtSettings {
                secret: old,
                ..settings()
            },
            "bob",
            TokenKind::User,
            chrono::Duration::hours(1),
        )
        .unwrap();
        assert!(v.verify(&with_new).is_ok());
        assert!(v.verify(&with_old).is_ok());
        assert!(
            Verifier::new(&settings()).verify(&with_new).is_ok(),
            "the first secret signs"
        );
        let stranger = sign(
            json!({"sub": "a", "exp": future()}),
            Algorithm::HS256,
            b"neither",
        );
        assert!(matches!(v.verify(&stranger), Err(AuthError::Invalid(_))));
        // An expired token signed with the old secret is expired, not invalid.
        let expired_old = sign(
            json!({"sub": "a", "exp": Utc::now().timestamp() - 10}),
            Algorithm::HS256,
            b"the-secret-being-retired-0123456789abcdef",
        );
        assert_eq!(v.verify(&expired_old), Err(AuthError::Expired));
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

    /// Whatever is wrong with a token's shape, encoding or signature, it
    /// is refused as invalid, with a message that says what is wrong.
    #[test]
    fn malformed_and_tampered_tokens_are_refused() {
        use base64_like::encode;
        let v = Verifier::new(&settings());
        let good = hour_token("a", TokenKind::User);
        assert!(v.verify(&good).is_ok());
        let parts: Vec<&str> = good.split('.').collect();
        let (header, payload, signature) = (parts[0], parts[1], parts[2]);
        let other_claims = encode(format!(r#"{{"sub":"root","exp":{}}}"#, future()).as_bytes());
        let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
        let cases = [
            (format!("{header}.{payload}"), "three dot-separated parts"),
            (format!("{good}.x"), "three dot-separated parts"),
            (
                format!("{header}=.{payload}.{signature}"),
                "header is not unpadded base64url",
            ),
            (
                format!("{}.{payload}.{signature}", encode(b"[1]")),
                "header does not decode",
            ),
            (
                format!("{header}.{payload}.{signature}="),
                "signature is not unpadded base64url",
            ),
            (
                format!("{header}.{other_claims}.{signature}"),
                "signature does not match",
            ),
            (
                format!("{header}.{payload}.{flipped}{}", &signature[1..]),
                "signature does not match",
            ),
        ];
        for (token, why) in cases {
            match v.verify(&token) {
                Err(AuthError::Invalid(message)) => {
                    assert!(message.contains(why), "{token}: {message}")
                }
                other => panic!("{token}: {other:?}"),
            }
        }
        // The algorithm is matched exactly, before the signature is checked.
        for alg in ["hs256", "HS256 ", "none", "RS256"] {
            let header = encode(format!(r#"{{"alg":"{alg}"}}"#).as_bytes());
            let token = format!("{header}.{payload}.{signature}");
            match v.verify(&token) {
                Err(AuthError::Invalid(message)) => {
                    assert!(message.contains("only HS256"), "{message}")
                }
                other => panic!("{alg}: {other:?}"),
            }
        }
    }

    /// An audience may be one string or an array; either must name ours.
    #[test]
    fn a_configured_audience_must_be_named() {
        let v = Verifier::new(&JwtSettings {
            audience: Some("jobstatus".into()),
            ..settings()
        });
        let with = |aud: serde_json::Value| {
            sign(
                json!({"sub": "a", "exp": future(), "aud": aud}),
                Algorithm::HS256,
                b"test-secret",
            )
        };
        assert!(v.verify(&with(json!("jobstatus"))).is_ok());
        for aud in [
            json!("other"),
            json!(["other"]),
            json!([]),
            json!(7),
            json!(null),
        ] {
            assert!(
                matches!(v.verify(&with(aud.clone())), Err(AuthError::Invalid(_))),
                "{aud}"
            );
        }
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
