//! SIP messages (RFC 3261 7, 20, 25): our own strict, never-panicking parser for what peers send, the facts
//! the user agent acts on ([`Incoming`]), stream framing for TCP (18.3), and outgoing requests built as rsip
//! values.
//!
//! The parser accepts what RFC 4475 and RFC 5118 call well-formed (line folding, compact header names, LWS
//! around separators, unusual token characters, bare-LF line ends) and refuses what they call invalid with an
//! error that says which response a request deserves (400, or 505 for an unknown SIP version).

use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("not a SIP message: {0}")]
    Parse(String),
    #[error("missing or malformed {0} header")]
    Header(&'static str),
    #[error("unsupported SIP version {0}")]
    Version(String),
    #[error("Content-Length {declared} is larger than the {available} octets received")]
    Truncated { declared: usize, available: usize },
}

impl MessageError {
    /// The response a request that fails this way deserves (RFC 3261 8.2, 21.5.6).
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            Self::Version(_) => (505, "Version Not Supported"),
            _ => (400, "Bad Request"),
        }
    }
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { code: u16, reason: String },
}

/// Transport named in a Via or a `transport=` URI parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn via_name(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
        }
    }

    /// RFC 3261 18: TCP is reliable; timers that only exist to retransmit are then zero.
    pub fn is_reliable(self) -> bool {
        self == Self::Tcp
    }
}

/// What the user agent needs of a received message. Headers we answer with are kept raw, to be echoed.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub start: StartLine,
    pub call_id: String,
    pub cseq: u32,
    pub cseq_method: String,
    /// Branch of the top Via: the transaction key (RFC 3261 17.1.3, 17.2.3).
    pub branch: Option<String>,
    /// Transport of the top Via, as sent (`UDP`, `TCP`, `SCTP`, ...).
    pub via_transport: String,
    /// `rport` of the top Via (RFC 3581): `Some(None)` when asked for without a value.
    pub rport: Option<Option<u16>>,
    /// `received` of the top Via (RFC 3261 18.2.1).
    pub received: Option<String>,
    pub from_tag: Option<String>,
    pub to_tag: Option<String>,
    /// Contact URI, the remote target of a dialog (RFC 3261 12.1.2).
    pub contact: Option<String>,
    /// Record-Route entries in message order, each `<uri;params>`.
    pub record_route: Vec<String>,
    pub www_authenticate: Vec<String>,
    pub proxy_authenticate: Vec<String>,
    /// Raw Via, From, To, Call-ID and CSeq values, to copy into a response (RFC 3261 8.2.6.2).
    pub echo: Vec<(&'static str, String)>,
    /// Every header, name in lower case with compact forms expanded, value unfolded and trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Incoming {
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The first value of a header (`name` in lower case, full form).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every element of a comma-separated header, over all its occurrences.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| split_list(v))
            .collect()
    }

    /// Whether an option-tag list header (Supported, Require, Allow) names `tag`, case-insensitively.
    pub fn lists_token(&self, name: &str, tag: &str) -> bool {
        self.list(name).iter().any(|t| t.eq_ignore_ascii_case(tag))
    }

    /// The raw value of an echoed header (Via, From, To, Call-ID, CSeq).
    pub fn echoed(&self, name: &str) -> Option<&str> {
        self.echo
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// RFC 3261 7.3.3 compact forms, and the RFC 3262/3515/4028/... ones we may meet.
fn expand_compact(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let full = match lower.as_str() {
        "i" => "call-id",
        "m" => "contact",
        "e" => "content-encoding",
        "l" => "content-length",
        "c" => "content-type",
        "f" => "from",
        "s" => "subject",
        "k" => "supported",
        "t" => "to",
        "v" => "via",
        "o" => "event",
        "r" => "refer-to",
        "b" => "referred-by",
        "x" => "session-expires",
        "u" => "allow-events",
        "a" => "accept-contact",
        "j" => "reject-contact",
        "d" => "request-disposition",
        "y" => "identity",
        "n" => "identity-info",
        _ => return lower,
    };
    full.to_owned()
}

/// RFC 3261 25.1 `token` characters.
pub fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

/// The header section and the body of a message: the header section ends at the first empty line (CRLF or
/// bare LF). Leading empty lines are skipped (RFC 3261 7.5). A datagram that ends without the empty line
/// is taken as all headers (RFC 5118 4.10's examples lack it; its robustness principle asks to tolerate it).
fn split_head(bytes: &[u8]) -> Result<(&[u8], &[u8]), MessageError> {
    let mut start = 0;
    while start < bytes.len() && (bytes[start] == b'\r' || bytes[start] == b'\n') {
        start += 1;
    }
    let bytes = &bytes[start..];
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'\n') {
        let nl = i + offset;
        // The line after this newline is empty if it is "\n" or "\r\n".
        let rest = &bytes[nl + 1..];
        if rest.first() == Some(&b'\n') {
            return Ok((&bytes[..nl], &rest[1..]));
        }
        if rest.starts_with(b"\r\n") {
            return Ok((&bytes[..nl], &rest[2..]));
        }
        i = nl + 1;
    }
    let end = bytes
        .iter()
        .rposition(|&b| b != b'\r' && b != b'\n')
        .map_or(0, |p| p + 1);
    if end == 0 {
        return Err(MessageError::Parse("empty message".into()));
    }
    Ok((&bytes[..end], &[]))
}

