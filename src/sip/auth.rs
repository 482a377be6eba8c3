//! Digest challenges a request has met and the credentials answering them (RFC 3261 22.2, 22.3), shared by
//! the INVITE and REGISTER clients.

use rand::Rng;

use super::digest::{self, Challenge};
use super::message::Incoming;
use crate::secret::Password;

#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Password,
}

#[derive(Debug, Clone)]
struct Entry {
    /// `Authorization` for 401, `Proxy-Authorization` for 407.
    header: &'static str,
    challenge: Challenge,
    nc: u32,
    stale_retried: bool,
}

/// The challenges one request (and its retries and refreshes) answers.
#[derive(Debug, Clone, Default)]
pub struct AuthState {
    entries: Vec<Entry>,
}

impl AuthState {
    /// Takes the challenges of a 401/407. True when a retry with credentials makes sense: each realm is
    /// answered once, plus once more when the server says the nonce was stale, so a wrong password ends in
    /// the challenge's status instead of a loop.
    pub fn absorb(&mut self, code: u16, msg: &Incoming) -> bool {
        let (header, values) = match code {
            401 => ("Authorization", &msg.www_authenticate),
            407 => ("Proxy-Authorization", &msg.proxy_authenticate),
            _ => return false,
        };
        let mut challenges: Vec<Challenge> = values
            .iter()
            .filter_map(|v| Challenge::parse(v).ok())
            .collect();
        if challenges.is_empty() {
            return false;
        }
        // RFC 8760 2.4: prefer the strongest algorithm offered for a realm.
        challenges.sort_by_key(|c| std::cmp::Reverse(algorithm_strength(c.algorithm)));
        let mut seen_realms = Vec::new();
        for challenge in challenges {
            if seen_realms.contains(&challenge.realm) {
                continue;
            }
            seen_realms.push(challenge.realm.clone());
            match self
                .entries
                .iter_mut()
                .find(|e| e.header == header && e.challenge.realm == challenge.realm)
            {
                Some(entry) if challenge.stale && !entry.stale_retried => {
                    entry.challenge = challenge;
                    entry.nc = 0;
                    entry.stale_retried = true;
                }
                Some(_) => return false,
                None => self.entries.push(Entry {
                    header,
                    challenge,
                    nc: 0,
                    stale_retried: false,
                }),
            }
        }
        true
    }

    /// A successful answer: the next challenge of a realm is a new one (a refresh may meet a new nonce).
    pub fn accepted(&mut self) {
        for entry in &mut self.entries {
            entry.stale_retried = false;
        }
    }

    /// Forgets a realm's challenge so that a fresh challenge of it can be answered again (used when a
    /// later request, e.g. a REGISTER refresh, is challenged after earlier success).
    pub fn reset(&mut self) {
        self.entries.clear();
    }

    /// The authorization headers for a request, counting nonce uses.
    pub fn headers(
        &mut self,
        rng: &mut impl Rng,
        credentials: &Credentials,
        method: &str,
        uri: &str,
        body: &[u8],
    ) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for entry in &mut self.entries {
            entry.nc += 1;
            const HEX: &[u8] = b"0123456789abcdef";
            let cnonce: String = (0..16).map(|_| HEX[rng.gen_range(0..16)] as char).collect();
            let input = digest::ResponseInput {
                algorithm: entry.challenge.algorithm,
                username: &credentials.username,
                realm: &entry.challenge.realm,
                password: credentials.password.expose(),
                method,
                uri,
                nonce: &entry.challenge.nonce,
                qop: entry.challenge.qop,
                nc: entry.nc,
                cnonce: &cnonce,
                body,
            };
            out.push((
                entry.header,
                digest::authorization(&entry.challenge, &input),
            ));
        }
        out
    }
}

fn algorithm_strength(algorithm: digest::Algorithm) -> u8 {
    use digest::Algorithm::*;
    match algorithm {
        Md5 | Md5Sess => 0,
        Sha256 | Sha256Sess => 1,
        Sha512_256 | Sha512_256Sess => 2,
    }
}
