//! Bearer tokens: operator actions always need one; viewing only with `protect_viewing`.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use super::error::ApiError;

/// Who may do what.
#[derive(Debug, Clone)]
pub struct Auth {
    /// The operator token (`Authorization: Bearer <token>`).
    pub token: String,
    /// The principal recorded in the audit log for actions made with the token.
    pub principal: String,
    /// Whether viewing (`GET /api/*`, `/metrics`, `/ws`) needs the token too.
    pub protect_viewing: bool,
}

impl Auth {
    /// Checks an operator action's headers; returns the principal.
    pub(crate) fn operator(&self, headers: &HeaderMap) -> Result<&str, ApiError> {
        match bearer(headers) {
            Some(t) if same(t, &self.token) => Ok(&self.principal),
            Some(_) => Err(ApiError::unauthorized("the bearer token is not valid")),
            None => Err(ApiError::unauthorized(
                "operator actions need `Authorization: Bearer <token>` (the token is printed in \
                 the console URL when the server starts)",
            )),
        }
    }

    /// Checks a viewing request; `query_token` is `?token=` (accepted on `/ws` only).
    pub(crate) fn viewer(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<(), ApiError> {
        if !self.protect_viewing {
            return Ok(());
        }
        match bearer(headers).or(query_token) {
            Some(t) if same(t, &self.token) => Ok(()),
            _ => Err(ApiError::unauthorized(
                "viewing is token-protected on this server: send `Authorization: Bearer <token>`",
            )),
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random token: 32 hex digits from the OS's random source.
pub fn generate_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        let t = generate_token().unwrap();
        assert_eq!(t.len(), 32);
        assert_ne!(t, generate_token().unwrap());
    }
}
