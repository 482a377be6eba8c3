//! The production profile's HTTP Basic authentication: every request (API, events, console) must carry
//! the credentials of a configured user, checked against its argon2 hash.
//!
//! Argon2 is slow on purpose, so a check runs off the async threads, at most two at a time, and a
//! successful check is remembered (as a SHA-256 of user and password, in memory only) so that a browser
//! re-sending the same credentials with every request does not pay for it again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::{ApiError, AppState};
use crate::config::{AuthConfig, Profile};

/// Remembered successful checks before the memory is cleared.
const REMEMBERED: usize = 256;

/// The users of the production profile.
pub struct Users {
    realm: String,
    hashes: HashMap<String, String>,
    verified: Mutex<HashSet<[u8; 32]>>,
    checks: Semaphore,
}

impl Users {
    /// `None` for the development profile (no authentication).
    pub fn from_config(auth: &AuthConfig) -> Option<Arc<Self>> {
        (auth.profile == Profile::Production).then(|| {
            Arc::new(Self {
                realm: auth.realm.clone(),
                hashes: auth
                    .users
                    .iter()
                    .map(|u| (u.name.clone(), u.password_hash.clone()))
                    .collect(),
                verified: Mutex::new(HashSet::new()),
                checks: Semaphore::new(2),
            })
        })
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// True when `password` is `user`'s.
    pub async fn check(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.hashes.get(user).cloned() else {
            return false;
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        if self.remembered().contains(&key) {
            return true;
        }
        let Ok(_permit) = self.checks.acquire().await else {
            return false;
        };
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || verify(&hash, &password))
            .await
            .unwrap_or(false);
        if ok {
            let mut remembered = self.remembered();
            if remembered.len() >= REMEMBERED {
                remembered.clear();
            }
            remembered.insert(key);
        }
        ok
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.verified
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// An argon2id PHC string for `password` (for `sipcast --hash-password` and tests).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// `Authorization: Basic base64(user:password)`.
fn credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Middleware: lets a request through in the development profile, or with valid credentials.
pub async fn require_user(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(users) = state.settings.users.as_ref() else {
        return next.run(request).await;
    };
    match credentials(request.headers()) {
        Some((user, password)) if users.check(&user, &password).await => next.run(request).await,
        Some((user, _)) => {
            tracing::warn!(user, path = %request.uri().path(), "rejected credentials");
            ApiError::unauthorized(users.realm()).into_response()
        }
        None => ApiError::unauthorized(users.realm()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UserConfig;

    #[tokio::test]
    async fn only_the_right_password_passes() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let users = Users::from_config(&AuthConfig {
            profile: Profile::Production,
            realm: "sipcast".into(),
            users: vec![UserConfig {
                name: "admin".into(),
                password_hash: hash,
            }],
        })
        .unwrap();
        assert!(users.check("admin", "correct horse").await);
        assert!(users.check("admin", "correct horse").await, "remembered");
        assert!(!users.check("admin", "wrong").await);
        assert!(!users.check("root", "correct horse").await);
        assert!(Users::from_config(&AuthConfig::default()).is_none());
    }

    #[test]
    fn basic_header_parsing_never_panics() {
        let mut h = HeaderMap::new();
        for (value, expected) in [
            ("Basic YWRtaW46cGE6c3M=", Some(("admin", "pa:ss"))),
            ("basic YWRtaW46", Some(("admin", ""))),
            ("Bearer abc", None),
            ("Basic !!!", None),
            ("Basic", None),
            ("Basic YWRtaW4=", None),
        ] {
            h.insert(AUTHORIZATION, value.parse().unwrap());
            let got = credentials(&h);
            assert_eq!(
                got.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
                expected,
                "{value}"
            );
        }
    }
}
