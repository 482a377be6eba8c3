//! Registration of one account at its registrar (RFC 3261 10.2), sans-IO: REGISTER with digest
//! authentication, refresh before the granted expiry, un-REGISTER when the last call using it is over.
//!
//! Inputs: [`Registration::start`], [`Registration::handle_response`], [`Registration::handle_timeout`] and
//! [`Registration::unregister`], each with `now`. Outputs: requests ([`Registration::poll_transmit`]),
//! events ([`Registration::poll_event`]) and the next deadline ([`Registration::poll_timeout`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::auth::{AuthState, Credentials};
use super::message::{Incoming, NameAddr, RequestBuilder, Transport};
use super::transaction::{ClientTransaction, Kind, ResponseAction, TimerAction, Timers};

/// Who registers where.
#[derive(Debug, Clone)]
pub struct RegistrationSpec {
    /// Request-URI of the REGISTER: the registrar's domain, e.g. `sip:example.com:5060` (10.2).
    pub registrar_uri: String,
    /// Address of record, To and From: e.g. `sip:gateway@example.com`.
    pub aor: String,
    /// The Contact registered, e.g. `<sip:gateway@192.0.2.1:5060>`.
    pub contact: String,
    /// The next hop the REGISTER goes to (outbound proxy or registrar, resolved).
    pub destination: SocketAddr,
    pub transport: Transport,
    pub credentials: Option<Credentials>,
    /// The expiry asked for; the registrar may grant another.
    pub expires: Duration,
}

impl RegistrationSpec {
    /// Registrations are shared by calls with the same key.
    pub fn key(&self) -> String {
        format!(
            "{} {} {} {:?} {}",
            self.aor,
            self.registrar_uri,
            self.destination,
            self.transport,
            self.credentials
                .as_ref()
                .map(|c| c.username.as_str())
                .unwrap_or_default()
        )
    }
}

