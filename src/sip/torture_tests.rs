//! RFC 4475 and RFC 5118 torture messages and captured call flows from `../shared/testdata`, each with the
//! handling its RFC expects: a parse for the valid ones, and for the invalid ones an error that a UA turns
//! into 400 (505 for the unknown version), or silence for responses. The user agent's answers are checked
//! too, for every message, so a whole torture run goes through the same path a datagram takes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::message::{parse, MessageError};
use super::transaction::Timers;
use super::ua::{UaConfig, UserAgent};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata");

/// What the user agent does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handling {
    /// Parses; `Some(code)`: the UA's answer (None: a response, which the UA drops without a transaction).
    Parses(Option<u16>),
    /// Does not parse; the UA answers with this status.
    Refused(u16),
    /// Does not parse and gets no answer (a response, or a request too broken to address).
    Dropped,
}

fn manifest(dir: &str) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(Path::new(TESTDATA).join(dir).join("MANIFEST.tsv"))
        .expect("the shared testdata sits beside the repository");
    let mut lines = text.lines();
    let columns: Vec<&str> = lines.next().expect("header row").split('\t').collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            columns
                .iter()
                .zip(l.split('\t'))
                .map(|(c, v)| (c.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn ua() -> UserAgent {
    UserAgent::with_seed(
        UaConfig {
            advertised_host: "192.0.2.99".into(),
            advertised_port: 5060,
            user_agent: "torture".into(),
            timers: Timers::default(),
            no_answer_timeout: Duration::from_secs(60),
            ..UaConfig::default()
        },
        1,
    )
}

/// Feeds one datagram to a fresh UA; returns the status it answered with, if any.
fn ua_answer(bytes: &[u8]) -> Option<u16> {
    let mut ua = ua();
    let from: SocketAddr = "192.0.2.1:5060".parse().unwrap();
    ua.handle_datagram(Instant::now(), from, bytes);
    let sent = ua.poll_transmit()?;
    assert!(ua.poll_transmit().is_none(), "one answer only");
    assert!(ua.poll_event().is_none(), "a stray message is no event");
    assert_eq!(sent.destination, from, "answered where it came from");
    // Our answer echoes the request's headers, which may be as odd as the request: read the status line.
    let text = String::from_utf8_lossy(&sent.payload);
    let status = text.strip_prefix("SIP/2.0 ").expect("a status line");
    Some(status[..3].parse().expect("a status code"))
}

fn check(name: &str, bytes: &[u8], expected: Handling) {
    let parsed = parse(bytes);
    let answer = ua_answer(bytes);
    let actual = match (&parsed, answer) {
        (Ok(m), a) if m.is_request() => Handling::Parses(a),
        (Ok(_), None) => Handling::Parses(None),
        (Ok(_), Some(a)) => panic!("{name}: a response was answered with {a}"),
        (Err(_), Some(code)) => Handling::Refused(code),
        (Err(_), None) => Handling::Dropped,
    };
    assert_eq!(
        actual,
        expected,
        "{name}: parse gave {:?}",
        parsed.as_ref().map(|m| m.start.clone())
    );
    if let Ok(m) = &parsed {
        // The SDP parser sees every body too: a result, never a panic.
        let _ = crate::sdp::parse(&m.body);
        let _ = crate::sdp::plan_from_answer(&m.body);
    }
}

/// RFC 4475: the handling each message calls for from a UA that places calls (so refuses incoming INVITEs
/// with 403 by policy, and has no REGISTER service: 405).
fn rfc4475_expected(file: &str) -> Handling {
    use Handling::*;
    match file {
        // 3.1.1: valid messages.
        "wsinv.dat" | "invut.dat" | "sdp01.dat" | "inv2543.dat" | "esc01.dat" | "longreq.dat" => {
            Parses(Some(403))
        }
        "intmeth.dat" | "esc02.dat" => Parses(Some(501)),
        "lwsdisp.dat" | "semiuri.dat" | "transports.dat" | "zeromf.dat" | "badbranch.dat" => {
            Parses(Some(200))
        }
        "escnull.dat" | "dblreq.dat" | "cparam01.dat" | "cparam02.dat" | "regescrt.dat"
        | "regaut01.dat" | "unksm2.dat" => Parses(Some(405)),
        "mpart01.dat" => Parses(Some(405)),
        "unreason.dat" | "noreason.dat" | "bcast.dat" => Parses(None),
        // 3.3.2, 3.3.3: unknown or unsupported Request-URI scheme.
        "unkscm.dat" | "novelsc.dat" => Parses(Some(416)),
        // 3.3.5: unsupported Require.
        "bext01.dat" => Parses(Some(420)),
        // 3.1.2: invalid messages get 400, the unknown version 505; invalid responses are dropped.
        "badvers.dat" => Refused(505),
        "scalarlg.dat" | "bigcode.dat" => Dropped,
        // The archive's copy lacks the empty line that ends the header section; refused all the same.
        "baddn.dat" => Refused(400),
        "badinv01.dat" | "clerr.dat" | "ncl.dat" | "scalar02.dat" | "quotbal.dat"
        | "ltgtruri.dat" | "lwsruri.dat" | "lwsstart.dat" | "trws.dat" | "escruri.dat"
        | "baddate.dat" | "regbadct.dat" | "badaspec.dat" | "mismatch01.dat" | "mismatch02.dat"
        | "insuf.dat" | "multi01.dat" | "mcl01.dat" => Refused(400),
        // Not described by the RFC (no SIP-Version, no Via to answer along): must not break.
        "test.dat" => Dropped,
        other => panic!("no expectation for {other}"),
    }
}

#[test]
fn rfc4475_torture_messages_get_the_rfcs_handling() {
    let rows = manifest("rfc4475");
    assert_eq!(rows.len(), 50, "the whole archive");
    for row in rows {
        let file = &row["file"];
        let bytes = std::fs::read(Path::new(TESTDATA).join("rfc4475").join(file)).unwrap();
        let expected = rfc4475_expected(file);
        // The manifest's own validity column agrees with the expectation's kind.
        let validity = row["rfc_validity"].as_str();
        match expected {
            Handling::Parses(_) => assert!(!validity.starts_with("invalid"), "{file}"),
            Handling::Refused(_) | Handling::Dropped => assert!(
                validity.starts_with("invalid") || validity == "unreferenced",
                "{file} is {validity} but refused"
            ),
        }
        check(file, &bytes, expected);
    }
    let errata = Path::new(TESTDATA).join("rfc4475/errata/baddn.with-terminating-crlf.dat");
    check(
        "errata/baddn",
        &std::fs::read(errata).unwrap(),
        Handling::Refused(400),
    );
}

#[test]
fn rfc5118_ipv6_torture_messages_get_the_rfcs_handling() {
    let rows = manifest("rfc5118");
    assert_eq!(rows.len(), 12);
    for row in rows {
        let validity = row["rfc_validity"].as_str();
        for file in [row["file"].clone(), row["wire_file"].clone()] {
            let bytes = std::fs::read(Path::new(TESTDATA).join("rfc5118").join(&file)).unwrap();
            let name = format!("rfc5118/{file}");
            if validity == "invalid" {
                check(&name, &bytes, Handling::Refused(400));
                continue;
            }
            match parse(&bytes) {
                Ok(m) => {
                    assert!(m.is_request(), "{name}");
                    check(&name, &bytes, Handling::Parses(ua_answer(&bytes)));
                }
                // RFC 5118 4.6 and 4.8 declare a Content-Length larger than their body (the MANIFEST notes
                // it): 18.3 makes that a 400 over UDP. With the length corrected they parse.
                Err(MessageError::Truncated {
                    declared,
                    available,
                }) => {
                    assert!(
                        file.contains("ipv6-in-sdp") || file.contains("mult-ip-in-sdp"),
                        "{name}: unexpected truncation"
                    );
                    check(&name, &bytes, Handling::Refused(400));
                    let text = String::from_utf8(bytes).unwrap();
                    let fixed = text.replace(
                        &format!("Content-Length: {declared}"),
                        &format!("Content-Length: {available}"),
                    );
                    let m = parse(fixed.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
                    crate::sdp::parse(&m.body).unwrap_or_else(|e| panic!("{name}: {e}"));
                }
                Err(e) => panic!("{name} is {validity} but: {e}"),
            }
        }
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "sip") {
            out.push(path);
        }
    }
}

#[test]
fn captured_flows_parse() {
    let root = Path::new(TESTDATA).join("flows");
    let mut files = Vec::new();
    files_under(&root, &mut files);
    let listed = manifest("flows").len();
    assert!(
        files.len() >= listed,
        "{} files, {listed} listed",
        files.len()
    );
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let m = parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Without Content-Length (some RFC 3665 transcriptions) a datagram's body is the rest (18.3).
        if let Some(declared) = m.header("content-length") {
            assert_eq!(m.body.len().to_string(), declared, "{}", path.display());
        }
        let sdp = m
            .header("content-type")
            .is_some_and(|t| t.eq_ignore_ascii_case("application/sdp"));
        let _ = crate::sdp::parse(&m.body);
        if sdp && m.header("content-length").is_some() {
            crate::sdp::parse(&m.body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        // The UA's path never panics either, and never answers a response.
        let answer = ua_answer(&bytes);
        if !m.is_request() {
            assert_eq!(answer, None, "{}", path.display());
        }
    }
}
