//! The admin commands of the `confab-server` binary, as functions (the
//! binary parses arguments, reads files and the clock, and prints).

use confab_proto::jwt::{JwkError, JwkSet, JwtError, Validation, verify};
use confab_proto::token::TokenKind;
use serde_json::{Value, json};

/// What `jwt verify` checks besides the signature, `exp`, `nbf` and `iat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyArgs {
    /// Required `iss`; `None`: not checked.
    pub issuer: Option<String>,
    /// An audience `aud` must contain; `None`: not checked.
    pub audience: Option<String>,
    /// Unix seconds.
    pub now: u64,
    /// Clock skew tolerated, in seconds.
    pub leeway_secs: u64,
}

/// Why `jwt verify` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyFailure {
    /// The JWK Set document is unusable.
    Jwks(JwkError),
    /// The token was refused.
    Token(JwtError),
}

/// Verifies `token` against the JWK Set document `jwks`; on success, the
/// pretty JSON `{"header": ..., "claims": ..., "kind": ...}` where `kind` is
/// `access`, `refresh` or null.
pub fn jwt_verify(jwks: &[u8], args: &VerifyArgs, token: &str) -> Result<String, VerifyFailure> {
    let keys = JwkSet::parse(jwks).map_err(VerifyFailure::Jwks)?;
    let validation = Validation {
        issuer: args.issuer.clone(),
        audience: args.audience.clone(),
        leeway_secs: args.leeway_secs,
        ..Validation::default()
    };
    let verified = verify(token, &keys, &validation, args.now).map_err(VerifyFailure::Token)?;
    let kind = match verified.kind {
        Some(TokenKind::Access) => Value::from("access"),
        Some(TokenKind::Refresh) => Value::from("refresh"),
        None => Value::Null,
    };
    let doc = json!({ "header": verified.header_json, "claims": verified.claims_json, "kind": kind });
    Ok(serde_json::to_string_pretty(&doc).unwrap_or_default())
}
