//! A minimal, total SIP message parser and the few builders a UAS needs. Never panics on input: every
//! slice is taken with checked indices and every failure is an `Err`.

use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { code: u16, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    /// Headers in order, names as sent, values trimmed (folded lines joined).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    NoHeaderEnd,
    BadStartLine,
    BadHeader,
    BadContentLength,
    Truncated,
    NotUtf8,
}

/// Compact header forms (RFC 3261 7.3.3) -> full names.
fn expand(name: &str) -> &str {
    match name {
        "v" | "V" => "Via",
        "f" | "F" => "From",
        "t" | "T" => "To",
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        _ => name,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
    // Keep-alive CRLFs (RFC 5626) and stray whitespace before a message.
    let start = buf
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .ok_or(ParseError::NoHeaderEnd)?;
    let buf = buf.get(start..).ok_or(ParseError::NoHeaderEnd)?;
    let end = find(buf, b"\r\n\r\n").ok_or(ParseError::NoHeaderEnd)?;
    let head = std::str::from_utf8(buf.get(..end).ok_or(ParseError::NoHeaderEnd)?)
        .map_err(|_| ParseError::NotUtf8)?;
    let rest = buf.get(end + 4..).unwrap_or(&[]);
    let mut lines = head.split("\r\n");
    let first = lines.next().ok_or(ParseError::BadStartLine)?;
    let start = parse_start_line(first)?;
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().ok_or(ParseError::BadHeader)?;
            last.1.push(' ');
            last.1.push_str(line.trim());
            continue;
        }
        let (name, value) = line.split_once(':').ok_or(ParseError::BadHeader)?;
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(ParseError::BadHeader);
        }
        headers.push((expand(name).to_owned(), value.trim().to_owned()));
    }
    let mut message = Message {
        start,
        headers,
        body: Vec::new(),
    };
    let body = match message.header("Content-Length") {
        Some(v) => {
            let len: usize = v.parse().map_err(|_| ParseError::BadContentLength)?;
            rest.get(..len).ok_or(ParseError::Truncated)?
        }
        None => rest,
    };
    message.body = body.to_vec();
    Ok(message)
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    let mut parts = line.splitn(3, ' ');
    let a = parts.next().unwrap_or("");
    let b = parts.next().unwrap_or("");
    let c = parts.next().unwrap_or("");
    if a == "SIP/2.0" {
        let code: u16 = b.parse().map_err(|_| ParseError::BadStartLine)?;
        if !(100..700).contains(&code) {
            return Err(ParseError::BadStartLine);
        }
        return Ok(StartLine::Response {
            code,
            reason: c.to_owned(),
        });
    }
    if c != "SIP/2.0" || a.is_empty() || b.is_empty() || !a.bytes().all(|x| x.is_ascii_uppercase())
    {
        return Err(ParseError::BadStartLine);
    }
    Ok(StartLine::Request {
        method: a.to_owned(),
        uri: b.to_owned(),
    })
}

impl Message {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header of that name, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let v = self.header("CSeq")?;
        let (n, m) = v.split_once(char::is_whitespace)?;
        Some((n.trim().parse().ok()?, m.trim()))
    }

    /// The transaction-defining fields a UAS needs from every request.
    pub fn has_dialog_headers(&self) -> bool {
        ["Via", "From", "To", "Call-ID", "CSeq"]
            .iter()
            .all(|h| self.header(h).is_some())
            && self.cseq().is_some()
    }
}

/// The user part of a SIP URI (`sip:alice@host` -> `alice`), if any.
pub fn uri_user(uri: &str) -> Option<&str> {
    let uri = uri.trim().trim_start_matches('<');
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let (user, _) = rest.split_once('@')?;
    let user = user.split([';', ':']).next()?;
    (!user.is_empty()).then_some(user)
}

/// The URI of a name-addr or addr-spec header value (`"A" <sip:a@h>;tag=1` -> `sip:a@h`).
pub fn header_uri(value: &str) -> &str {
    if let Some(open) = value.find('<') {
        let after = value.get(open + 1..).unwrap_or("");
        return after.split('>').next().unwrap_or("");
    }
    value.split(';').next().unwrap_or("").trim()
}

