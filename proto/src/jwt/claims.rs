//! The JWT claims set (RFC 7519) and its validation: time claims with a
//! leeway, issuer, audience, authorized party, subject and token kind.
//!
//! ## Access or refresh: mutually exclusive markers
//!
//! A token's kind is read from every marker it carries, and all of them
//! must agree:
//!
//! | Marker | Access | Refresh |
//! |--------|--------|---------|
//! | `type` claim (confab's phantom JWTs) | `access` | `refresh` |
//! | `typ` claim (Keycloak) | `Bearer` | `Refresh`, `Offline` |
//! | header `typ` (RFC 9068) | `at+jwt` | - |
//!
//! Any other value (Keycloak's `ID`, `Logout`, ...) is a kind of its own. A
//! token whose markers disagree is [`JwtError::AmbiguousType`], so no token
//! can be both; a token without any marker has no kind and fails every
//! validation that requires one.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::error::{JwtError, Part};
use super::jws::Header;
use super::{clip, is_json_object};
use crate::token::TokenKind;

/// The registered and well-known claims of a verified token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// `iss`: the issuer.
    pub iss: Option<String>,
    /// `sub`: the subject (a user id).
    pub sub: Option<String>,
    /// `aud`: the audiences (a single string is a one-element list).
    pub aud: Option<Vec<String>>,
    /// `azp`: the authorized party (the OIDC client the token was issued to).
    pub azp: Option<String>,
    /// `exp`: expiry, Unix seconds (fractions are truncated).
    pub exp: Option<i64>,
    /// `nbf`: not before, Unix seconds.
    pub nbf: Option<i64>,
    /// `iat`: issued at, Unix seconds.
    pub iat: Option<i64>,
    /// `jti`: the token id.
    pub jti: Option<String>,
    /// `type`: confab's kind marker (`access` or `refresh`).
    pub token_type: Option<String>,
    /// `typ`: Keycloak's kind marker (`Bearer`, `Refresh`, `Offline`, `ID`, ...).
    pub typ: Option<String>,
    /// `preferred_username` (OIDC).
    pub preferred_username: Option<String>,
}

impl Claims {
    /// The user name a token maps to: `preferred_username`, else `sub`.
    #[must_use]
    pub fn username(&self) -> Option<&str> {
        self.preferred_username.as_deref().or(self.sub.as_deref())
    }
}

/// Only here to make serde reject a registered claim given twice (serde_json's
/// maps silently keep the last one).
#[derive(Deserialize)]
#[allow(dead_code)]
struct DuplicateCheck {
    iss: Option<IgnoredAny>,
    sub: Option<IgnoredAny>,
    aud: Option<IgnoredAny>,
    azp: Option<IgnoredAny>,
    exp: Option<IgnoredAny>,
    nbf: Option<IgnoredAny>,
    iat: Option<IgnoredAny>,
    jti: Option<IgnoredAny>,
    #[serde(rename = "type")]
    token_type: Option<IgnoredAny>,
    typ: Option<IgnoredAny>,
    preferred_username: Option<IgnoredAny>,
}

/// Parses the payload: a JSON object without duplicated registered claims,
/// each of the right type.
pub(crate) fn parse(payload: &[u8]) -> Result<(Claims, Map<String, Value>), JwtError> {
    if !is_json_object(payload) {
        return Err(JwtError::Json(Part::Payload));
    }
    serde_json::from_slice::<DuplicateCheck>(payload).map_err(|_| JwtError::Json(Part::Payload))?;
    let map: Map<String, Value> = serde_json::from_slice(payload).map_err(|_| JwtError::Json(Part::Payload))?;
    let claims = Claims {
        iss: string(&map, "iss")?,
        sub: string(&map, "sub")?,
        aud: audience(&map)?,
        azp: string(&map, "azp")?,
        exp: date(&map, "exp")?,
        nbf: date(&map, "nbf")?,
        iat: date(&map, "iat")?,
        jti: string(&map, "jti")?,
        token_type: string(&map, "type")?,
        typ: string(&map, "typ")?,
        preferred_username: string(&map, "preferred_username")?,
    };
    Ok((claims, map))
}

fn string(map: &Map<String, Value>, name: &'static str) -> Result<Option<String>, JwtError> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(JwtError::BadClaim(name)),
    }
}

/// A NumericDate (RFC 7519 section 2): a JSON number of seconds, possibly
/// fractional; out-of-range values saturate.
fn date(map: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, JwtError> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if n.as_u64().is_some() {
                Ok(Some(i64::MAX))
            } else {
                // `as` saturates and maps NaN to 0; JSON numbers are never NaN.
                Ok(Some(n.as_f64().map_or(0, |f| f.floor() as i64)))
            }
        }
        Some(_) => Err(JwtError::BadClaim(name)),
    }
}

fn audience(map: &Map<String, Value>) -> Result<Option<Vec<String>>, JwtError> {
    match map.get("aud") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(JwtError::BadClaim("aud")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(JwtError::BadClaim("aud")),
    }
}

