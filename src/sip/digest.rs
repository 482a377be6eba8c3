//! HTTP/SIP digest access authentication for a client: parse a challenge, compute the response,
//! write the Authorization / Proxy-Authorization value.
//!
//! RFC 2617 and RFC 7616 (MD5, SHA-256, SHA-512-256 and their `-sess` variants), as used by SIP
//! (RFC 3261 22.4). `nc` is always written as 8 hexadecimal digits (RFC 7616 3.4). Our own code because the
//! SIP crate's generator writes `nc` in decimal and gets `-sess` wrong.

use md5::Md5;
use sha2::{Digest as _, Sha256, Sha512_256};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("challenge scheme is not Digest")]
    NotDigest,
    #[error("challenge has no {0}")]
    MissingParam(&'static str),
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("challenge offers no qop we support ({0:?})")]
    UnsupportedQop(String),
    #[error("malformed challenge: {0}")]
    Malformed(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
    Sha512_256,
    Sha512_256Sess,
}

impl Algorithm {
    pub fn parse(token: &str) -> Result<Self, DigestError> {
        Ok(match token.to_ascii_uppercase().as_str() {
            "MD5" => Self::Md5,
            "MD5-SESS" => Self::Md5Sess,
            "SHA-256" => Self::Sha256,
            "SHA-256-SESS" => Self::Sha256Sess,
            "SHA-512-256" => Self::Sha512_256,
            "SHA-512-256-SESS" => Self::Sha512_256Sess,
            _ => return Err(DigestError::UnsupportedAlgorithm(token.to_owned())),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
            Self::Sha512_256 => "SHA-512-256",
            Self::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    fn is_sess(self) -> bool {
        matches!(
            self,
            Self::Md5Sess | Self::Sha256Sess | Self::Sha512_256Sess
        )
    }

    /// Lower-case hex of the algorithm's hash of `data`.
    pub fn hash(self, data: &[u8]) -> String {
        match self {
            Self::Md5 | Self::Md5Sess => hex(&Md5::digest(data)),
            Self::Sha256 | Self::Sha256Sess => hex(&Sha256::digest(data)),
            Self::Sha512_256 | Self::Sha512_256Sess => hex(&Sha512_256::digest(data)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qop {
    Auth,
    AuthInt,
}

impl Qop {
    fn name(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::AuthInt => "auth-int",
        }
    }
}

/// A parsed WWW-Authenticate or Proxy-Authenticate challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The qop we will answer with: `auth` when offered, else `auth-int`, else none (RFC 2069 compatibility).
    pub qop: Option<Qop>,
    pub stale: bool,
    pub userhash: bool,
}

impl Challenge {
    /// Parses a header value such as `Digest realm="x", nonce="y", qop="auth,auth-int", algorithm=MD5`.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let value = value.trim_start();
        let (scheme, rest) = value
            .split_once(|c: char| c.is_ascii_whitespace())
            .unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestError::NotDigest);
        }
        let params = parse_auth_params(rest)?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let realm = get("realm").ok_or(DigestError::MissingParam("realm"))?;
        let nonce = get("nonce").ok_or(DigestError::MissingParam("nonce"))?;
        let algorithm = match get("algorithm") {
            Some(a) => Algorithm::parse(&a)?,
            None => Algorithm::Md5,
        };
        let qop = match get("qop") {
            None => None,
            Some(list) => {
                let offered: Vec<String> = list
                    .split(',')
                    .map(|q| q.trim().to_ascii_lowercase())
                    .filter(|q| !q.is_empty())
                    .collect();
                if offered.iter().any(|q| q == "auth") {
                    Some(Qop::Auth)
                } else if offered.iter().any(|q| q == "auth-int") {
                    Some(Qop::AuthInt)
                } else {
                    return Err(DigestError::UnsupportedQop(list));
                }
            }
        };
        Ok(Self {
            realm,
            nonce,
            opaque: get("opaque"),
            algorithm,
            qop,
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
            userhash: get("userhash").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }
}

/// Splits `k=v, k="quoted, \"v\""` into pairs. Quoted strings may hold commas and backslash escapes.
fn parse_auth_params(input: &str) -> Result<Vec<(String, String)>, DigestError> {
    let mut params = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars
            .peek()
            .is_some_and(|c| c.is_ascii_whitespace() || *c == ',')
        {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(params);
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_ascii_whitespace() || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(DigestError::Malformed("parameter without '='"));
        }
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(DigestError::Malformed("unterminated quoted string")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(DigestError::Malformed("dangling escape")),
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_ascii_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        if name.is_empty() {
            return Err(DigestError::Malformed("empty parameter name"));
        }
        params.push((name, value));
    }
}

/// Everything that goes into one response computation.
#[derive(Debug, Clone)]
pub struct ResponseInput<'a> {
    pub algorithm: Algorithm,
    pub username: &'a str,
    pub realm: &'a str,
    pub password: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    pub nonce: &'a str,
    pub qop: Option<Qop>,
    /// Nonce count, written as 8 hex digits.
    pub nc: u32,
    pub cnonce: &'a str,
    /// Message body, hashed for qop=auth-int.
    pub body: &'a [u8],
}

/// `H(username:realm:password)`, the HA1 of the plain algorithms and the base of the `-sess` ones.
pub fn base_ha1(input: &ResponseInput<'_>) -> String {
    input
        .algorithm
        .hash(format!("{}:{}:{}", input.username, input.realm, input.password).as_bytes())
}

/// HA1 per RFC 7616 3.4.2 (`-sess`: `H(H(user:realm:pass):nonce:cnonce)`).
pub fn ha1(input: &ResponseInput<'_>) -> String {
    let a = input.algorithm;
    let base = base_ha1(input);
    if a.is_sess() {
        a.hash(format!("{base}:{}:{}", input.nonce, input.cnonce).as_bytes())
    } else {
        base
    }
}

/// The `response` value of RFC 7616 3.4.1.
pub fn response(input: &ResponseInput<'_>) -> String {
    let a = input.algorithm;
    let ha1 = ha1(input);
    let ha2 = match input.qop {
        Some(Qop::AuthInt) => {
            a.hash(format!("{}:{}:{}", input.method, input.uri, a.hash(input.body)).as_bytes())
        }
        _ => a.hash(format!("{}:{}", input.method, input.uri).as_bytes()),
    };
    match input.qop {
        None => a.hash(format!("{ha1}:{}:{ha2}", input.nonce).as_bytes()),
        Some(qop) => a.hash(
            format!(
                "{ha1}:{}:{:08x}:{}:{}:{ha2}",
                input.nonce,
                input.nc,
                input.cnonce,
                qop.name()
            )
            .as_bytes(),
        ),
    }
}

/// The userhash of RFC 7616 3.4.4: `H(username:realm)`.
pub fn userhash(algorithm: Algorithm, username: &str, realm: &str) -> String {
    algorithm.hash(format!("{username}:{realm}").as_bytes())
}

/// The credentials header value answering `challenge`.
pub fn authorization(challenge: &Challenge, input: &ResponseInput<'_>) -> String {
    let resp = response(input);
    let username = if challenge.userhash {
        userhash(challenge.algorithm, input.username, &challenge.realm)
    } else {
        input.username.to_owned()
    };
    let mut out = format!(
        "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{resp}\", algorithm={}",
        quote_escape(&username),
        quote_escape(&challenge.realm),
        quote_escape(&challenge.nonce),
        quote_escape(input.uri),
        challenge.algorithm.name(),
    );
    if let Some(qop) = input.qop {
        out.push_str(&format!(
            ", qop={}, nc={:08x}, cnonce=\"{}\"",
            qop.name(),
            input.nc,
            quote_escape(input.cnonce)
        ));
    }
    if let Some(opaque) = &challenge.opaque {
        out.push_str(&format!(", opaque=\"{}\"", quote_escape(opaque)));
    }
    if challenge.userhash {
        out.push_str(", userhash=true");
    }
    out
}

fn quote_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct VectorFile {
        vectors: Vec<Vector>,
    }

    #[derive(Deserialize)]
    struct Vector {
        id: String,
        algorithm: String,
        qop: Option<String>,
        username: String,
        realm: String,
        password: String,
        method: String,
        uri: String,
        nonce: String,
        nc: Option<String>,
        cnonce: Option<String>,
        entity_body: Option<String>,
        expected_response: String,
        expected_ha1: String,
        expected_userhash: Option<String>,
    }

    fn vectors() -> Vec<Vector> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/testdata/digest/digest_vectors.json"
        );
        let text =
            std::fs::read_to_string(path).expect("the shared digest vectors are beside the repo");
        serde_json::from_str::<VectorFile>(&text)
            .expect("vector file parses")
            .vectors
    }