/// Header lines with continuation lines (starting with SP or HT) folded into the line before (7.3.1).
fn unfold(head: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for line in head.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            if let Some(last) = lines.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
                continue;
            }
        }
        lines.push(line.to_owned());
    }
    lines
}

/// Case-insensitive ASCII prefix test that never slices inside a character.
fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
}

fn parse_start_line(line: &str) -> Result<StartLine, MessageError> {
    if starts_with_ci(line, "SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (7.2).
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            return Err(MessageError::Version(version.to_owned()));
        }
        let code = parts.next().unwrap_or_default();
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MessageError::Parse(format!("bad status code {code:?}")));
        }
        let code: u16 = code
            .parse()
            .map_err(|_| MessageError::Parse("bad status code".into()))?;
        if !(100..=699).contains(&code) {
            return Err(MessageError::Parse(format!(
                "status code {code} out of range"
            )));
        }
        let reason = parts.next().unwrap_or_default().trim().to_owned();
        return Ok(StartLine::Response { code, reason });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version (7.1): exactly single spaces.
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 3 {
        return Err(MessageError::Parse(
            "request line is not Method SP Request-URI SP SIP-Version".into(),
        ));
    }
    let (method, uri, version) = (parts[0], parts[1], parts[2]);
    if !is_token(method) {
        return Err(MessageError::Parse(format!("bad method {method:?}")));
    }
    let looks_like_version = starts_with_ci(version, "SIP/")
        && version.len() > 4
        && version
            .bytes()
            .skip(4)
            .all(|c| c.is_ascii_digit() || c == b'.');
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(if looks_like_version {
            MessageError::Version(version.to_owned())
        } else {
            MessageError::Parse(format!("bad SIP version {version:?}"))
        });
    }
    check_request_uri(uri)?;
    Ok(StartLine::Request {
        method: method.to_owned(),
        uri: uri.to_owned(),
    })
}

/// A Request-URI: any absolute URI; for sip/sips the RFC 3261 19.1 rules (no headers, IPv6 in brackets).
fn check_request_uri(uri: &str) -> Result<(), MessageError> {
    let bad = |why: &str| MessageError::Parse(format!("bad Request-URI: {why}"));
    if uri.is_empty() || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("empty or contains whitespace"));
    }
    if uri.contains(['<', '>', '"']) {
        return Err(bad("contains < > or quotes"));
    }
    let (scheme, _) = uri.split_once(':').ok_or_else(|| bad("no scheme"))?;
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok {
        return Err(bad("bad scheme"));
    }
    if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        let parsed = SipUri::parse(uri).map_err(|_| bad("not a SIP URI"))?;
        if parsed.has_headers {
            // 19.1.1: headers are not allowed in a Request-URI.
            return Err(bad("escaped headers"));
        }
    }
    Ok(())
}