/// What a validation requires of a token, beyond its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// Required `iss`; `None` does not check it (for tools only: a service
    /// must always set it).
    pub issuer: Option<String>,
    /// An audience `aud` must contain; `None` does not check it.
    pub audience: Option<String>,
    /// When not empty, `azp` must be present and one of these.
    pub authorized_parties: Vec<String>,
    /// The kind the token must be; `None` accepts any kind and none.
    pub kind: Option<TokenKind>,
    /// Whether `sub` must be present.
    pub require_sub: bool,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
    /// Longest token accepted, in bytes (checked before anything else).
    pub max_token_len: usize,
}

impl Default for Validation {
    /// Signature, `exp`, `nbf` and `iat` only, 60 s leeway, 8 KiB tokens.
    fn default() -> Self {
        Validation {
            issuer: None,
            audience: None,
            authorized_parties: Vec::new(),
            kind: None,
            require_sub: false,
            leeway_secs: 60,
            max_token_len: 8192,
        }
    }
}

impl Validation {
    /// What a service requires of an access token: this issuer, this
    /// audience, a subject, and the access kind.
    #[must_use]
    pub fn access(issuer: impl Into<String>, audience: impl Into<String>) -> Validation {
        Validation {
            issuer: Some(issuer.into()),
            audience: Some(audience.into()),
            kind: Some(TokenKind::Access),
            require_sub: true,
            ..Validation::default()
        }
    }

    /// The same for a refresh token.
    #[must_use]
    pub fn refresh(issuer: impl Into<String>, audience: impl Into<String>) -> Validation {
        Validation { kind: Some(TokenKind::Refresh), ..Validation::access(issuer, audience) }
    }

    /// Checks the claims of a token whose signature has verified. Returns
    /// the token's kind, if it has one.
    pub(crate) fn check(&self, header: &Header, claims: &Claims, now: u64) -> Result<Option<TokenKind>, JwtError> {
        let leeway = i128::from(self.leeway_secs);
        let now_wide = i128::from(now);
        let exp = claims.exp.ok_or(JwtError::MissingClaim("exp"))?;
        if now_wide >= i128::from(exp) + leeway {
            return Err(JwtError::Expired { exp, now });
        }
        if let Some(nbf) = claims.nbf
            && now_wide + leeway < i128::from(nbf)
        {
            return Err(JwtError::NotYetValid { nbf, now });
        }
        if let Some(iat) = claims.iat
            && i128::from(iat) > now_wide + leeway
        {
            return Err(JwtError::IssuedInFuture { iat, now });
        }
        if let Some(issuer) = &self.issuer {
            let iss = claims.iss.as_deref().ok_or(JwtError::MissingClaim("iss"))?;
            if iss != issuer {
                return Err(JwtError::WrongIssuer(clip(iss)));
            }
        }
        if let Some(audience) = &self.audience {
            let aud = claims.aud.as_ref().ok_or(JwtError::MissingClaim("aud"))?;
            if !aud.iter().any(|a| a == audience) {
                return Err(JwtError::WrongAudience);
            }
        }
        if !self.authorized_parties.is_empty() {
            let azp = claims.azp.as_deref().ok_or(JwtError::MissingClaim("azp"))?;
            if !self.authorized_parties.iter().any(|p| p == azp) {
                return Err(JwtError::WrongAzp(clip(azp)));
            }
        }
        if self.require_sub && claims.sub.is_none() {
            return Err(JwtError::MissingClaim("sub"));
        }
        let marker = kind_marker(header, claims)?;
        if let Some(expected) = self.kind {
            match marker {
                None => return Err(JwtError::MissingClaim("type")),
                Some((Some(kind), _)) if kind == expected => {}
                Some((_, raw)) => return Err(JwtError::WrongType { expected, found: clip(&raw) }),
            }
        }
        Ok(marker.and_then(|(kind, _)| kind))
    }
}

/// The token's kind from all its markers: `(kind if access or refresh, raw marker)`.
fn kind_marker(header: &Header, claims: &Claims) -> Result<Option<(Option<TokenKind>, String)>, JwtError> {
    let mut markers: Vec<(Option<TokenKind>, String)> = Vec::with_capacity(3);
    if let Some(t) = &claims.token_type {
        let kind = match t.as_str() {
            "access" => Some(TokenKind::Access),
            "refresh" => Some(TokenKind::Refresh),
            _ => None,
        };
        markers.push((kind, t.clone()));
    }
    if let Some(t) = &claims.typ {
        let kind = if t.eq_ignore_ascii_case("bearer") {
            Some(TokenKind::Access)
        } else if t.eq_ignore_ascii_case("refresh") || t.eq_ignore_ascii_case("offline") {
            Some(TokenKind::Refresh)
        } else {
            None
        };
        markers.push((kind, t.clone()));
    }
    if let (Some(kind), Some(typ)) = (header.kind_marker(), &header.typ) {
        markers.push((Some(kind), typ.clone()));
    }
    let Some(first) = markers.first() else {
        return Ok(None);
    };
    let agree = markers.iter().all(|(kind, raw)| match (kind, &first.0) {
        (Some(a), Some(b)) => a == b,
        (None, None) => raw.eq_ignore_ascii_case(&first.1),
        _ => false,
    });
    if !agree {
        return Err(JwtError::AmbiguousType);
    }
    Ok(Some(first.clone()))
}