    #[test]
    fn every_shared_vector_matches() {
        let vectors = vectors();
        assert!(
            vectors.len() >= 21,
            "expected the 21 shared vectors, found {}",
            vectors.len()
        );
        for v in &vectors {
            let qop = match v.qop.as_deref() {
                None => None,
                Some("auth") => Some(Qop::Auth),
                Some("auth-int") => Some(Qop::AuthInt),
                Some(other) => panic!("{}: unexpected qop {other}", v.id),
            };
            let nc =
                v.nc.as_deref()
                    .map(|n| u32::from_str_radix(n, 16).expect("nc is hex"))
                    .unwrap_or(1);
            let input = ResponseInput {
                algorithm: Algorithm::parse(&v.algorithm).unwrap(),
                username: &v.username,
                realm: &v.realm,
                password: &v.password,
                method: &v.method,
                uri: &v.uri,
                nonce: &v.nonce,
                qop,
                nc,
                cnonce: v.cnonce.as_deref().unwrap_or(""),
                body: v.entity_body.as_deref().unwrap_or("").as_bytes(),
            };
            // The file's expected_ha1 is H(user:realm:pass), also for -sess (whose session HA1 the response covers).
            assert_eq!(base_ha1(&input), v.expected_ha1, "{}: HA1", v.id);
            assert_eq!(response(&input), v.expected_response, "{}: response", v.id);
            if let Some(expected) = &v.expected_userhash {
                assert_eq!(
                    userhash(input.algorithm, &v.username, &v.realm),
                    *expected,
                    "{}: userhash",
                    v.id
                );
            }
        }
    }