/// A `sip:`/`sips:` URI taken apart (RFC 3261 19.1.1; IPv6 references per RFC 5118).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub secure: bool,
    pub user: Option<String>,
    /// The host without IPv6 brackets.
    pub host: String,
    pub port: Option<u16>,
    /// URI parameters, names in lower case.
    pub params: Vec<(String, Option<String>)>,
    pub has_headers: bool,
}

impl SipUri {
    pub fn parse(uri: &str) -> Result<Self, MessageError> {
        let bad = || MessageError::Parse(format!("not a SIP URI: {uri:?}"));
        if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (scheme, rest) = uri.split_once(':').ok_or_else(bad)?;
        let secure = if scheme.eq_ignore_ascii_case("sip") {
            false
        } else if scheme.eq_ignore_ascii_case("sips") {
            true
        } else {
            return Err(bad());
        };
        // userinfo may hold ; ? , : (RFC 4475 3.1.1.2, 3.1.1.9); it ends at the first @.
        let (user, hostpart) = match rest.split_once('@') {
            Some((u, h)) => (Some(u.to_owned()), h),
            None => (None, rest),
        };
        if user.as_deref() == Some("") {
            return Err(bad());
        }
        let (hostpart, has_headers) = match hostpart.split_once('?') {
            Some((h, _)) => (h, true),
            None => (hostpart, false),
        };
        let mut pieces = hostpart.split(';');
        let hostport = pieces.next().unwrap_or_default();
        let mut params = Vec::new();
        for p in pieces {
            if p.is_empty() {
                return Err(bad());
            }
            match p.split_once('=') {
                Some((n, v)) => params.push((n.to_ascii_lowercase(), Some(v.to_owned()))),
                None => params.push((p.to_ascii_lowercase(), None)),
            }
        }
        let (host, port) = split_hostport(hostport).ok_or_else(bad)?;
        Ok(Self {
            secure,
            user,
            host,
            port,
            params,
            has_headers,
        })
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref())
    }

    /// The `transport=` parameter, when it names one we speak.
    pub fn transport(&self) -> Option<Transport> {
        match self.param("transport").flatten() {
            Some(t) if t.eq_ignore_ascii_case("tcp") => Some(Transport::Tcp),
            Some(t) if t.eq_ignore_ascii_case("udp") => Some(Transport::Udp),
            _ => None,
        }
    }

    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The socket address when the host is an IP literal (port 5060 when absent); names need DNS.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.ip()
            .map(|ip| SocketAddr::new(ip, self.port.unwrap_or(5060)))
    }
}

/// `host[:port]` with RFC 5118 rules: an IPv6 reference must be bracketed, so more than one colon outside
/// brackets is an error (RFC 5118 4.2). Returns the host without brackets.
pub fn split_hostport(hostport: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        if h.is_empty()
            || !h
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return None;
        }
        match after {
            "" => (h, None),
            _ => (h, Some(after.strip_prefix(':')?)),
        }
    } else {
        match hostport.split_once(':') {
            Some((_, p)) if p.contains(':') => return None,
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if !host_ok {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    Some((host.to_owned(), port))
}

/// A name-addr or addr-spec with its header parameters (RFC 3261 20.10, 20.20, 20.39).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: String,
    /// Header parameters, names in lower case.
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref())
    }

    /// Parses one element. Refuses unbalanced quotes, non-token unquoted display names, whitespace inside
    /// `<...>`, an addr-spec with `?` or `,` (20: those need brackets), and empty parameters.
    pub fn parse(value: &str) -> Result<Self, MessageError> {
        let bad = |why: &str| MessageError::Parse(format!("bad name-addr {value:?}: {why}"));
        let v = value.trim();
        let (display, uri, rest) = if let Some(after_quote) = v.strip_prefix('"') {
            let (display, after) =
                take_quoted(after_quote).ok_or_else(|| bad("unterminated quote"))?;
            let after = after.trim_start();
            let inner = after
                .strip_prefix('<')
                .ok_or_else(|| bad("no <uri> after display name"))?;
            let (uri, rest) = inner.split_once('>').ok_or_else(|| bad("no >"))?;
            (Some(display), uri, rest)
        } else if let Some(lt) = v.find('<') {
            let display = v[..lt].trim();
            if !display
                .split_whitespace()
                .all(|word| word.chars().all(is_token_char))
            {
                return Err(bad("display name is not tokens"));
            }
            let (uri, rest) = v[lt + 1..].split_once('>').ok_or_else(|| bad("no >"))?;
            let display = (!display.is_empty()).then(|| display.to_owned());
            (display, uri, rest)
        } else {
            let (uri, rest) = match v.find(';') {
                Some(i) => (v[..i].trim(), &v[i..]),
                None => (v, ""),
            };
            if uri.contains(['?', ',', '"']) {
                return Err(bad("addr-spec with ? or , must be in <>"));
            }
            (None, uri, rest)
        };
        if uri.is_empty()
            || uri
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '<')
        {
            return Err(bad("whitespace in URI"));
        }
        if !uri.contains(':') {
            return Err(bad("URI without scheme"));
        }
        let params = parse_params(rest).ok_or_else(|| bad("bad parameters"))?;
        Ok(Self {
            display,
            uri: uri.to_owned(),
            params,
        })
    }
}

