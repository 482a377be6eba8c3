//! Incoming messages parsed by rsip into the few facts the user agent acts on, and outgoing requests built
//! as rsip values.

use rsip::headers::untyped::ToTypedHeader;
use rsip::headers::UntypedHeader;
use rsip::message::HasHeaders;
use rsip::prelude::HeadersExt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("not a SIP message: {0}")]
    Parse(String),
    #[error("missing or malformed {0} header")]
    Header(&'static str),
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { code: u16, reason: String },
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
}

/// Parses a datagram. Never panics: rsip is additionally guarded, as anything a peer sends must end in an error
/// at worst.
pub fn parse(bytes: &[u8]) -> Result<Incoming, MessageError> {
    let parsed = std::panic::catch_unwind(|| rsip::SipMessage::try_from(bytes))
        .map_err(|_| MessageError::Parse("parser panicked".to_owned()))?
        .map_err(|e| MessageError::Parse(e.to_string()))?;
    let start = match &parsed {
        rsip::SipMessage::Request(r) => StartLine::Request {
            method: r.method.to_string(),
            uri: r.uri.to_string(),
        },
        rsip::SipMessage::Response(r) => StartLine::Response {
            code: r.status_code.code(),
            reason: reason_phrase(bytes),
        },
    };
    let holder = &parsed;
    let call_id = holder
        .call_id_header()
        .map_err(|_| MessageError::Header("Call-ID"))?
        .value()
        .trim()
        .to_owned();
    let cseq = holder
        .cseq_header()
        .map_err(|_| MessageError::Header("CSeq"))?;
    let cseq_typed = cseq.typed().map_err(|_| MessageError::Header("CSeq"))?;
    let via = holder
        .via_header()
        .map_err(|_| MessageError::Header("Via"))?;
    let branch = via
        .typed()
        .ok()
        .and_then(|v| v.branch().map(|b| b.to_string()));
    let from = holder
        .from_header()
        .map_err(|_| MessageError::Header("From"))?;
    let to = holder.to_header().map_err(|_| MessageError::Header("To"))?;
    let from_tag = from
        .tag()
        .map_err(|_| MessageError::Header("From"))?
        .map(|t| t.to_string());
    let to_tag = to
        .tag()
        .map_err(|_| MessageError::Header("To"))?
        .map(|t| t.to_string());
    let contact = holder
        .contact_header()
        .ok()
        .and_then(|c| c.uri().ok())
        .map(|u| u.to_string());

    let mut record_route = Vec::new();
    let mut www_authenticate = Vec::new();
    let mut proxy_authenticate = Vec::new();
    let mut echo = Vec::new();
    for header in holder.headers().iter() {
        match header {
            rsip::Header::RecordRoute(rr) => record_route.extend(split_list(rr.value())),
            rsip::Header::WwwAuthenticate(h) => www_authenticate.push(h.value().to_owned()),
            rsip::Header::ProxyAuthenticate(h) => proxy_authenticate.push(h.value().to_owned()),
            rsip::Header::Via(h) => echo.push(("Via", h.value().to_owned())),
            rsip::Header::From(h) => echo.push(("From", h.value().to_owned())),
            rsip::Header::To(h) => echo.push(("To", h.value().to_owned())),
            rsip::Header::CallId(h) => echo.push(("Call-ID", h.value().to_owned())),
            rsip::Header::CSeq(h) => echo.push(("CSeq", h.value().to_owned())),
            _ => {}
        }
    }
    Ok(Incoming {
        start,
        call_id,
        cseq: cseq_typed.seq,
        cseq_method: cseq_typed.method.to_string(),
        branch,
        from_tag,
        to_tag,
        contact,
        record_route,
        www_authenticate,
        proxy_authenticate,
        echo,
        body: parsed.body().clone(),
    })
}

/// The Reason-Phrase of a status line as sent (rsip normalises it).
fn reason_phrase(bytes: &[u8]) -> String {
    let line_end = bytes
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(bytes.len());
    let line = String::from_utf8_lossy(&bytes[..line_end]);
    line.splitn(3, ' ')
        .nth(2)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Splits a comma-separated header list, respecting `<...>` and quoted strings.
pub fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let (mut in_angle, mut in_quote) = (false, false);
    for c in value.chars() {
        match c {
            '"' if !in_angle => in_quote = !in_quote,
            '<' if !in_quote => in_angle = true,
            '>' if !in_quote => in_angle = false,
            ',' if !in_angle && !in_quote => {
                if !current.trim().is_empty() {
                    out.push(current.trim().to_owned());
                }
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
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
    let mut text = format!("SIP/2.0 {code} {reason}\r\n");
    for (name, value) in &request.echo {
        if *name == "To" && request.to_tag.is_none() {
            if let Some(tag) = to_tag {
                text.push_str(&format!("To: {value};tag={tag}\r\n"));
                continue;
            }
        }
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    for (name, value) in extra {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    text.into_bytes()
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