/// A header parameter outside the URI (`;tag=...`).
pub fn header_param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let params = match value.rfind('>') {
        Some(close) => value.get(close + 1..)?,
        None => value.split_once(';').map(|(_, p)| p)?,
    };
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// host:port of a SIP URI (port 5060 by default).
pub fn uri_host_port(uri: &str) -> Option<(String, u16)> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = hostport.split([';', '?']).next()?;
    match hostport.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => {
            Some((h.to_owned(), p.parse().ok()?))
        }
        _ => Some((hostport.to_owned(), 5060)),
    }
}

/// A response to `request`: Via, From, To (with `to_tag` added when it has none), Call-ID and CSeq copied.
pub fn response(
    request: &Message,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, String)],
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut out = String::with_capacity(512);
    let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
    for via in request.all("Via") {
        let _ = write!(out, "Via: {via}\r\n");
    }
    for rr in request.all("Record-Route") {
        let _ = write!(out, "Record-Route: {rr}\r\n");
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        let Some(value) = request.header(name) else {
            continue;
        };
        if name == "To" && header_param(value, "tag").is_none() {
            if let Some(tag) = to_tag {
                let _ = write!(out, "To: {value};tag={tag}\r\n");
                continue;
            }
        }
        let _ = write!(out, "{name}: {value}\r\n");
    }
    for (name, value) in extra {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let mut bytes = out.into_bytes();
    match body {
        Some((content_type, body)) => {
            bytes.extend_from_slice(
                format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            bytes.extend_from_slice(body);
        }
        None => bytes.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:ua3@127.0.0.1:5070 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport\r\n\
v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKdef\r\n\
From: <sip:gw@127.0.0.1>;tag=gwtag\r\n\
To: <sip:ua3@127.0.0.1:5070>\r\n\
Call-ID: abc@sipcast\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:gw@127.0.0.1:5060>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\r\nEXTRA";

    #[test]
    fn parses_request_with_compact_and_repeated_headers() {
        let m = parse(INVITE.as_bytes()).unwrap();
        assert_eq!(m.method(), Some("INVITE"));
        assert_eq!(m.all("Via").count(), 2);
        assert_eq!(m.cseq(), Some((1, "INVITE")));
        assert_eq!(m.body, b"v=0\r");
        assert_eq!(
            uri_user(match &m.start {
                StartLine::Request { uri, .. } => uri,
                _ => unreachable!(),
            }),
            Some("ua3")
        );
        assert_eq!(
            header_param(m.header("From").unwrap(), "tag"),
            Some("gwtag")
        );
        assert_eq!(header_param(m.header("To").unwrap(), "tag"), None);
        assert_eq!(
            header_uri(m.header("Contact").unwrap()),
            "sip:gw@127.0.0.1:5060"
        );
        assert_eq!(
            uri_host_port("sip:gw@127.0.0.1:5060;transport=udp"),
            Some(("127.0.0.1".into(), 5060))
        );
        let r = response(
            &m,
            200,
            "OK",
            Some("t1"),
            &[],
            Some(("application/sdp", b"x")),
        );
        let r = parse(&r).unwrap();
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.all("Via").count(), 2);
        assert_eq!(header_param(r.header("To").unwrap(), "tag"), Some("t1"));
        assert_eq!(r.body, b"x");
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let inputs: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\r\n\r\n".to_vec(),
            b"SIP/2.0 abc OK\r\n\r\n".to_vec(),
            b"INVITE sip:x SIP/2.0\r\n bad\r\n\r\n".to_vec(),
            b"INVITE sip:x SIP/2.0\r\nContent-Length: 99\r\n\r\nabc".to_vec(),
            b"INVITE sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n".to_vec(),
            vec![0xff, 0xfe, b'\r', b'\n', b'\r', b'\n'],
        ];
        for input in inputs {
            assert!(parse(&input).is_err(), "{input:?}");
        }
        // Every prefix of a valid message, and byte-flipped variants, parse or fail cleanly.
        let bytes = INVITE.as_bytes();
        for i in 0..bytes.len() {
            let _ = parse(&bytes[..i]);
            let mut flipped = bytes.to_vec();
            flipped[i] ^= 0x5a;
            if let Ok(m) = parse(&flipped) {
                let _ = m.cseq();
                let _ = m.header("To").map(|t| header_param(t, "tag"));
                let _ = m.header("Contact").map(header_uri).map(uri_host_port);
            }
        }
        for s in ["sip:", "sip:@", "<sip:a@b:x>", "sip:a@[::1]", "x"] {
            let _ = uri_user(s);
            let _ = uri_host_port(s);
            let _ = header_param(s, "tag");
            let _ = header_uri(s);
        }
    }
}