/// The content of a quoted string whose opening quote was consumed, and what follows the closing quote.
fn take_quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &s[i + 1..])),
            _ => out.push(c),
        }
    }
    None
}

/// `*( SEMI generic-param )` with LWS around `;` and `=` (RFC 4475 3.1.1.1). None for an empty parameter.
fn parse_params(rest: &str) -> Option<Vec<(String, Option<String>)>> {
    let rest = rest.trim();
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let rest = rest.strip_prefix(';')?;
    let mut out = Vec::new();
    for p in split_outside_quotes(rest, ';') {
        let p = p.trim();
        if p.is_empty() {
            return None;
        }
        match p.split_once('=') {
            Some((n, v)) => {
                let (n, v) = (n.trim(), v.trim());
                if !is_token(n) || v.is_empty() {
                    return None;
                }
                out.push((n.to_ascii_lowercase(), Some(v.trim_matches('"').to_owned())));
            }
            None if is_token(p) => out.push((p.to_ascii_lowercase(), None)),
            None => return None,
        }
    }
    Some(out)
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut in_quote, mut escaped, mut start) = (false, false, 0);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            c if c == sep && !in_quote => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// A Via value (RFC 3261 20.42): `SIP / 2.0 / transport sent-by *(; param)`, LWS allowed around `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    pub fn parse(value: &str) -> Result<Self, MessageError> {
        let bad = || MessageError::Header("Via");
        let mut slash = value.splitn(3, '/');
        let (name, version, rest) = (
            slash.next().ok_or_else(bad)?.trim(),
            slash.next().ok_or_else(bad)?.trim(),
            slash.next().ok_or_else(bad)?.trim_start(),
        );
        if !name.eq_ignore_ascii_case("SIP") {
            return Err(bad());
        }
        if version != "2.0" {
            return Err(MessageError::Version(format!("{name}/{version}")));
        }
        let split = rest.find(char::is_whitespace).ok_or_else(bad)?;
        let transport = &rest[..split];
        if !is_token(transport) {
            return Err(bad());
        }
        let rest = rest[split..].trim_start();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (rest[..i].trim(), &rest[i..]),
            None => (rest.trim(), ""),
        };
        let (host, port) = split_hostport(sent_by).ok_or_else(bad)?;
        let params = parse_params(params).ok_or_else(bad)?;
        Ok(Self {
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref())
    }
}

/// Headers that must appear at most once (RFC 3261 7.3.1, RFC 4475 3.3.8).
const SINGLE: &[&str] = &[
    "call-id",
    "cseq",
    "from",
    "to",
    "max-forwards",
    "content-length",
];

fn parse_u32(value: &str, header: &'static str) -> Result<u32, MessageError> {
    let v = value.trim();
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MessageError::Header(header));
    }
    v.parse().map_err(|_| MessageError::Header(header))
}