/// Values shared with the user agent.
#[derive(Debug, Clone)]
pub struct RegConfig {
    pub advertised_host: String,
    pub advertised_port: u16,
    pub user_agent: String,
    pub timers: Timers,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegEvent {
    /// The registrar accepted the binding (first time, or a refresh) for this long.
    Registered { expires: Duration },
    /// The registration was refused or got no answer; `code` is the final status (408 for Timer F).
    Failed { code: u16, reason: String },
    /// The binding was removed (or the un-REGISTER went unanswered); the registration is over.
    Unregistered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegState {
    Registering,
    Registered,
    /// Refused; a refresh is retried later if calls still use it.
    Failed,
    Unregistering,
    Done,
}

/// A refused refresh is retried after this long (or half the last granted expiry, if shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

pub struct Registration {
    spec: RegistrationSpec,
    config: RegConfig,
    rng: rand::rngs::StdRng,
    call_id: String,
    local_tag: String,
    cseq: u32,
    state: RegState,
    /// The expiry the next REGISTER asks for (raised by a 423's Min-Expires).
    asked: Duration,
    ever_registered: bool,
    tx: Option<ClientTransaction>,
    auth: AuthState,
    refresh_at: Option<Instant>,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<RegEvent>,
}

impl Registration {
    pub fn new(spec: RegistrationSpec, config: RegConfig, seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let call_id = format!("{}@sipcast", token(&mut rng, 20));
        let local_tag = token(&mut rng, 10);
        Self {
            asked: spec.expires,
            spec,
            config,
            rng,
            call_id,
            local_tag,
            cseq: 0,
            state: RegState::Registering,
            ever_registered: false,
            tx: None,
            auth: AuthState::default(),
            refresh_at: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    pub fn state(&self) -> RegState {
        self.state
    }

    pub fn spec(&self) -> &RegistrationSpec {
        &self.spec
    }

    /// Sends the first REGISTER.
    pub fn start(&mut self, now: Instant) {
        self.send(now, self.asked);
    }

    /// Removes the binding (Expires: 0, 10.2.2). The registration is over once that is answered.
    pub fn unregister(&mut self, now: Instant) {
        match self.state {
            RegState::Unregistering | RegState::Done => {}
            RegState::Registering | RegState::Failed if !self.ever_registered => {
                // Nothing is bound: stop at once.
                if let Some(tx) = self.tx.as_mut() {
                    tx.terminate();
                }
                self.state = RegState::Done;
                self.events.push_back(RegEvent::Unregistered);
            }
            _ => {
                self.state = RegState::Unregistering;
                self.refresh_at = None;
                self.send(now, Duration::ZERO);
            }
        }
    }

    fn send(&mut self, now: Instant, expires: Duration) {
        self.cseq += 1;
        let branch = format!("z9hG4bK{}", token(&mut self.rng, 16));
        let via = format!(
            "SIP/2.0/{} {}:{};branch={branch};rport",
            self.spec.transport.via_name(),
            self.config.advertised_host,
            self.config.advertised_port
        );
        let mut builder =
            RequestBuilder::new(rsip::Method::Register, self.spec.registrar_uri.clone())
                .header("Via", via)
                .header("Max-Forwards", "70")
                .header(
                    "From",
                    format!("<{}>;tag={}", self.spec.aor, self.local_tag),
                )
                .header("To", format!("<{}>", self.spec.aor))
                .header("Call-ID", self.call_id.clone())
                .header("CSeq", format!("{} REGISTER", self.cseq))
                .header("Contact", self.spec.contact.clone())
                .header("Expires", expires.as_secs().to_string())
                .header("User-Agent", self.config.user_agent.clone());
        if let Some(credentials) = &self.spec.credentials {
            for (name, value) in self.auth.headers(
                &mut self.rng,
                credentials,
                "REGISTER",
                &self.spec.registrar_uri,
                b"",
            ) {
                builder = builder.header(name, value);
            }
        }
        let Ok(request) = builder.build() else {
            self.fail(400, "registrar URI cannot be sent".into());
            return;
        };
        self.tx = Some(
            ClientTransaction::start(
                Kind::NonInvite,
                now,
                self.config.timers,
                branch,
                self.spec.destination,
                request.clone(),
            )
            .over_reliable(self.spec.transport.is_reliable()),
        );
        self.transmits.push_back((self.spec.destination, request));
    }

    fn fail(&mut self, code: u16, reason: String) {
        if self.state == RegState::Unregistering {
            self.state = RegState::Done;
            self.events.push_back(RegEvent::Unregistered);
            return;
        }
        self.state = RegState::Failed;
        self.events.push_back(RegEvent::Failed { code, reason });
    }

    /// Feeds a response whose Call-ID is ours.
    pub fn handle_response(&mut self, now: Instant, msg: &Incoming) {
        let Some(code) = msg.status() else { return };
        let Some(tx) = self.tx.as_mut() else { return };
        if msg.branch.as_deref() != Some(tx.branch.as_str()) || msg.cseq != self.cseq {
            return;
        }
        if let ResponseAction::Absorb { .. } = tx.on_response(now, code, Vec::new) {
            return;
        }
        match code {
            100..=199 => {}
            200..=299 => {
                self.auth.accepted();
                if self.state == RegState::Unregistering {
                    self.state = RegState::Done;
                    self.events.push_back(RegEvent::Unregistered);
                    return;
                }
                let granted = self.granted_expiry(msg).unwrap_or(self.asked);
                if granted.is_zero() {
                    self.fail(code, "registrar granted no expiry".into());
                    return;
                }
                self.state = RegState::Registered;
                self.ever_registered = true;
                // Refresh at half the granted time: well before expiry, also on a slow network.
                self.refresh_at = Some(now + (granted / 2).max(Duration::from_secs(1)));
                self.events
                    .push_back(RegEvent::Registered { expires: granted });
            }
            401 | 407 if self.spec.credentials.is_some() && self.auth.absorb(code, msg) => {
                let expires = if self.state == RegState::Unregistering {
                    Duration::ZERO
                } else {
                    self.asked
                };
                self.send(now, expires);
            }
            // 10.2.8 / 10.3: Interval Too Brief: ask again with the registrar's Min-Expires, once.
            423 if self.state != RegState::Unregistering => {
                let min = msg
                    .header("min-expires")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                match min {
                    Some(min) if min > self.asked => {
                        self.asked = min;
                        self.send(now, min);
                    }
                    _ => self.fail(code, reason(msg)),
                }
            }
            _ => {
                let was_registered = self.ever_registered;
                self.fail(code, reason(msg));
                if was_registered {
                    self.schedule_retry(now);
                }
            }
        }
    }

    /// The expiry granted to our Contact: its `expires` parameter, else the Expires header (10.2.4).
    fn granted_expiry(&self, msg: &Incoming) -> Option<Duration> {
        let ours = super::message::name_addr_uri(&self.spec.contact).to_owned();
        let from_contact = msg.list("contact").iter().find_map(|c| {
            let parsed = NameAddr::parse(c).ok()?;
            same_contact(&parsed.uri, &ours)
                .then(|| parsed.param("expires").flatten()?.parse::<u64>().ok())
                .flatten()
        });
        from_contact
            .or_else(|| msg.header("expires")?.trim().parse().ok())
            .map(Duration::from_secs)
    }

    fn schedule_retry(&mut self, now: Instant) {
        self.refresh_at = Some(
            now + RETRY_AFTER_FAILURE
                .min(self.asked / 2)
                .max(Duration::from_secs(1)),
        );
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tx
            .as_ref()
            .and_then(ClientTransaction::deadline)
            .into_iter()
            .chain(self.refresh_at)
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(tx) = self.tx.as_mut() {
            while let Some(action) = tx.on_timeout(now) {
                match action {
                    TimerAction::Retransmit(payload) => {
                        self.transmits.push_back((tx.destination, payload))
                    }
                    TimerAction::TimedOut => {
                        let was_registered = self.ever_registered;
                        self.fail(408, "Timer F: no response to REGISTER".into());
                        if was_registered && self.state == RegState::Failed {
                            self.schedule_retry(now);
                        }
                        break;
                    }
                    TimerAction::Terminated => {}
                }
            }
        }
        if self.refresh_at.is_some_and(|t| t <= now) {
            self.refresh_at = None;
            if matches!(self.state, RegState::Registered | RegState::Failed) {
                self.send(now, self.asked);
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<RegEvent> {
        self.events.pop_front()
    }

    /// True once nothing is bound and no transaction waits.
    pub fn is_done(&self) -> bool {
        self.state == RegState::Done
    }
}

/// Contact URIs compared as the registrar echoes them: scheme, user, host and port (10.3 step 7 compares
/// URIs; registrars add parameters, and baresip-style `;transport=` may be reordered).
fn same_contact(a: &str, b: &str) -> bool {
    match (
        super::message::SipUri::parse(a),
        super::message::SipUri::parse(b),
    ) {
        (Ok(a), Ok(b)) => {
            a.user == b.user && a.host.eq_ignore_ascii_case(&b.host) && a.port == b.port
        }
        _ => false,
    }
}

fn reason(msg: &Incoming) -> String {
    match &msg.start {
        super::message::StartLine::Response { reason, .. } => reason.clone(),
        super::message::StartLine::Request { .. } => String::new(),
    }
}

fn token(rng: &mut impl Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Password;
    use crate::sip::message::parse;

    fn spec(password: Option<&str>) -> RegistrationSpec {
        RegistrationSpec {
            registrar_uri: "sip:127.0.0.1:5070".into(),
            aor: "sip:gw@127.0.0.1".into(),
            contact: "<sip:gw@127.0.0.1:5060>".into(),
            destination: "127.0.0.1:5070".parse().unwrap(),
            transport: Transport::Udp,
            credentials: password.map(|p| Credentials {
                username: "gw".into(),
                password: Password::new(p),
            }),
            expires: Duration::from_secs(60),
        }
    }

    fn config() -> RegConfig {
        RegConfig {
            advertised_host: "127.0.0.1".into(),
            advertised_port: 5060,
            user_agent: "test".into(),
            timers: Timers::default(),
        }
    }

    fn sent(r: &mut Registration) -> Vec<(Incoming, String)> {
        std::iter::from_fn(|| r.poll_transmit())
            .map(|(_, p)| (parse(&p).unwrap(), String::from_utf8(p).unwrap()))
            .collect()
    }

    fn answer(request: &Incoming, code: u16, extra: &str) -> Incoming {
        let mut text = format!("SIP/2.0 {code} X\r\n");
        for (n, v) in &request.echo {
            text.push_str(&format!("{n}: {v}\r\n"));
        }
        text.push_str(extra);
        text.push_str("Content-Length: 0\r\n\r\n");
        parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn challenge_then_granted_expiry_then_refresh_at_half_then_unregister() {
        let t0 = Instant::now();
        let mut r = Registration::new(spec(Some("pw")), config(), 1);
        r.start(t0);
        let (first, text) = sent(&mut r).remove(0);
        assert!(
            text.starts_with("REGISTER sip:127.0.0.1:5070 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(text.contains("Expires: 60\r\n"));
        r.handle_response(
            t0,
            &answer(
                &first,
                401,
                "WWW-Authenticate: Digest realm=\"r\", nonce=\"n\", qop=\"auth\"\r\n",
            ),
        );
        let (second, text) = sent(&mut r).remove(0);
        assert_eq!(second.cseq, first.cseq + 1, "10.2.4: CSeq grows");
        assert_eq!(second.call_id, first.call_id, "10.2.4: one Call-ID");
        assert!(text.contains("Authorization: Digest"), "{text}");
        assert!(!text.contains("pw\""), "no password on the wire");
        // The registrar grants 20 s in the Contact, overriding the Expires header.
        r.handle_response(
            t0,
            &answer(
                &second,
                200,
                "Contact: <sip:gw@127.0.0.1:5060>;expires=20\r\nExpires: 3600\r\n",
            ),
        );
        assert_eq!(
            r.poll_event(),
            Some(RegEvent::Registered {
                expires: Duration::from_secs(20)
            })
        );
        // Timer K lingers 5 s, then the refresh is due at 10 s.
        let mut now = t0;
        while let Some(t) = r.poll_timeout() {
            now = t;
            r.handle_timeout(now);
            if !sent(&mut r).is_empty() {
                break;
            }
        }
        assert_eq!(
            now - t0,
            Duration::from_secs(10),
            "refresh at half the granted 20 s"
        );
        let mut r2 = r;
        r2.unregister(now);
        let (bye, text) = sent(&mut r2).remove(0);
        assert!(text.contains("Expires: 0\r\n"), "{text}");
        r2.handle_response(now, &answer(&bye, 200, ""));
        assert!(r2.is_done());
    }

    #[test]
    fn wrong_password_fails_with_the_challenge_status() {
        let t0 = Instant::now();
        let mut r = Registration::new(spec(Some("wrong")), config(), 2);
        r.start(t0);
        let challenge = "WWW-Authenticate: Digest realm=\"r\", nonce=\"n\"\r\n";
        let (first, _) = sent(&mut r).remove(0);
        r.handle_response(t0, &answer(&first, 401, challenge));
        let (second, _) = sent(&mut r).remove(0);
        r.handle_response(t0, &answer(&second, 401, challenge));
        assert!(sent(&mut r).is_empty(), "no loop");
        assert!(matches!(
            r.poll_event(),
            Some(RegEvent::Failed { code: 401, .. })
        ));
    }

    #[test]
    fn interval_too_brief_is_retried_with_min_expires_and_silence_is_408() {
        let t0 = Instant::now();
        let mut r = Registration::new(spec(None), config(), 3);
        r.start(t0);
        let (first, _) = sent(&mut r).remove(0);
        r.handle_response(t0, &answer(&first, 423, "Min-Expires: 120\r\n"));
        let (_, text) = sent(&mut r).remove(0);
        assert!(text.contains("Expires: 120\r\n"), "{text}");
        let mut now = t0;
        while let Some(t) = r.poll_timeout() {
            now = t;
            r.handle_timeout(now);
            sent(&mut r);
        }
        assert_eq!(now - t0, Duration::from_secs(32), "Timer F");
        assert!(matches!(
            r.poll_event(),
            Some(RegEvent::Failed { code: 408, .. })
        ));
    }
}