    #[test]
    fn nc_is_written_as_eight_hex_digits() {
        let ch = Challenge::parse(r#"Digest realm="r", nonce="n", qop="auth""#).unwrap();
        let input = ResponseInput {
            algorithm: ch.algorithm,
            username: "u",
            realm: &ch.realm,
            password: "p",
            method: "INVITE",
            uri: "sip:a@b",
            nonce: &ch.nonce,
            qop: ch.qop,
            nc: 26,
            cnonce: "c",
            body: b"",
        };
        let header = authorization(&ch, &input);
        assert!(header.contains("nc=0000001a"), "{header}");
        assert!(
            header.contains("qop=auth,") || header.contains("qop=auth, "),
            "{header}"
        );
    }

    #[test]
    fn challenge_with_qop_list_and_quoted_commas_parses() {
        let ch = Challenge::parse(
            r#"Digest realm="a, \"quoted\" realm",nonce="abc", qop="auth-int,auth", algorithm=SHA-256, stale=TRUE, opaque="o""#,
        )
        .unwrap();
        assert_eq!(ch.realm, r#"a, "quoted" realm"#);
        assert_eq!(ch.qop, Some(Qop::Auth));
        assert_eq!(ch.algorithm, Algorithm::Sha256);
        assert!(ch.stale);
        assert_eq!(ch.opaque.as_deref(), Some("o"));
    }

    #[test]
    fn bad_challenges_are_errors_not_panics() {
        assert_eq!(
            Challenge::parse("Basic realm=\"x\""),
            Err(DigestError::NotDigest)
        );
        assert_eq!(
            Challenge::parse("Digest nonce=\"n\""),
            Err(DigestError::MissingParam("realm"))
        );
        assert!(Challenge::parse("Digest realm=\"x").is_err());
        assert!(Challenge::parse("Digest realm=\"x\", nonce=n, algorithm=SHA-1").is_err());
        assert!(Challenge::parse("Digest realm=\"x\", nonce=n, qop=\"auth-conf\"").is_err());
        assert!(Challenge::parse("Digest =x").is_err());
        assert!(Challenge::parse("").is_err());
        assert!(Challenge::parse("Digest realm=\"x\", nonce=\"n\\").is_err());
    }

    #[test]
    fn header_escapes_quotes_in_values() {
        let ch = Challenge::parse(r#"Digest realm="r\"x", nonce="n""#).unwrap();
        let input = ResponseInput {
            algorithm: ch.algorithm,
            username: "a\"b",
            realm: &ch.realm,
            password: "p",
            method: "INVITE",
            uri: "sip:a@b",
            nonce: &ch.nonce,
            qop: None,
            nc: 1,
            cnonce: "",
            body: b"",
        };
        let header = authorization(&ch, &input);
        assert!(
            header.starts_with(r#"Digest username="a\"b", realm="r\"x""#),
            "{header}"
        );
        assert!(!header.contains("nc="), "no qop, no nc: {header}");
    }
}