/// Parses a message received as one datagram (or framed from a stream). Never panics.
pub fn parse(bytes: &[u8]) -> Result<Incoming, MessageError> {
    let (head, rest) = split_head(bytes)?;
    let head = std::str::from_utf8(head)
        .map_err(|_| MessageError::Parse("header section is not UTF-8".into()))?;
    let lines = unfold(head);
    let start = parse_start_line(lines.first().map(String::as_str).unwrap_or_default())?;
    let mut headers: Vec<(String, String)> = Vec::with_capacity(lines.len());
    let mut echo = Vec::new();
    for line in lines.iter().skip(1) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| MessageError::Parse(format!("header line without colon: {line:?}")))?;
        let name = name.trim_end();
        if !is_token(name) {
            return Err(MessageError::Parse(format!("bad header name {name:?}")));
        }
        let name = expand_compact(name);
        let value = value.trim().to_owned();
        let echoed = match name.as_str() {
            "via" => Some("Via"),
            "from" => Some("From"),
            "to" => Some("To"),
            "call-id" => Some("Call-ID"),
            "cseq" => Some("CSeq"),
            _ => None,
        };
        if let Some(echoed) = echoed {
            echo.push((echoed, value.clone()));
        }
        headers.push((name, value));
    }
    let count = |n: &str| headers.iter().filter(|(h, _)| h == n).count();
    for name in SINGLE {
        if count(name) > 1 {
            return Err(MessageError::Parse(format!("more than one {name} header")));
        }
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(h, _)| h == n)
            .map(|(_, v)| v.as_str())
    };

    let call_id = get("call-id")
        .filter(|v| !v.is_empty() && !v.contains(char::is_whitespace))
        .ok_or(MessageError::Header("Call-ID"))?
        .to_owned();
    let cseq_value = get("cseq").ok_or(MessageError::Header("CSeq"))?;
    let (seq, cseq_method) = cseq_value
        .split_once(char::is_whitespace)
        .ok_or(MessageError::Header("CSeq"))?;
    let cseq = parse_u32(seq, "CSeq")?;
    let cseq_method = cseq_method.trim().to_owned();
    if !is_token(&cseq_method) {
        return Err(MessageError::Header("CSeq"));
    }
    if let StartLine::Request { method, .. } = &start {
        // 8.2 / RFC 4475 3.1.2.17: the CSeq method must match the request's.
        if *method != cseq_method {
            return Err(MessageError::Header("CSeq"));
        }
    }
    let from = NameAddr::parse(get("from").ok_or(MessageError::Header("From"))?)
        .map_err(|_| MessageError::Header("From"))?;
    let to = NameAddr::parse(get("to").ok_or(MessageError::Header("To"))?)
        .map_err(|_| MessageError::Header("To"))?;
    if let Some(mf) = get("max-forwards") {
        if parse_u32(mf, "Max-Forwards")? > 255 {
            return Err(MessageError::Header("Max-Forwards"));
        }
    }
    if let Some(expires) = get("expires") {
        parse_u32(expires, "Expires")?;
    }
    if let Some(date) = get("date") {
        // 20.17: SIP dates are always GMT (RFC 4475 3.1.2.12).
        if !date.trim_end().ends_with("GMT") {
            return Err(MessageError::Header("Date"));
        }
    }

    let mut vias = Vec::new();
    for (name, value) in &headers {
        if name == "via" {
            for element in split_list_strict(value).ok_or(MessageError::Header("Via"))? {
                vias.push(Via::parse(&element)?);
            }
        }
    }
    let top_via = vias.first().ok_or(MessageError::Header("Via"))?;
    let branch = top_via.param("branch").flatten().map(str::to_owned);
    let rport = top_via
        .param("rport")
        .map(|v| v.and_then(|p| p.parse::<u16>().ok()));
    let received = top_via.param("received").flatten().map(str::to_owned);
    let via_transport = top_via.transport.clone();

    let mut contact = None;
    let mut record_route = Vec::new();
    let mut www_authenticate = Vec::new();
    let mut proxy_authenticate = Vec::new();
    for (name, value) in &headers {
        match name.as_str() {
            "contact" if value != "*" => {
                for element in split_list_strict(value).ok_or(MessageError::Header("Contact"))? {
                    let parsed =
                        NameAddr::parse(&element).map_err(|_| MessageError::Header("Contact"))?;
                    contact.get_or_insert(parsed.uri);
                }
            }
            "record-route" | "route" => {
                for element in split_list_strict(value).ok_or(MessageError::Header("Route"))? {
                    NameAddr::parse(&element).map_err(|_| MessageError::Header("Route"))?;
                    if name == "record-route" {
                        record_route.push(element);
                    }
                }
            }
            "www-authenticate" => www_authenticate.push(value.clone()),
            "proxy-authenticate" => proxy_authenticate.push(value.clone()),
            _ => {}
        }
    }

    let body = match get("content-length") {
        Some(cl) => {
            let declared = parse_u32(cl, "Content-Length")? as usize;
            if declared > rest.len() {
                return Err(MessageError::Truncated {
                    declared,
                    available: rest.len(),
                });
            }
            // 18.3: octets past Content-Length in a datagram are ignored (RFC 4475 3.1.1.8).
            rest[..declared].to_vec()
        }
        None => rest.to_vec(),
    };

    Ok(Incoming {
        start,
        call_id,
        cseq,
        cseq_method,
        branch,
        via_transport,
        rport,
        received,
        from_tag: from.param("tag").flatten().map(str::to_owned),
        to_tag: to.param("tag").flatten().map(str::to_owned),
        contact,
        record_route,
        www_authenticate,
        proxy_authenticate,
        echo,
        headers,
        body,
    })
}

/// What can be salvaged from a request that does not parse, to answer it with an error status: its echo
/// headers (raw). None when it is not a request or has no Via to answer along.
pub fn salvage_request(bytes: &[u8]) -> Option<Vec<(&'static str, String)>> {
    let (head, _) = split_head(bytes).ok()?;
    let head = String::from_utf8_lossy(head);
    let lines = unfold(&head);
    let first = lines.first()?;
    if starts_with_ci(first, "SIP/") {
        return None;
    }
    let mut echo = Vec::new();
    for line in lines.iter().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = match expand_compact(name.trim()).as_str() {
            "via" => "Via",
            "from" => "From",
            "to" => "To",
            "call-id" => "Call-ID",
            "cseq" => "CSeq",
            _ => continue,
        };
        echo.push((name, value.trim().to_owned()));
    }
    echo.iter().any(|(n, _)| *n == "Via").then_some(echo)
}

/// Like [`split_list`], but None when an element is empty (`a,,b`: RFC 4475 3.1.2.1).
fn split_list_strict(value: &str) -> Option<Vec<String>> {
    let parts = split_list_raw(value);
    if parts.iter().any(|p| p.trim().is_empty()) {
        return None;
    }
    Some(parts.into_iter().map(|p| p.trim().to_owned()).collect())
}

/// Frames SIP messages out of a stream (RFC 3261 18.3): a message ends Content-Length octets after the
/// empty line; CRLF keep-alives between messages (RFC 5626 3.5.1) are skipped. Sans-IO: push bytes, pop
/// messages.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buffer: Vec<u8>,
}

/// The most a framed message may take; a peer announcing more is cut off.
pub const MAX_STREAM_MESSAGE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("stream message without a valid Content-Length")]
    ContentLength,
    #[error("stream message larger than {MAX_STREAM_MESSAGE} octets")]
    TooLarge,
}

impl StreamFramer {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete message, None when more bytes are needed. An error is unrecoverable: the stream
    /// must be closed (RFC 4475 3.1.2.3).
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        let skip = self
            .buffer
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        self.buffer.drain(..skip);
        let Some(head_end) = find_subslice(&self.buffer, b"\r\n\r\n") else {
            if self.buffer.len() > MAX_STREAM_MESSAGE {
                return Err(FramingError::TooLarge);
            }
            return Ok(None);
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]);
        let mut lengths = unfold(&head)
            .into_iter()
            .skip(1)
            .filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                (expand_compact(name.trim()) == "content-length").then(|| value.trim().to_owned())
            })
            .collect::<Vec<_>>();
        // 18.3: Content-Length is mandatory on streams; two differing values cannot be framed.
        lengths.dedup();
        let [length] = lengths.as_slice() else {
            return Err(FramingError::ContentLength);
        };
        let length =
            parse_u32(length, "Content-Length").map_err(|_| FramingError::ContentLength)? as usize;
        let total = head_end + 4 + length;
        if total > MAX_STREAM_MESSAGE {
            return Err(FramingError::TooLarge);
        }
        if self.buffer.len() < total {
            return Ok(None);
        }
        let message: Vec<u8> = self.buffer.drain(..total).collect();
        Ok(Some(message))
    }
}

fn find_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Splits a comma-separated header list, respecting `<...>` and quoted strings (with `\` escapes); empty
/// elements are dropped.
pub fn split_list(value: &str) -> Vec<String> {
    split_list_raw(value)
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

fn split_list_raw(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let (mut in_angle, mut in_quote, mut escaped) = (false, false, false);
    for c in value.chars() {
        if escaped {
            escaped = false;
            current.push(c);
            continue;
        }
        match c {
            '\\' if in_quote => escaped = true,
            '"' if !in_angle => in_quote = !in_quote,
            '<' if !in_quote => in_angle = true,
            '>' if !in_quote => in_angle = false,
            ',' if !in_angle && !in_quote => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out
}

/// The URI inside a name-addr (`"x" <sip:a@b;lr>;p=1` gives `sip:a@b;lr`), or the value itself.
pub fn name_addr_uri(value: &str) -> &str {
    match (value.find('<'), value.rfind('>')) {
        (Some(start), Some(end)) if end > start => &value[start + 1..end],
        _ => value.trim(),
    }
}

/// An outgoing request under construction. Header order follows RFC 3261 8.1.1's list.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    method: rsip::Method,
    uri: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    content_type: Option<&'static str>,
}

impl RequestBuilder {
    pub fn new(method: rsip::Method, uri: impl Into<String>) -> Self {
        Self {
            method,
            uri: uri.into(),
            headers: Vec::new(),
            body: Vec::new(),
            content_type: None,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn body(mut self, content_type: &'static str, body: Vec<u8>) -> Self {
        self.content_type = Some(content_type);
        self.body = body;
        self
    }

    /// The wire form. Fails only if the Request-URI is not a URI rsip accepts.
    pub fn build(self) -> Result<Vec<u8>, MessageError> {
        let uri = rsip::Uri::try_from(self.uri.as_str())
            .map_err(|_| MessageError::Header("Request-URI"))?;
        let mut headers = rsip::Headers::default();
        for (name, value) in self.headers {
            headers.push(rsip::Header::Other(name, value));
        }
        if let Some(ct) = self.content_type {
            headers.push(rsip::Header::Other("Content-Type".into(), ct.into()));
        }
        headers.push(rsip::Header::Other(
            "Content-Length".into(),
            self.body.len().to_string(),
        ));
        let request = rsip::Request {
            method: self.method,
            uri,
            version: rsip::Version::V2,
            headers,
            body: self.body,
        };
        Ok(request.to_string().into_bytes())
    }
}

/// A response to `request` with `code`, echoing its Via, From, To (adding `to_tag` if it has none), Call-ID
/// and CSeq (RFC 3261 8.2.6.2).
pub fn response_to(
    request: &Incoming,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, String)],
) -> Vec<u8> {
    let tag = if request.to_tag.is_none() {
        to_tag
    } else {
        None
    };
    response_from_echo(&request.echo, code, reason, tag, extra, None)
}

/// A response from echoed headers (8.2.6.2): `to_tag` is added to To when given; `body` is
/// (Content-Type, octets).
pub fn response_from_echo(
    echo: &[(&'static str, String)],
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, String)],
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut text = format!("SIP/2.0 {code} {reason}\r\n");
    for (name, value) in echo {
        match to_tag {
            Some(tag) if *name == "To" => text.push_str(&format!("To: {value};tag={tag}\r\n")),
            _ => text.push_str(&format!("{name}: {value}\r\n")),
        }
    }
    for (name, value) in extra {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    let mut out = match body {
        Some((content_type, body)) => {
            text.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ));
            let mut out = text.into_bytes();
            out.extend_from_slice(body);
            return out;
        }
        None => text,
    };
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

/// The top Via of a response (RFC 3261 18.2.1, RFC 3581 4): `received` when the request came from
/// another address than its sent-by says, and the source port in an `rport` the client asked for.
pub fn stamp_via(via: &str, from: SocketAddr) -> String {
    let Ok(parsed) = Via::parse(via) else {
        return via.to_owned();
    };
    let mut out = via.to_owned();
    let wants_rport = matches!(parsed.param("rport"), Some(None));
    let differs = parsed.host.parse::<IpAddr>().ok() != Some(from.ip());
    if (differs || wants_rport) && parsed.param("received").is_none() {
        out.push_str(&format!(";received={}", from.ip()));
    }
    if wants_rport {
        // Replace the bare `rport` parameter with its value.
        let mut rebuilt = Vec::new();
        for (i, piece) in split_outside_quotes(&out, ';').into_iter().enumerate() {
            if i > 0 && piece.trim().eq_ignore_ascii_case("rport") {
                rebuilt.push(format!("rport={}", from.port()));
            } else {
                rebuilt.push(piece.to_owned());
            }
        }
        out = rebuilt.join(";");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE_200: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport=5060\r\n\
Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\r\n\
Record-Route: <sip:p0.example.com;lr>\r\n\
From: <sip:gw@example.com>;tag=ftag\r\n\
To: <sip:bob@example.com>;tag=ttag\r\n\
Call-ID: c1@host\r\n\
CSeq: 2 INVITE\r\n\
Contact: <sip:bob@192.0.2.4:5062>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n";

    #[test]
    fn parses_the_facts_of_a_response() {
        let m = parse(INVITE_200.as_bytes()).unwrap();
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.call_id, "c1@host");
        assert_eq!((m.cseq, m.cseq_method.as_str()), (2, "INVITE"));
        assert_eq!(m.branch.as_deref(), Some("z9hG4bKabc"));
        assert_eq!(m.from_tag.as_deref(), Some("ftag"));
        assert_eq!(m.to_tag.as_deref(), Some("ttag"));
        assert_eq!(m.contact.as_deref(), Some("sip:bob@192.0.2.4:5062"));
        assert_eq!(m.record_route.len(), 3);
        assert_eq!(name_addr_uri(&m.record_route[0]), "sip:p2.example.com;lr");
        assert_eq!(m.body, b"v=0\n");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"").is_err());
        assert!(parse(b"\x00\xff\xfe").is_err());
        assert!(
            parse(b"SIP/2.0 200 OK\r\n\r\n").is_err(),
            "no Call-ID/CSeq/Via"
        );
    }

    #[test]
    fn response_echoes_and_adds_a_to_tag() {
        let bye = "BYE sip:gw@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.4:5062;branch=z9hG4bKx\r\n\
From: <sip:bob@example.com>;tag=ttag\r\nTo: <sip:gw@example.com>\r\nCall-ID: c1@host\r\nCSeq: 3 BYE\r\n\
Content-Length: 0\r\n\r\n";
        let m = parse(bye.as_bytes()).unwrap();
        let resp = String::from_utf8(response_to(&m, 200, "OK", Some("mytag"), &[])).unwrap();
        assert!(resp.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(
            resp.contains("To: <sip:gw@example.com>;tag=mytag\r\n"),
            "{resp}"
        );
        assert!(resp.contains("CSeq: 3 BYE\r\n"));
        parse(resp.as_bytes()).unwrap();
    }

    #[test]
    fn builder_output_parses_back() {
        let bytes = RequestBuilder::new(rsip::Method::Invite, "sip:bob@127.0.0.1:5062")
            .header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1;rport")
            .header("From", "<sip:gw@127.0.0.1>;tag=a")
            .header("To", "<sip:bob@127.0.0.1>")
            .header("Call-ID", "x")
            .header("CSeq", "1 INVITE")
            .body("application/sdp", b"v=0\r\n".to_vec())
            .build()
            .unwrap();
        let m = parse(&bytes).unwrap();
        assert_eq!(
            m.start,
            StartLine::Request {
                method: "INVITE".into(),
                uri: "sip:bob@127.0.0.1:5062".into()
            }
        );
        assert_eq!(m.body, b"v=0\r\n");
    }

    #[test]
    fn split_list_respects_brackets_and_quotes() {
        assert_eq!(
            split_list("<sip:a;x=1,2>, \"a,b\" <sip:b>"),
            vec!["<sip:a;x=1,2>", "\"a,b\" <sip:b>"]
        );
    }
}
