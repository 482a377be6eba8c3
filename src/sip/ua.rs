//! The sans-IO SIP user agent for the calls the gateway places (RFC 3261 UAC), with the UAS answers a UAC
//! dialog needs: BYE, OPTIONS, INFO, re-INVITE and UPDATE (new SDP, hold), session timers (RFC 4028), and
//! the registrations calls may require first (`register.rs`).
//!
//! Inputs: commands ([`UserAgent::start_call`], [`UserAgent::hangup`]), messages
//! ([`UserAgent::handle_message`]) and time ([`UserAgent::handle_timeout`]), each with `now`.
//! Outputs: messages to send ([`UserAgent::poll_transmit`]), events ([`UserAgent::poll_event`]) and the next
//! deadline ([`UserAgent::poll_timeout`]). The driver owns the sockets and the clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::auth::AuthState;
pub use super::auth::Credentials;
use super::message::{self, Incoming, NameAddr, RequestBuilder, StartLine, Transport};
use super::register::{RegConfig, RegEvent, RegState, Registration, RegistrationSpec};
use super::transaction::{ClientTransaction, Kind, ResponseAction, State, TimerAction, Timers};
use crate::sdp::{self, AudioCodec, Offer};

/// The gateway's handle for one call's SIP leg; chosen by the caller, unique among live legs.
pub type LegId = u64;

/// RFC 3261 8.1.1.7: branches start with the magic cookie.
const BRANCH_COOKIE: &str = "z9hG4bK";
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE";
/// Option tags we support (RFC 4028 `timer`); anything else in a Require gets 420.
const SUPPORTED: &str = "timer";
/// Methods we recognise (8.2.1: others get 501).
const KNOWN_METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "CANCEL",
    "BYE",
    "OPTIONS",
    "INFO",
    "UPDATE",
    "REGISTER",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "REFER",
    "PUBLISH",
];

/// A token bucket for answers to requests outside any dialog (and to malformed ones): a flood costs
/// bounded work and bandwidth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone)]
pub struct UaConfig {
    /// Host written into Via and Contact.
    pub advertised_host: String,
    /// Port written into Via and Contact (the SIP socket's port).
    pub advertised_port: u16,
    pub user_agent: String,
    pub timers: Timers,
    /// How long an INVITE may go unanswered after a provisional response before we CANCEL it.
    pub no_answer_timeout: Duration,
    /// RFC 4028 session interval we ask for (None: no session timer unless the peer asks).
    pub session_expires: Option<Duration>,
    /// RFC 4028 Min-SE: the shortest interval we accept (at least 90 s).
    pub min_se: Duration,
    /// Status for INVITEs outside our dialogs (the gateway takes no incoming calls): 403 by default.
    pub incoming_invite_status: u16,
    pub stray_limit: RateLimit,
    /// Expiry asked for in REGISTER.
    pub register_expires: Duration,
}

impl Default for UaConfig {
    fn default() -> Self {
        Self {
            advertised_host: "127.0.0.1".into(),
            advertised_port: 5060,
            user_agent: "sipcast".into(),
            timers: Timers::default(),
            no_answer_timeout: Duration::from_secs(60),
            session_expires: Some(Duration::from_secs(1800)),
            min_se: Duration::from_secs(90),
            incoming_invite_status: 403,
            stray_limit: RateLimit {
                per_second: 50,
                burst: 200,
            },
            register_expires: Duration::from_secs(3600),
        }
    }
}

/// Everything needed to place one call.
#[derive(Debug, Clone)]
pub struct CallSpec {
    pub leg: LegId,
    /// Request-URI and To URI, e.g. `sip:bob@example.com:5060`.
    pub target_uri: String,
    /// From URI, e.g. `sip:gateway@example.com`; also the address of record when registering.
    pub from_uri: String,
    /// User part of our Contact.
    pub contact_user: String,
    /// Next hop for the INVITE: the outbound proxy, or the target's host, resolved.
    pub destination: SocketAddr,
    /// True when `destination` is an outbound proxy, which then also carries in-dialog requests.
    pub via_outbound_proxy: bool,
    pub transport: Transport,
    pub credentials: Option<Credentials>,
    /// Our media: the SDP offer, and what re-offers are answered with.
    pub offer: Offer,
    /// REGISTER at this registrar URI (e.g. `sip:example.com`) before the INVITE (shared per account).
    pub register: Option<String>,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub transport: Transport,
    pub payload: Vec<u8>,
}

/// Why an established call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The peer sent BYE.
    RemoteBye,
    /// We sent BYE when asked to; `code` is the peer's answer, 408 when it never came (Timer F).
    LocalBye { code: u16 },
    /// We sent BYE on our own (session timer expired or refresh failed, 2xx never ACKed); `code` is the
    /// answer to the BYE.
    Terminated { code: u16, why: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipEvent {
    /// A provisional response (100, 180, 183, ...).
    Progress { leg: LegId, code: u16 },
    /// A 2xx: the dialog is up and ACKed. `sdp` is the answer (empty when the peer sent none).
    Answered { leg: LegId, code: u16, sdp: Vec<u8> },
    /// The call never got established: a final non-2xx, Timer B, a CANCEL that took effect, a failed
    /// registration, or a 2xx that arrived after we gave up (ACKed and sent BYE).
    Rejected {
        leg: LegId,
        code: u16,
        reason: String,
    },
    /// The peer changed the session with a new offer we accepted (re-INVITE or UPDATE); `hold` when it
    /// is sendonly/inactive (RFC 3264 8.4). `sdp` is the peer's offer.
    MediaUpdated {
        leg: LegId,
        hold: bool,
        sdp: Vec<u8>,
    },
    /// The session was refreshed (RFC 4028), by us or by the peer; `by_us` when we sent the refresh.
    Refreshed {
        leg: LegId,
        by_us: bool,
        interval: Duration,
    },
    /// The registration the call waits for (or uses) was accepted for `expires`.
    Registered { leg: LegId, expires: Duration },
    /// The established call is over.
    Ended { leg: LegId, reason: EndReason },
}

impl SipEvent {
    pub fn leg(&self) -> LegId {
        match self {
            Self::Progress { leg, .. }
            | Self::Answered { leg, .. }
            | Self::Rejected { leg, .. }
            | Self::MediaUpdated { leg, .. }
            | Self::Refreshed { leg, .. }
            | Self::Registered { leg, .. }
            | Self::Ended { leg, .. } => *leg,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UaError {
    #[error("a leg with id {0} already exists")]
    DuplicateLeg(LegId),
    #[error("the target or From URI is not a valid SIP URI: {0}")]
    BadUri(String),
    #[error("call {0} has no established dialog")]
    NotEstablished(LegId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Inviting,
    Established,
    /// BYE sent, waiting for its answer.
    Ending,
    /// Over; the leg stays until its transactions have lingered out (Timers D, K).
    Done,
}

/// RFC 4028 session timer of an established dialog.
#[derive(Debug, Clone)]
struct SessionTimer {
    interval: Duration,
    /// We are the refresher.
    we_refresh: bool,
    refresh_at: Option<Instant>,
    /// 10: without a refresh by then, BYE (interval minus min(32 s, interval/3)).
    expire_at: Instant,
}

impl SessionTimer {
    fn start(now: Instant, interval: Duration, we_refresh: bool) -> Self {
        let guard = Duration::from_secs(32).min(interval / 3);
        Self {
            interval,
            we_refresh,
            refresh_at: we_refresh.then(|| now + interval / 2),
            expire_at: now + interval.saturating_sub(guard),
        }
    }
}

/// Our re-INVITE refreshing the session.
#[derive(Debug)]
struct Refresh {
    tx: ClientTransaction,
    cseq: u32,
    via: String,
    /// Asked interval, raised by a 422's Min-SE.
    interval: Duration,
    min_se_retried: bool,
}

/// Our 2xx to the peer's re-INVITE, retransmitted until its ACK (13.3.1.4).
#[derive(Debug)]
struct Pending2xx {
    cseq: u32,
    payload: Vec<u8>,
    destination: SocketAddr,
    transport: Transport,
    retransmit_at: Option<Instant>,
    interval: Duration,
    give_up_at: Instant,
    /// We put an offer in the 2xx (offerless re-INVITE): the answer comes in the ACK.
    offered: bool,
}

#[derive(Debug)]
struct Dialog {
    remote_tag: String,
    remote_target: String,
    /// Route set in the order requests carry it (RFC 3261 12.1.2: Record-Route reversed for a UAC).
    route_set: Vec<String>,
    /// To header value with the remote tag.
    to: String,
    /// The ACK for the latest 2xx to one of our INVITEs and its CSeq, re-sent when that 2xx is
    /// retransmitted (13.2.2.4).
    ack: Vec<u8>,
    ack_cseq: u32,
    ack_destination: SocketAddr,
    /// Highest CSeq of the peer's requests (12.2.2).
    remote_cseq: Option<u32>,
    /// Our current session description, its o= version, and the codec the media runs with.
    local_sdp: Vec<u8>,
    sdp_version: u64,
    codec: Option<AudioCodec>,
    timer: Option<SessionTimer>,
    refresh: Option<Refresh>,
    pending_2xx: Option<Pending2xx>,
}

#[derive(Debug)]
struct Leg {
    spec: CallSpec,
    call_id: String,
    local_tag: String,
    cseq: u32,
    phase: Phase,
    invite: ClientTransaction,
    invite_cseq: u32,
    invite_via: String,
    auth: AuthState,
    provisional_seen: bool,
    cancel_wanted: bool,
    cancel: Option<ClientTransaction>,
    /// TU deadline: CANCEL when ringing too long, or give up when a CANCEL got no final answer (9.1).
    give_up_at: Option<Instant>,
    dialog: Option<Dialog>,
    bye: Option<ClientTransaction>,
    /// The INFO in flight (RFC 6086), one at a time so the peer sees them in order.
    info: Option<ClientTransaction>,
    /// INFO bodies waiting for the one in flight: (Content-Type, body).
    info_queue: std::collections::VecDeque<(&'static str, Vec<u8>)>,
    /// RFC 4028 interval asked for in the INVITE (raised by a 422's Min-SE, once).
    session_expires: Option<Duration>,
    min_se_retried: bool,
    /// Why we sent BYE on our own, if we did.
    end_cause: Option<String>,
    /// The end was reported to the registration the leg used.
    released: bool,
}

impl Leg {
    fn transactions(&self) -> impl Iterator<Item = &ClientTransaction> {
        let refresh = self
            .dialog
            .as_ref()
            .and_then(|d| d.refresh.as_ref())
            .map(|r| &r.tx);
        std::iter::once(&self.invite)
            .chain(self.cancel.iter())
            .chain(self.bye.iter())
            .chain(self.info.iter())
            .chain(refresh)
    }

    fn deadline(&self) -> Option<Instant> {
        let dialog = self.dialog.iter().flat_map(|d| {
            let timer = d
                .timer
                .iter()
                .flat_map(|t| [t.refresh_at, Some(t.expire_at)])
                .flatten();
            let pending = d
                .pending_2xx
                .iter()
                .flat_map(|p| [p.retransmit_at, Some(p.give_up_at)])
                .flatten();
            timer.chain(pending).collect::<Vec<_>>()
        });
        let live = matches!(self.phase, Phase::Established);
        self.transactions()
            .filter_map(|t| t.deadline())
            .chain(self.give_up_at)
            .chain(dialog.filter(|_| live))
            .min()
    }

    fn is_finished(&self) -> bool {
        self.phase == Phase::Done && self.transactions().all(|t| t.is_terminated())
    }

    fn transmit(&self, destination: SocketAddr, payload: Vec<u8>) -> Transmit {
        Transmit {
            destination,
            transport: self.spec.transport,
            payload,
        }
    }
}

/// Which server transaction a request belongs to: the top Via's branch and the method (RFC 3261 17.2.3), and
/// the Call-ID, so that a peer reusing a branch across dialogs (seen in the wild) gets each dialog's own answer
/// rather than another call's cached one. A retransmission repeats all three.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServerTransactionKey {
    branch: String,
    method: String,
    call_id: String,
}

/// A response we sent to a request, kept to answer its retransmissions (Timer J, 17.2.2).
#[derive(Debug)]
struct SentResponse {
    payload: Vec<u8>,
    destination: SocketAddr,
    transport: Transport,
    expires: Instant,
}

/// A registration and the calls that wait for it or use it.
struct RegEntry {
    reg: Registration,
    /// Legs whose INVITE went out under this registration and are not over.
    users: HashSet<LegId>,
    /// Calls waiting for the registration before their INVITE.
    pending: Vec<CallSpec>,
}

struct TokenBucket {
    tokens: f64,
    last: Option<Instant>,
}

pub struct UserAgent {
    config: UaConfig,
    rng: rand::rngs::StdRng,
    legs: HashMap<LegId, Leg>,
    by_call_id: HashMap<String, LegId>,
    registrations: HashMap<String, RegEntry>,
    reg_by_call_id: HashMap<String, String>,
    sent_responses: HashMap<ServerTransactionKey, SentResponse>,
    strays: TokenBucket,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SipEvent>,
}

impl UserAgent {
    pub fn new(config: UaConfig) -> Self {
        Self::with_rng(config, rand::rngs::StdRng::from_entropy())
    }

    /// A user agent whose tags, branches and Call-IDs are reproducible, for tests.
    pub fn with_seed(config: UaConfig, seed: u64) -> Self {
        Self::with_rng(config, rand::rngs::StdRng::seed_from_u64(seed))
    }

    fn with_rng(config: UaConfig, rng: rand::rngs::StdRng) -> Self {
        let burst = f64::from(config.stray_limit.burst);
        Self {
            config,
            rng,
            legs: HashMap::new(),
            by_call_id: HashMap::new(),
            registrations: HashMap::new(),
            reg_by_call_id: HashMap::new(),
            sent_responses: HashMap::new(),
            strays: TokenBucket {
                tokens: burst,
                last: None,
            },
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Number of legs still held (including ones lingering after their end).
    pub fn leg_count(&self) -> usize {
        self.legs.len()
    }

    /// Number of registrations held (registered, registering or unregistering).
    pub fn registration_count(&self) -> usize {
        self.registrations.len()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SipEvent> {
        self.events.pop_front()
    }

    /// The next instant [`UserAgent::handle_timeout`] must be called at.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let legs = self.legs.values().filter_map(Leg::deadline);
        let cache = self.sent_responses.values().map(|r| r.expires);
        let regs = self
            .registrations
            .values()
            .filter_map(|r| r.reg.poll_timeout());
        legs.chain(cache).chain(regs).min()
    }

    fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| ALPHABET[self.rng.gen_range(0..ALPHABET.len())] as char)
            .collect()
    }

    fn via(&mut self, transport: Transport) -> (String, String) {
        let branch = format!("{BRANCH_COOKIE}{}", self.token(16));
        let via = format!(
            "SIP/2.0/{} {}:{};branch={branch};rport",
            transport.via_name(),
            self.config.advertised_host,
            self.config.advertised_port
        );
        (via, branch)
    }

    fn contact(&self, user: &str, transport: Transport) -> String {
        let param = match transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
        };
        format!(
            "<sip:{user}@{}:{}{param}>",
            self.config.advertised_host, self.config.advertised_port
        )
    }

    fn leg_exists(&self, leg: LegId) -> bool {
        self.legs.contains_key(&leg)
            || self
                .registrations
                .values()
                .any(|r| r.pending.iter().any(|s| s.leg == leg))
    }

    /// Places a call: REGISTER first when the spec asks for it (and the account is not registered yet),
    /// then the INVITE (RFC 3261 13.2.1).
    pub fn start_call(&mut self, now: Instant, spec: CallSpec) -> Result<(), UaError> {
        if self.leg_exists(spec.leg) {
            return Err(UaError::DuplicateLeg(spec.leg));
        }
        for uri in [&spec.target_uri, &spec.from_uri] {
            if !is_sip_uri(uri) {
                return Err(UaError::BadUri(uri.clone()));
            }
        }
        let Some(registrar_uri) = spec.register.clone() else {
            return self.send_invite(now, spec);
        };
        if !is_sip_uri(&registrar_uri) {
            return Err(UaError::BadUri(registrar_uri));
        }
        let reg_spec = RegistrationSpec {
            registrar_uri,
            aor: spec.from_uri.clone(),
            contact: self.contact(&spec.contact_user, spec.transport),
            destination: spec.destination,
            transport: spec.transport,
            credentials: spec.credentials.clone(),
            expires: self.config.register_expires,
        };
        let key = reg_spec.key();
        let reusable = self.registrations.get(&key).is_some_and(|e| {
            matches!(
                e.reg.state(),
                RegState::Registering | RegState::Registered | RegState::Failed
            )
        });
        if !reusable {
            if let Some(old) = self.registrations.remove(&key) {
                self.reg_by_call_id.remove(old.reg.call_id());
            }
            let seed = self.rng.gen();
            let mut reg = Registration::new(
                reg_spec,
                RegConfig {
                    advertised_host: self.config.advertised_host.clone(),
                    advertised_port: self.config.advertised_port,
                    user_agent: self.config.user_agent.clone(),
                    timers: self.config.timers,
                },
                seed,
            );
            reg.start(now);
            self.reg_by_call_id
                .insert(reg.call_id().to_owned(), key.clone());
            self.registrations.insert(
                key.clone(),
                RegEntry {
                    reg,
                    users: HashSet::new(),
                    pending: Vec::new(),
                },
            );
        }
        let entry = self
            .registrations
            .get_mut(&key)
            .expect("the registration was found or inserted above");
        if entry.reg.state() == RegState::Registered {
            entry.users.insert(spec.leg);
            self.send_invite(now, spec)?;
        } else {
            entry.pending.push(spec);
        }
        self.settle(now);
        Ok(())
    }

    fn send_invite(&mut self, now: Instant, spec: CallSpec) -> Result<(), UaError> {
        let call_id = format!("{}@sipcast", self.token(20));
        let local_tag = self.token(10);
        let (via, branch) = self.via(spec.transport);
        let leg_id = spec.leg;
        let mut leg = Leg {
            call_id: call_id.clone(),
            local_tag,
            cseq: 1,
            phase: Phase::Inviting,
            invite: ClientTransaction::start(
                Kind::Invite,
                now,
                self.config.timers,
                branch.clone(),
                spec.destination,
                Vec::new(),
            ),
            invite_cseq: 1,
            invite_via: via.clone(),
            auth: AuthState::default(),
            provisional_seen: false,
            cancel_wanted: false,
            cancel: None,
            give_up_at: None,
            dialog: None,
            bye: None,
            info: None,
            info_queue: std::collections::VecDeque::new(),
            session_expires: self.config.session_expires,
            min_se_retried: false,
            end_cause: None,
            released: false,
            spec,
        };
        let request = self.invite_bytes(&mut leg, &via)?;
        leg.invite = ClientTransaction::start(
            Kind::Invite,
            now,
            self.config.timers,
            branch,
            leg.spec.destination,
            request.clone(),
        )
        .over_reliable(leg.spec.transport.is_reliable());
        self.transmits
            .push_back(leg.transmit(leg.spec.destination, request));
        self.by_call_id.insert(call_id, leg_id);
        self.legs.insert(leg_id, leg);
        Ok(())
    }

    fn invite_bytes(&mut self, leg: &mut Leg, via: &str) -> Result<Vec<u8>, UaError> {
        let offer = leg.spec.offer.to_sdp();
        let mut builder = RequestBuilder::new(rsip::Method::Invite, leg.spec.target_uri.clone())
            .header("Via", via)
            .header("Max-Forwards", "70")
            .header(
                "From",
                format!("<{}>;tag={}", leg.spec.from_uri, leg.local_tag),
            )
            .header("To", format!("<{}>", leg.spec.target_uri))
            .header("Call-ID", leg.call_id.clone())
            .header("CSeq", format!("{} INVITE", leg.invite_cseq))
            .header(
                "Contact",
                self.contact(&leg.spec.contact_user, leg.spec.transport),
            )
            .header("Allow", ALLOW)
            .header("Supported", SUPPORTED)
            .header("User-Agent", self.config.user_agent.clone());
        if let Some(se) = leg.session_expires {
            // RFC 4028 7.1: ask for a session timer with us as refresher; state our Min-SE.
            builder = builder
                .header("Session-Expires", format!("{};refresher=uac", se.as_secs()))
                .header("Min-SE", self.config.min_se.as_secs().to_string());
        }
        if let Some(credentials) = &leg.spec.credentials {
            for (name, value) in leg.auth.headers(
                &mut self.rng,
                credentials,
                "INVITE",
                &leg.spec.target_uri,
                &offer,
            ) {
                builder = builder.header(name, value);
            }
        }
        builder
            .body("application/sdp", offer)
            .build()
            .map_err(|_| UaError::BadUri(leg.spec.target_uri.clone()))
    }

    /// Ends the call: CANCEL before the answer (9.1), BYE after (15.1.1); a call still waiting for its
    /// registration ends at once. Idempotent.
    pub fn hangup(&mut self, now: Instant, leg_id: LegId) {
        for entry in self.registrations.values_mut() {
            if let Some(i) = entry.pending.iter().position(|s| s.leg == leg_id) {
                entry.pending.remove(i);
                self.events.push_back(SipEvent::Rejected {
                    leg: leg_id,
                    code: 487,
                    reason: "cancelled before the INVITE (registering)".into(),
                });
            }
        }
        if let Some(mut leg) = self.legs.remove(&leg_id) {
            match leg.phase {
                Phase::Inviting if !leg.cancel_wanted => self.hangup_inner(now, &mut leg),
                Phase::Established => self.send_bye(now, &mut leg),
                _ => {}
            }
            self.legs.insert(leg_id, leg);
        }
        self.settle(now);
    }

    fn hangup_inner(&mut self, now: Instant, leg: &mut Leg) {
        leg.cancel_wanted = true;
        // 9.1: a CANCEL may only follow a provisional response; without one, wait for it or for Timer B.
        // Either way, give up 64*T1 from now.
        leg.give_up_at = Some(now + self.config.timers.transaction_timeout());
        if leg.provisional_seen {
            self.send_cancel(now, leg);
        }
    }

    fn send_cancel(&mut self, now: Instant, leg: &mut Leg) {
        if leg.cancel.is_some() {
            return;
        }
        let built = RequestBuilder::new(rsip::Method::Cancel, leg.spec.target_uri.clone())
            .header("Via", leg.invite_via.clone())
            .header("Max-Forwards", "70")
            .header(
                "From",
                format!("<{}>;tag={}", leg.spec.from_uri, leg.local_tag),
            )
            .header("To", format!("<{}>", leg.spec.target_uri))
            .header("Call-ID", leg.call_id.clone())
            .header("CSeq", format!("{} CANCEL", leg.invite_cseq))
            .header("User-Agent", self.config.user_agent.clone())
            .build();
        let Ok(request) = built else { return };
        let branch = leg.invite.branch.clone();
        leg.cancel = Some(
            ClientTransaction::start(
                Kind::NonInvite,
                now,
                self.config.timers,
                branch,
                leg.spec.destination,
                request.clone(),
            )
            .over_reliable(leg.spec.transport.is_reliable()),
        );
        self.transmits
            .push_back(leg.transmit(leg.spec.destination, request));
    }

    fn in_dialog_destination(&self, leg: &Leg, dialog: &Dialog) -> SocketAddr {
        let first_hop = dialog
            .route_set
            .first()
            .map(|r| message::name_addr_uri(r).to_owned());
        match first_hop {
            Some(uri) => uri_socket_addr(&uri).unwrap_or(leg.spec.destination),
            None if leg.spec.via_outbound_proxy => leg.spec.destination,
            None => uri_socket_addr(&dialog.remote_target).unwrap_or(leg.spec.destination),
        }
    }

    /// A request inside the dialog (RFC 3261 12.2.1.1): Request-URI the remote target, Route the route set,
    /// a fresh branch. Returns the bytes (or why they cannot be built), the branch and the Via.
    fn in_dialog_request(
        &mut self,
        leg: &Leg,
        dialog: &Dialog,
        method: rsip::Method,
        cseq: u32,
        extra: &[(&str, String)],
        body: Option<(&'static str, &[u8])>,
    ) -> (Result<Vec<u8>, message::MessageError>, String, String) {
        let (via, branch) = self.via(leg.spec.transport);
        let mut builder = RequestBuilder::new(method, dialog.remote_target.clone())
            .header("Via", via.clone())
            .header("Max-Forwards", "70");
        for route in &dialog.route_set {
            builder = builder.header("Route", route.clone());
        }
        builder = builder
            .header(
                "From",
                format!("<{}>;tag={}", leg.spec.from_uri, leg.local_tag),
            )
            .header("To", dialog.to.clone())
            .header("Call-ID", leg.call_id.clone())
            .header("CSeq", format!("{cseq} {method}"))
            .header("User-Agent", self.config.user_agent.clone());
        for (name, value) in extra {
            builder = builder.header(name, value.clone());
        }
        if let Some((content_type, body)) = body {
            builder = builder.body(content_type, body.to_vec());
        }
        (builder.build(), branch, via)
    }

    /// Sends INFO (RFC 6086) inside an established dialog, e.g. `application/dtmf-relay` DTMF or a
    /// `picture_fast_update` keyframe request. INFOs go out one at a time, in the order asked.
    pub fn send_info(
        &mut self,
        now: Instant,
        leg_id: LegId,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<(), UaError> {
        let Some(mut leg) = self.legs.remove(&leg_id) else {
            return Err(UaError::NotEstablished(leg_id));
        };
        let result = if leg.phase == Phase::Established && leg.dialog.is_some() {
            leg.info_queue.push_back((content_type, body));
            self.send_next_info(now, &mut leg);
            Ok(())
        } else {
            Err(UaError::NotEstablished(leg_id))
        };
        self.legs.insert(leg_id, leg);
        result
    }

    fn send_next_info(&mut self, now: Instant, leg: &mut Leg) {
        if leg
            .info
            .as_ref()
            .is_some_and(|t| !t.is_terminated() && t.state() != State::Completed)
        {
            return;
        }
        let Some((content_type, body)) = leg.info_queue.pop_front() else {
            return;
        };
        let Some(dialog) = leg.dialog.take() else {
            return;
        };
        leg.cseq += 1;
        let (built, branch, _) = self.in_dialog_request(
            leg,
            &dialog,
            rsip::Method::Info,
            leg.cseq,
            &[],
            Some((content_type, &body)),
        );
        let destination = self.in_dialog_destination(leg, &dialog);
        leg.dialog = Some(dialog);
        if let Ok(request) = built {
            leg.info = Some(self.start_non_invite(now, leg, branch, destination, request));
        }
    }

    /// Starts an in-dialog non-INVITE client transaction (17.1.2) and sends its request.
    fn start_non_invite(
        &mut self,
        now: Instant,
        leg: &Leg,
        branch: String,
        destination: SocketAddr,
        request: Vec<u8>,
    ) -> ClientTransaction {
        let tx = ClientTransaction::start(
            Kind::NonInvite,
            now,
            self.config.timers,
            branch,
            destination,
            request.clone(),
        )
        .over_reliable(leg.spec.transport.is_reliable());
        self.transmits.push_back(leg.transmit(destination, request));
        tx
    }

    fn send_bye(&mut self, now: Instant, leg: &mut Leg) {
        let Some(mut dialog) = leg.dialog.take() else {
            return;
        };
        // The session is being torn down: no more refreshes or 2xx retransmissions.
        dialog.timer = None;
        dialog.pending_2xx = None;
        if let Some(refresh) = dialog.refresh.as_mut() {
            refresh.tx.terminate();
        }
        leg.cseq += 1;
        let (built, branch, _) =
            self.in_dialog_request(leg, &dialog, rsip::Method::Bye, leg.cseq, &[], None);
        leg.phase = Phase::Ending;
        let destination = self.in_dialog_destination(leg, &dialog);
        leg.dialog = Some(dialog);
        match built {
            Ok(request) => {
                leg.bye = Some(self.start_non_invite(now, leg, branch, destination, request));
            }
            Err(_) => {
                // The remote target is not a URI we can address: the dialog cannot be ended politely.
                self.end_leg(leg, 400);
            }
        }
    }

    /// BYE on our own initiative (session timer, missing ACK), remembering why.
    fn terminate(&mut self, now: Instant, leg: &mut Leg, why: String) {
        if leg.phase != Phase::Established {
            return;
        }
        leg.end_cause = Some(why);
        self.send_bye(now, leg);
    }

    fn end_leg(&mut self, leg: &mut Leg, code: u16) {
        leg.phase = Phase::Done;
        let reason = match leg.end_cause.take() {
            Some(why) => EndReason::Terminated { code, why },
            None => EndReason::LocalBye { code },
        };
        self.events.push_back(SipEvent::Ended {
            leg: leg.spec.leg,
            reason,
        });
    }

    /// Feeds one received UDP datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.handle_message(now, from, Transport::Udp, data);
    }

    /// Feeds one received message (a datagram, or a message framed from a TCP stream). Malformed requests
    /// are answered 400 (505 for another SIP version) within the stray rate limit; malformed responses are
    /// dropped. Never panics.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        data: &[u8],
    ) {
        match message::parse(data) {
            Ok(msg) => match &msg.start {
                StartLine::Response { code, .. } => {
                    let code = *code;
                    if let Some(key) = self.reg_by_call_id.get(&msg.call_id).cloned() {
                        if let Some(entry) = self.registrations.get_mut(&key) {
                            entry.reg.handle_response(now, &msg);
                        }
                    } else {
                        self.on_response(now, code, &msg);
                    }
                }
                StartLine::Request { method, .. } => {
                    let method = method.clone();
                    self.on_request(now, from, transport, &method, &msg)
                }
            },
            Err(e) => {
                if let Some(echo) = message::salvage_request(data) {
                    if self.stray_allowed(now) {
                        let (code, reason) = e.status();
                        let echo = stamp_echo(echo, from);
                        let payload = message::response_from_echo(
                            &echo,
                            code,
                            reason,
                            None,
                            &[("User-Agent", self.config.user_agent.clone())],
                            None,
                        );
                        self.transmits.push_back(Transmit {
                            destination: from,
                            transport,
                            payload,
                        });
                    }
                }
            }
        }
        self.settle(now);
    }

    /// Token bucket for answers outside dialogs.
    fn stray_allowed(&mut self, now: Instant) -> bool {
        let limit = self.config.stray_limit;
        let elapsed = self
            .strays
            .last
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.strays.last = Some(now);
        self.strays.tokens = (self.strays.tokens + elapsed * f64::from(limit.per_second))
            .min(f64::from(limit.burst));
        if self.strays.tokens >= 1.0 {
            self.strays.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn on_response(&mut self, now: Instant, code: u16, msg: &Incoming) {
        let Some(&leg_id) = self.by_call_id.get(&msg.call_id) else {
            return;
        };
        let Some(mut leg) = self.legs.remove(&leg_id) else {
            return;
        };
        let branch = msg.branch.as_deref().unwrap_or_default();
        let refresh_branch = leg
            .dialog
            .as_ref()
            .and_then(|d| d.refresh.as_ref())
            .map(|r| r.tx.branch.clone());
        match msg.cseq_method.as_str() {
            "INVITE"
                if branch == leg.invite.branch
                    && msg.cseq == leg.invite_cseq
                    && !leg.invite.is_terminated() =>
            {
                self.on_invite_response(now, code, msg, &mut leg)
            }
            "INVITE" if refresh_branch.as_deref() == Some(branch) => {
                self.on_refresh_response(now, code, msg, &mut leg)
            }
            "INVITE" if (200..300).contains(&code) => {
                // A retransmitted 2xx after the transaction ended: ACK it again (13.2.2.4).
                if let Some(dialog) = &leg.dialog {
                    if msg.cseq == dialog.ack_cseq {
                        let ack = leg.transmit(dialog.ack_destination, dialog.ack.clone());
                        self.transmits.push_back(ack);
                    }
                }
            }
            "CANCEL" => {
                if let Some(cancel) = leg.cancel.as_mut().filter(|c| c.branch == branch) {
                    // Its final answer changes nothing: the INVITE's 487 (or 2xx) decides.
                    let _ = cancel.on_response(now, code, Vec::new);
                }
            }
            "INFO" => {
                if let Some(info) = leg.info.as_mut().filter(|t| t.branch == branch) {
                    let passed_up = matches!(
                        info.on_response(now, code, Vec::new),
                        ResponseAction::PassUp { .. }
                    );
                    if passed_up && code >= 200 {
                        if code >= 300 {
                            tracing::warn!(leg = leg.spec.leg, code, "INFO refused by the peer");
                        }
                        self.send_next_info(now, &mut leg);
                    }
                }
            }
            "BYE" => {
                if let Some(bye) = leg.bye.as_mut().filter(|b| b.branch == branch) {
                    if let ResponseAction::PassUp { .. } = bye.on_response(now, code, Vec::new) {
                        if code >= 200 && leg.phase == Phase::Ending {
                            self.end_leg(&mut leg, code);
                        }
                    }
                }
            }
            _ => {}
        }
        self.keep_or_drop(leg);
    }

    fn on_invite_response(&mut self, now: Instant, code: u16, msg: &Incoming, leg: &mut Leg) {
        let to_echo = msg.echoed("To").unwrap_or_default().to_owned();
        let ack = if code >= 300 {
            self::ack_for_failure(leg, &to_echo)
        } else {
            Vec::new()
        };
        let action = leg.invite.on_response(now, code, move || ack);
        let send = match &action {
            ResponseAction::PassUp { send } | ResponseAction::Absorb { send } => send.clone(),
        };
        if let Some(payload) = send {
            self.transmits
                .push_back(leg.transmit(leg.invite.destination, payload));
        }
        if matches!(action, ResponseAction::Absorb { .. }) || leg.phase != Phase::Inviting {
            return;
        }
        match code {
            100..=199 => {
                leg.provisional_seen = true;
                if leg.cancel_wanted {
                    self.send_cancel(now, leg);
                } else {
                    if code > 100 {
                        leg.give_up_at = Some(now + self.config.no_answer_timeout);
                    }
                    self.events.push_back(SipEvent::Progress {
                        leg: leg.spec.leg,
                        code,
                    });
                }
            }
            200..=299 => self.on_invite_success(now, code, msg, leg),
            401 | 407
                if !leg.cancel_wanted
                    && leg.spec.credentials.is_some()
                    && leg.auth.absorb(code, msg) =>
            {
                self.resend_invite(now, leg);
            }
            // RFC 4028 6: Session Interval Too Small: ask again with the Min-SE given, once.
            422 if !leg.cancel_wanted && !leg.min_se_retried && leg.session_expires.is_some() => {
                match min_se_of(msg) {
                    Some(min) if Some(min) > leg.session_expires => {
                        leg.min_se_retried = true;
                        leg.session_expires = Some(min);
                        self.resend_invite(now, leg);
                    }
                    _ => self.reject(leg, code, reason_phrase(msg)),
                }
            }
            _ => {
                let reason = if leg.cancel_wanted {
                    "cancelled".to_owned()
                } else {
                    reason_phrase(msg)
                };
                self.reject(leg, code, reason);
            }
        }
    }

    fn reject(&mut self, leg: &mut Leg, code: u16, reason: String) {
        leg.phase = Phase::Done;
        leg.give_up_at = None;
        self.events.push_back(SipEvent::Rejected {
            leg: leg.spec.leg,
            code,
            reason,
        });
    }

    /// A new INVITE in the same call (22.2 after a challenge, RFC 4028 after a 422): new CSeq and branch.
    fn resend_invite(&mut self, now: Instant, leg: &mut Leg) {
        leg.invite_cseq = leg.cseq + 1;
        leg.cseq = leg.invite_cseq;
        let (via, branch) = self.via(leg.spec.transport);
        let Ok(request) = self.invite_bytes(leg, &via) else {
            self.reject(leg, 400, "cannot build the INVITE".into());
            return;
        };
        leg.invite_via = via;
        leg.provisional_seen = false;
        leg.invite = ClientTransaction::start(
            Kind::Invite,
            now,
            self.config.timers,
            branch,
            leg.spec.destination,
            request.clone(),
        )
        .over_reliable(leg.spec.transport.is_reliable());
        self.transmits
            .push_back(leg.transmit(leg.spec.destination, request));
    }

    fn on_invite_success(&mut self, now: Instant, code: u16, msg: &Incoming, leg: &mut Leg) {
        leg.give_up_at = None;
        let to = msg.echoed("To").unwrap_or_default().to_owned();
        let remote_target = msg
            .contact
            .clone()
            .unwrap_or_else(|| leg.spec.target_uri.clone());
        let route_set: Vec<String> = msg.record_route.iter().rev().cloned().collect();
        let timer = match (session_expires_of(msg), leg.session_expires) {
            // RFC 4028 7.2: the 2xx says who refreshes; without a refresher parameter the UAC does.
            (Some((interval, refresher)), _) => Some(SessionTimer::start(
                now,
                interval,
                refresher.as_deref() != Some("uas"),
            )),
            // The peer ignored the timer: we refresh at the interval we asked for, as a session-timer-aware
            // proxy would have told us to (RFC 4028 8.1: refresher=uac).
            (None, Some(interval)) => Some(SessionTimer::start(now, interval, true)),
            (None, None) => None,
        };
        let mut dialog = Dialog {
            remote_tag: msg.to_tag.clone().unwrap_or_default(),
            remote_target,
            route_set,
            to,
            ack: Vec::new(),
            ack_cseq: leg.invite_cseq,
            ack_destination: leg.spec.destination,
            remote_cseq: None,
            local_sdp: leg.spec.offer.to_sdp(),
            sdp_version: leg.spec.offer.session_id,
            codec: sdp::plan_from_answer(&msg.body).ok().map(|p| p.audio.codec),
            timer,
            refresh: None,
            pending_2xx: None,
        };
        dialog.ack_destination = self.in_dialog_destination(leg, &dialog);
        // 13.2.2.4: the 2xx ACK is a request of its own, with the INVITE's CSeq number.
        let (built, _, _) =
            self.in_dialog_request(leg, &dialog, rsip::Method::Ack, leg.invite_cseq, &[], None);
        match built {
            Ok(ack) => {
                dialog.ack = ack.clone();
                self.transmits
                    .push_back(leg.transmit(dialog.ack_destination, ack));
            }
            Err(_) => {
                // A Contact we cannot address: we cannot even ACK, so the call cannot go on.
                self.reject(leg, code, "unusable Contact in 2xx".into());
                return;
            }
        }
        leg.dialog = Some(dialog);
        leg.phase = Phase::Established;
        if leg.cancel_wanted {
            // 15: the call was answered after we gave up: ACK it, then end it at once.
            self.send_bye(now, leg);
            leg.phase = Phase::Done;
            self.events.push_back(SipEvent::Rejected {
                leg: leg.spec.leg,
                code,
                reason: "answered after cancel; BYE sent".into(),
            });
        } else {
            self.events.push_back(SipEvent::Answered {
                leg: leg.spec.leg,
                code,
                sdp: msg.body.clone(),
            });
        }
    }

    /// RFC 4028 10: the refresher's re-INVITE, with the current session description unchanged.
    fn send_refresh(
        &mut self,
        now: Instant,
        leg: &mut Leg,
        interval: Duration,
        min_se_retried: bool,
    ) {
        let Some(dialog) = leg.dialog.take() else {
            return;
        };
        leg.cseq += 1;
        let extra = [
            (
                "Contact",
                self.contact(&leg.spec.contact_user, leg.spec.transport),
            ),
            ("Allow", ALLOW.to_owned()),
            ("Supported", SUPPORTED.to_owned()),
            (
                "Session-Expires",
                format!("{};refresher=uac", interval.as_secs()),
            ),
            ("Min-SE", self.config.min_se.as_secs().to_string()),
        ];
        let body = dialog.local_sdp.clone();
        let (built, branch, via) = self.in_dialog_request(
            leg,
            &dialog,
            rsip::Method::Invite,
            leg.cseq,
            &extra,
            Some(("application/sdp", &body)),
        );
        let destination = self.in_dialog_destination(leg, &dialog);
        let mut dialog = dialog;
        if let Ok(request) = built {
            dialog.refresh = Some(Refresh {
                tx: ClientTransaction::start(
                    Kind::Invite,
                    now,
                    self.config.timers,
                    branch,
                    destination,
                    request.clone(),
                )
                .over_reliable(leg.spec.transport.is_reliable()),
                cseq: leg.cseq,
                via,
                interval,
                min_se_retried,
            });
            self.transmits.push_back(leg.transmit(destination, request));
        }
        leg.dialog = Some(dialog);
    }

    fn on_refresh_response(&mut self, now: Instant, code: u16, msg: &Incoming, leg: &mut Leg) {
        let Some(mut dialog) = leg.dialog.take() else {
            return;
        };
        let Some(mut refresh) = dialog.refresh.take() else {
            leg.dialog = Some(dialog);
            return;
        };
        let ack = if code >= 300 {
            ack_for_failure_in_dialog(leg, &dialog, &refresh.via, refresh.cseq)
        } else {
            Vec::new()
        };
        let action = refresh.tx.on_response(now, code, move || ack);
        let send = match &action {
            ResponseAction::PassUp { send } | ResponseAction::Absorb { send } => send.clone(),
        };
        if let Some(payload) = send {
            self.transmits
                .push_back(leg.transmit(refresh.tx.destination, payload));
        }
        let passed_up = matches!(action, ResponseAction::PassUp { .. });
        let (cseq, interval, retried) = (refresh.cseq, refresh.interval, refresh.min_se_retried);
        // Keep the transaction while it lingers (Timer D); a final answer is handled once.
        dialog.refresh = Some(refresh);
        leg.dialog = Some(dialog);
        if !passed_up || code < 200 || leg.phase != Phase::Established {
            return;
        }
        match code {
            200..=299 => {
                let Some(mut dialog) = leg.dialog.take() else {
                    return;
                };
                if let Some(contact) = &msg.contact {
                    dialog.remote_target = contact.clone(); // 12.2.1.2: target refresh
                }
                let (built, _, _) =
                    self.in_dialog_request(leg, &dialog, rsip::Method::Ack, cseq, &[], None);
                if let Ok(ack) = built {
                    dialog.ack = ack.clone();
                    dialog.ack_cseq = cseq;
                    dialog.ack_destination = self.in_dialog_destination(leg, &dialog);
                    self.transmits
                        .push_back(leg.transmit(dialog.ack_destination, ack));
                }
                let (interval, we_refresh) = match session_expires_of(msg) {
                    Some((i, refresher)) => (i, refresher.as_deref() != Some("uas")),
                    None => (interval, true),
                };
                dialog.timer = Some(SessionTimer::start(now, interval, we_refresh));
                leg.dialog = Some(dialog);
                self.events.push_back(SipEvent::Refreshed {
                    leg: leg.spec.leg,
                    by_us: true,
                    interval,
                });
            }
            422 if !retried => match min_se_of(msg) {
                Some(min) if min > interval => self.send_refresh(now, leg, min, true),
                _ => {}
            },
            // 14.1: glare; try again after 2.1 to 4 s.
            491 => {
                let wait = Duration::from_millis(self.rng.gen_range(2100..=4000));
                if let Some(timer) = leg.dialog.as_mut().and_then(|d| d.timer.as_mut()) {
                    timer.refresh_at = Some(now + wait);
                }
            }
            // RFC 4028 10 / RFC 3261 12.2.1.2: the dialog is gone or the peer unreachable.
            408 | 481 => self.terminate(
                now,
                leg,
                format!("session refresh answered {code}: session timer expired"),
            ),
            // Any other failure: the session goes on until it expires.
            _ => {}
        }
    }

    fn on_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        method: &str,
        msg: &Incoming,
    ) {
        let leg_id = self.by_call_id.get(&msg.call_id).copied().filter(|id| {
            self.legs.get(id).is_some_and(|leg| {
                msg.to_tag.as_deref() == Some(leg.local_tag.as_str())
                    && leg
                        .dialog
                        .as_ref()
                        .is_some_and(|d| msg.from_tag.as_deref() == Some(d.remote_tag.as_str()))
            })
        });
        if method == "ACK" {
            // ACKs for our non-2xx answers need nothing; one for a 2xx ends its retransmissions.
            if let Some(leg_id) = leg_id {
                self.on_ack(leg_id, msg);
            }
            return;
        }
        let key = ServerTransactionKey {
            branch: msg.branch.clone().unwrap_or_default(),
            method: method.to_owned(),
            call_id: msg.call_id.clone(),
        };
        if let Some(sent) = self.sent_responses.get(&key) {
            // A retransmitted request: answer as before (17.2.2, 17.2.1).
            self.transmits.push_back(Transmit {
                destination: sent.destination,
                transport: sent.transport,
                payload: sent.payload.clone(),
            });
            return;
        }
        if leg_id.is_none() && !self.stray_allowed(now) {
            return; // A flood of strays: drop instead of answering.
        }
        let mut extra: Vec<(&str, String)> = vec![
            ("Allow", ALLOW.to_owned()),
            ("User-Agent", self.config.user_agent.clone()),
        ];
        let mut body = None;
        let (code, reason): (u16, String) =
            if let Some(code) = self.precheck(method, msg, &mut extra) {
                code
            } else if let Some(leg_id) = leg_id {
                self.in_dialog(
                    now, leg_id, from, transport, method, msg, &mut extra, &mut body,
                )
            } else {
                match method {
                    "OPTIONS" => {
                        extra.push(("Accept", "application/sdp".into()));
                        extra.push(("Supported", SUPPORTED.into()));
                        (200, "OK".into())
                    }
                    "INVITE" => {
                        let code = self.config.incoming_invite_status;
                        (code, default_reason(code).into())
                    }
                    "CANCEL" => (481, "Call/Transaction Does Not Exist".into()),
                    "BYE" | "INFO" | "UPDATE" | "PRACK" | "NOTIFY" => {
                        (481, "Call/Transaction Does Not Exist".into())
                    }
                    _ if msg.to_tag.is_some() => (481, "Call/Transaction Does Not Exist".into()),
                    _ => (405, "Method Not Allowed".into()),
                }
            };
        let reply_tag = self.token(10);
        let echo = stamp_echo(msg.echo.clone(), from);
        let payload = message::response_from_echo(
            &echo,
            code,
            &reason,
            (msg.to_tag.is_none()).then_some(reply_tag.as_str()),
            &extra,
            body.as_ref()
                .map(|b: &Vec<u8>| ("application/sdp", b.as_slice())),
        );
        self.sent_responses.insert(
            key,
            SentResponse {
                payload: payload.clone(),
                destination: from,
                transport,
                expires: now + self.config.timers.transaction_timeout(),
            },
        );
        if code < 300 && method == "INVITE" {
            if let Some(p) = leg_id
                .and_then(|id| self.legs.get_mut(&id))
                .and_then(|l| l.dialog.as_mut())
                .and_then(|d| d.pending_2xx.as_mut())
            {
                p.payload = payload.clone();
            }
        }
        self.transmits.push_back(Transmit {
            destination: from,
            transport,
            payload,
        });
        if let Some(leg_id) = leg_id {
            if let Some(leg) = self.legs.remove(&leg_id) {
                self.keep_or_drop(leg);
            }
        }
    }

    /// Checks every request gets before its method is looked at (8.2.1, 8.2.2): the Request-URI scheme
    /// (416), the method (501) and the extensions it requires (420).
    fn precheck(
        &self,
        method: &str,
        msg: &Incoming,
        extra: &mut Vec<(&str, String)>,
    ) -> Option<(u16, String)> {
        if let StartLine::Request { uri, .. } = &msg.start {
            let scheme = uri.split(':').next().unwrap_or_default();
            if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
                return Some((416, "Unsupported URI Scheme".into()));
            }
        }
        if !KNOWN_METHODS.contains(&method) {
            return Some((501, "Not Implemented".into()));
        }
        if method != "CANCEL" {
            let unsupported: Vec<String> = msg
                .list("require")
                .into_iter()
                .filter(|t| !t.eq_ignore_ascii_case(SUPPORTED))
                .collect();
            if !unsupported.is_empty() {
                extra.push(("Unsupported", unsupported.join(", ")));
                return Some((420, "Bad Extension".into()));
            }
        }
        None
    }

    /// A request inside one of our dialogs; returns the status to answer with.
    #[allow(clippy::too_many_arguments)]
    fn in_dialog(
        &mut self,
        now: Instant,
        leg_id: LegId,
        from: SocketAddr,
        transport: Transport,
        method: &str,
        msg: &Incoming,
        extra: &mut Vec<(&str, String)>,
        body: &mut Option<Vec<u8>>,
    ) -> (u16, String) {
        let Some(mut leg) = self.legs.remove(&leg_id) else {
            return (481, "Call/Transaction Does Not Exist".into());
        };
        let answer = self.in_dialog_leg(now, &mut leg, from, transport, method, msg, extra, body);
        self.legs.insert(leg_id, leg);
        answer
    }

    #[allow(clippy::too_many_arguments)]
    fn in_dialog_leg(
        &mut self,
        now: Instant,
        leg: &mut Leg,
        from: SocketAddr,
        transport: Transport,
        method: &str,
        msg: &Incoming,
        extra: &mut Vec<(&str, String)>,
        body: &mut Option<Vec<u8>>,
    ) -> (u16, String) {
        let ok = || (200, "OK".to_owned());
        if method == "CANCEL" {
            // Our answers to in-dialog requests are immediate: nothing is left to cancel (9.2).
            return (481, "Call/Transaction Does Not Exist".into());
        }
        if let Some(dialog) = leg.dialog.as_mut() {
            // 12.2.2: requests out of CSeq order are refused.
            if dialog.remote_cseq.is_some_and(|c| msg.cseq <= c) {
                return (500, "CSeq Out of Order".into());
            }
            dialog.remote_cseq = Some(msg.cseq);
        }
        match method {
            "BYE" => {
                if matches!(leg.phase, Phase::Established | Phase::Ending) {
                    let was_ending = leg.phase == Phase::Ending;
                    leg.phase = Phase::Done;
                    if let Some(bye) = leg.bye.as_mut() {
                        bye.terminate();
                    }
                    if let Some(dialog) = leg.dialog.as_mut() {
                        dialog.timer = None;
                        dialog.pending_2xx = None;
                    }
                    let reason = match (was_ending, leg.end_cause.take()) {
                        (true, Some(why)) => EndReason::Terminated { code: 200, why },
                        (true, None) => EndReason::LocalBye { code: 200 },
                        (false, _) => EndReason::RemoteBye,
                    };
                    self.events.push_back(SipEvent::Ended {
                        leg: leg.spec.leg,
                        reason,
                    });
                }
                ok()
            }
            "OPTIONS" => {
                extra.push(("Accept", "application/sdp".into()));
                extra.push(("Supported", SUPPORTED.into()));
                ok()
            }
            "INFO" => ok(),
            "INVITE" | "UPDATE" if leg.phase == Phase::Established => {
                self.session_update(now, leg, from, transport, method, msg, extra, body)
            }
            "INVITE" | "UPDATE" => (481, "Call/Transaction Does Not Exist".into()),
            _ => (405, "Method Not Allowed".into()),
        }
    }

    /// A re-INVITE or UPDATE from the peer (RFC 3261 14.2, RFC 3311, RFC 4028 9): a new offer answered,
    /// a refresh taken into account.
    #[allow(clippy::too_many_arguments)]
    fn session_update(
        &mut self,
        now: Instant,
        leg: &mut Leg,
        from: SocketAddr,
        transport: Transport,
        method: &str,
        msg: &Incoming,
        extra: &mut Vec<(&str, String)>,
        body: &mut Option<Vec<u8>>,
    ) -> (u16, String) {
        let min_se = self.config.min_se;
        let contact = self.contact(&leg.spec.contact_user, leg.spec.transport);
        let timers = self.config.timers;
        let Some(dialog) = leg.dialog.as_mut() else {
            return (481, "Call/Transaction Does Not Exist".into());
        };
        // 14.2: glare with our own re-INVITE, or a second re-INVITE before the first was ACKed.
        if dialog
            .refresh
            .as_ref()
            .is_some_and(|r| !r.tx.is_terminated())
        {
            return (491, "Request Pending".into());
        }
        if method == "INVITE" && dialog.pending_2xx.is_some() {
            extra.push(("Retry-After", "1".into()));
            return (500, "Server Internal Error".into());
        }
        let requested = session_expires_of(msg);
        if let Some((interval, _)) = &requested {
            if *interval < min_se {
                extra.push(("Min-SE", min_se.as_secs().to_string()));
                return (422, "Session Interval Too Small".into());
            }
        }
        let has_offer = !msg.body.is_empty()
            && msg
                .header("content-type")
                .is_none_or(|t| t.to_ascii_lowercase().starts_with("application/sdp"));
        if !msg.body.is_empty() && !has_offer {
            extra.push(("Accept", "application/sdp".into()));
            return (415, "Unsupported Media Type".into());
        }
        let mut hold = None;
        if has_offer {
            match sdp::answer_reoffer(
                &leg.spec.offer,
                dialog.sdp_version + 1,
                &msg.body,
                dialog.codec,
            ) {
                Ok((answer, plan)) => {
                    dialog.sdp_version += 1;
                    dialog.local_sdp = answer;
                    dialog.codec = Some(plan.audio.codec);
                    hold = Some(plan.is_hold());
                }
                // 14.2: an offer we cannot accept leaves the session as it was.
                Err(_) => return (488, "Not Acceptable Here".into()),
            }
        }
        if let Some(contact) = &msg.contact {
            if method == "INVITE" || method == "UPDATE" {
                dialog.remote_target = contact.clone(); // 12.2.2: target refresh
            }
        }
        *body = Some(dialog.local_sdp.clone());
        extra.push(("Contact", contact));
        extra.push(("Supported", SUPPORTED.into()));
        match requested {
            Some((interval, refresher)) => {
                // RFC 4028 9: without a refresher parameter the UAS (we) chooses: we refresh.
                let peer_refreshes = refresher.as_deref() == Some("uac");
                dialog.timer = Some(SessionTimer::start(now, interval, !peer_refreshes));
                let who = if peer_refreshes { "uac" } else { "uas" };
                extra.push((
                    "Session-Expires",
                    format!("{};refresher={who}", interval.as_secs()),
                ));
                if msg.lists_token("supported", "timer") || msg.lists_token("require", "timer") {
                    extra.push(("Require", "timer".into()));
                }
                self.events.push_back(SipEvent::Refreshed {
                    leg: leg.spec.leg,
                    by_us: false,
                    interval,
                });
            }
            None => {
                // Not a session refresh in RFC 4028's sense; a running timer keeps its schedule, but a
                // peer that sends requests is alive, so the expiry moves on.
                if let Some(timer) = dialog.timer.as_mut() {
                    let restarted = SessionTimer::start(now, timer.interval, timer.we_refresh);
                    timer.expire_at = restarted.expire_at;
                }
            }
        }
        if method == "INVITE" {
            // 13.3.1.4: retransmit the 2xx until the ACK comes (payload set once built).
            dialog.pending_2xx = Some(Pending2xx {
                cseq: msg.cseq,
                payload: Vec::new(),
                destination: from,
                transport,
                retransmit_at: (!transport.is_reliable()).then(|| now + timers.t1),
                interval: timers.t1,
                give_up_at: now + timers.transaction_timeout(),
                offered: !has_offer,
            });
        }
        if let Some(hold) = hold {
            self.events.push_back(SipEvent::MediaUpdated {
                leg: leg.spec.leg,
                hold,
                sdp: msg.body.clone(),
            });
        }
        (200, "OK".into())
    }

    fn on_ack(&mut self, leg_id: LegId, msg: &Incoming) {
        let Some(leg) = self.legs.get_mut(&leg_id) else {
            return;
        };
        let Some(dialog) = leg.dialog.as_mut() else {
            return;
        };
        let Some(pending) = dialog.pending_2xx.take_if(|p| p.cseq == msg.cseq) else {
            return;
        };
        if pending.offered && !msg.body.is_empty() {
            // The answer to the offer we put in our 2xx.
            if let Ok(plan) = sdp::plan_from_answer(&msg.body) {
                self.events.push_back(SipEvent::MediaUpdated {
                    leg: leg_id,
                    hold: plan.is_hold(),
                    sdp: msg.body.clone(),
                });
            }
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.sent_responses.retain(|_, r| r.expires > now);
        let due: Vec<LegId> = self
            .legs
            .iter()
            .filter(|(_, l)| l.deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for leg_id in due {
            let Some(mut leg) = self.legs.remove(&leg_id) else {
                continue;
            };
            self.fire_leg_timers(now, &mut leg);
            self.keep_or_drop(leg);
        }
        for entry in self.registrations.values_mut() {
            if entry.reg.poll_timeout().is_some_and(|t| t <= now) {
                entry.reg.handle_timeout(now);
            }
        }
        self.settle(now);
    }

    fn fire_leg_timers(&mut self, now: Instant, leg: &mut Leg) {
        let leg_id = leg.spec.leg;
        while let Some(action) = leg.invite.on_timeout(now) {
            match action {
                TimerAction::Retransmit(payload) => {
                    let t = leg.transmit(leg.invite.destination, payload);
                    self.transmits.push_back(t)
                }
                TimerAction::TimedOut if leg.phase == Phase::Inviting => {
                    let reason = if leg.cancel_wanted {
                        "cancelled"
                    } else {
                        "Timer B: no response to INVITE"
                    };
                    self.reject(leg, 408, reason.into());
                }
                TimerAction::TimedOut | TimerAction::Terminated => {}
            }
        }
        if let Some(cancel) = leg.cancel.as_mut() {
            while let Some(action) = cancel.on_timeout(now) {
                if let TimerAction::Retransmit(payload) = action {
                    let destination = cancel.destination;
                    self.transmits.push_back(Transmit {
                        destination,
                        transport: leg.spec.transport,
                        payload,
                    });
                }
            }
        }
        if let Some(bye) = leg.bye.as_mut() {
            let mut timed_out = false;
            while let Some(action) = bye.on_timeout(now) {
                match action {
                    TimerAction::Retransmit(payload) => self.transmits.push_back(Transmit {
                        destination: bye.destination,
                        transport: leg.spec.transport,
                        payload,
                    }),
                    TimerAction::TimedOut => timed_out = true,
                    TimerAction::Terminated => {}
                }
            }
            if timed_out && leg.phase == Phase::Ending {
                self.end_leg(leg, 408);
            }
        }
        if let Some(info) = leg.info.as_mut() {
            let mut timed_out = false;
            while let Some(action) = info.on_timeout(now) {
                match action {
                    TimerAction::Retransmit(payload) => self.transmits.push_back(Transmit {
                        destination: info.destination,
                        transport: leg.spec.transport,
                        payload,
                    }),
                    TimerAction::TimedOut => timed_out = true,
                    TimerAction::Terminated => {}
                }
            }
            if timed_out {
                // RFC 6086 4.2.2 leaves the dialog to the UA; the next queued INFO still goes out.
                tracing::warn!(leg = leg.spec.leg, "INFO got no answer (Timer F)");
                self.send_next_info(now, leg);
            }
        }
        self.fire_dialog_timers(now, leg);
        if leg.give_up_at.is_some_and(|t| t <= now) {
            leg.give_up_at = None;
            if leg.phase == Phase::Inviting {
                if leg.cancel_wanted {
                    // 9.1: no final response 64*T1 after the CANCEL: consider the INVITE cancelled.
                    leg.invite.terminate();
                    self.reject(leg, 487, "cancelled; no final response".into());
                } else {
                    // Ringing for too long: CANCEL, reported once the 487 arrives.
                    self.hangup_inner(now, leg);
                }
            }
        }
        let _ = leg_id;
    }

    fn fire_dialog_timers(&mut self, now: Instant, leg: &mut Leg) {
        if leg.phase != Phase::Established {
            return;
        }
        let Some(mut dialog) = leg.dialog.take() else {
            return;
        };
        let mut refresh_timed_out = false;
        if let Some(refresh) = dialog.refresh.as_mut() {
            while let Some(action) = refresh.tx.on_timeout(now) {
                match action {
                    TimerAction::Retransmit(payload) => self.transmits.push_back(Transmit {
                        destination: refresh.tx.destination,
                        transport: leg.spec.transport,
                        payload,
                    }),
                    TimerAction::TimedOut => refresh_timed_out = true,
                    TimerAction::Terminated => {}
                }
            }
            if refresh.tx.is_terminated() && refresh.tx.deadline().is_none() {
                dialog.refresh = None;
            }
        }
        let mut no_ack = false;
        if let Some(p) = dialog.pending_2xx.as_mut() {
            if p.give_up_at <= now {
                no_ack = true;
            } else if p.retransmit_at.is_some_and(|t| t <= now) {
                p.interval = (p.interval * 2).min(self.config.timers.t2);
                p.retransmit_at = Some(now + p.interval);
                self.transmits.push_back(Transmit {
                    destination: p.destination,
                    transport: p.transport,
                    payload: p.payload.clone(),
                });
            }
        }
        let mut refresh_due = None;
        let mut expired = false;
        if let Some(timer) = dialog.timer.as_mut() {
            if timer.expire_at <= now {
                expired = true;
            } else if timer.refresh_at.is_some_and(|t| t <= now) {
                timer.refresh_at = None;
                if dialog.refresh.is_none() {
                    refresh_due = Some(timer.interval);
                }
            }
        }
        leg.dialog = Some(dialog);
        if refresh_timed_out {
            self.terminate(
                now,
                leg,
                "session refresh got no answer (Timer B): session timer expired".into(),
            );
        } else if no_ack {
            self.terminate(
                now,
                leg,
                "no ACK for our 2xx to a re-INVITE (13.3.1.4)".into(),
            );
        } else if expired {
            self.terminate(
                now,
                leg,
                "session timer expired without a refresh (RFC 4028 10)".into(),
            );
        } else if let Some(interval) = refresh_due {
            self.send_refresh(now, leg, interval, false);
        }
    }

    fn keep_or_drop(&mut self, leg: Leg) {
        if leg.is_finished() {
            self.by_call_id.remove(&leg.call_id);
            if !leg.released {
                self.release(leg.spec.leg);
            }
        } else {
            self.legs.insert(leg.spec.leg, leg);
        }
    }

    /// A leg is over: the registration it used may be removed.
    fn release(&mut self, leg_id: LegId) {
        for entry in self.registrations.values_mut() {
            entry.users.remove(&leg_id);
        }
    }

    /// After every input: ended legs leave their registration, registrations without calls are removed,
    /// registration outcomes reach the calls waiting for them.
    fn settle(&mut self, now: Instant) {
        let ended: Vec<LegId> = self
            .legs
            .values_mut()
            .filter(|l| l.phase == Phase::Done && !l.released)
            .map(|l| {
                l.released = true;
                l.spec.leg
            })
            .collect();
        for leg in ended {
            self.release(leg);
        }
        let keys: Vec<String> = self.registrations.keys().cloned().collect();
        for key in keys {
            let mut start = Vec::new();
            let mut remove = false;
            if let Some(entry) = self.registrations.get_mut(&key) {
                while let Some((destination, payload)) = entry.reg.poll_transmit() {
                    self.transmits.push_back(Transmit {
                        destination,
                        transport: entry.reg.spec().transport,
                        payload,
                    });
                }
                while let Some(event) = entry.reg.poll_event() {
                    match event {
                        RegEvent::Registered { expires } => {
                            for leg in entry
                                .users
                                .iter()
                                .chain(entry.pending.iter().map(|s| &s.leg))
                            {
                                self.events
                                    .push_back(SipEvent::Registered { leg: *leg, expires });
                            }
                            for spec in entry.pending.drain(..) {
                                entry.users.insert(spec.leg);
                                start.push(spec);
                            }
                        }
                        RegEvent::Failed { code, reason } => {
                            for spec in entry.pending.drain(..) {
                                self.events.push_back(SipEvent::Rejected {
                                    leg: spec.leg,
                                    code,
                                    reason: format!("registration failed: {reason}"),
                                });
                            }
                        }
                        RegEvent::Unregistered => remove = true,
                    }
                }
                let unused = entry.users.is_empty() && entry.pending.is_empty() && start.is_empty();
                if unused && !remove {
                    match entry.reg.state() {
                        RegState::Registered | RegState::Registering => entry.reg.unregister(now),
                        RegState::Failed => {
                            entry.reg.unregister(now);
                            remove = entry.reg.is_done();
                        }
                        RegState::Unregistering => {}
                        RegState::Done => remove = true,
                    }
                    while let Some((destination, payload)) = entry.reg.poll_transmit() {
                        self.transmits.push_back(Transmit {
                            destination,
                            transport: entry.reg.spec().transport,
                            payload,
                        });
                    }
                    while let Some(event) = entry.reg.poll_event() {
                        if event == RegEvent::Unregistered {
                            remove = true;
                        }
                    }
                }
            }
            if remove {
                if let Some(entry) = self.registrations.remove(&key) {
                    self.reg_by_call_id.remove(entry.reg.call_id());
                }
            }
            for spec in start {
                let leg = spec.leg;
                if let Err(e) = self.send_invite(now, spec) {
                    self.events.push_back(SipEvent::Rejected {
                        leg,
                        code: 400,
                        reason: e.to_string(),
                    });
                }
            }
        }
    }
}

/// RFC 3261 17.1.1.3: the ACK for a non-2xx final response, inside the INVITE transaction.
fn ack_for_failure(leg: &Leg, to: &str) -> Vec<u8> {
    RequestBuilder::new(rsip::Method::Ack, leg.spec.target_uri.clone())
        .header("Via", leg.invite_via.clone())
        .header("Max-Forwards", "70")
        .header(
            "From",
            format!("<{}>;tag={}", leg.spec.from_uri, leg.local_tag),
        )
        .header("To", to.to_owned())
        .header("Call-ID", leg.call_id.clone())
        .header("CSeq", format!("{} ACK", leg.invite_cseq))
        .build()
        .unwrap_or_default()
}

/// 17.1.1.3 for a re-INVITE: same Request-URI, Via, Route and CSeq number as the re-INVITE.
fn ack_for_failure_in_dialog(leg: &Leg, dialog: &Dialog, via: &str, cseq: u32) -> Vec<u8> {
    let mut builder = RequestBuilder::new(rsip::Method::Ack, dialog.remote_target.clone())
        .header("Via", via.to_owned())
        .header("Max-Forwards", "70");
    for route in &dialog.route_set {
        builder = builder.header("Route", route.clone());
    }
    builder
        .header(
            "From",
            format!("<{}>;tag={}", leg.spec.from_uri, leg.local_tag),
        )
        .header("To", dialog.to.clone())
        .header("Call-ID", leg.call_id.clone())
        .header("CSeq", format!("{cseq} ACK"))
        .build()
        .unwrap_or_default()
}

/// `Session-Expires: delta[;refresher=uac|uas]` (RFC 4028 4).
fn session_expires_of(msg: &Incoming) -> Option<(Duration, Option<String>)> {
    let value = msg.header("session-expires")?;
    let mut parts = value.split(';');
    let secs: u64 = parts.next()?.trim().parse().ok()?;
    let refresher = parts.find_map(|p| {
        let (n, v) = p.split_once('=')?;
        n.trim()
            .eq_ignore_ascii_case("refresher")
            .then(|| v.trim().to_ascii_lowercase())
    });
    (secs > 0).then(|| (Duration::from_secs(secs), refresher))
}

fn min_se_of(msg: &Incoming) -> Option<Duration> {
    let value = msg.header("min-se")?;
    value
        .split(';')
        .next()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}

/// RFC 3261 18.2.1 and RFC 3581 4: the top Via of a response says where the request came from.
fn stamp_echo(
    mut echo: Vec<(&'static str, String)>,
    from: SocketAddr,
) -> Vec<(&'static str, String)> {
    if let Some((_, via)) = echo.iter_mut().find(|(n, _)| *n == "Via") {
        *via = message::stamp_via(via, from);
    }
    echo
}

fn default_reason(code: u16) -> &'static str {
    match code {
        403 => "Forbidden",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        488 => "Not Acceptable Here",
        603 => "Decline",
        _ => "Rejected",
    }
}

fn reason_phrase(msg: &Incoming) -> String {
    match &msg.start {
        StartLine::Response { reason, .. } => reason.clone(),
        StartLine::Request { .. } => String::new(),
    }
}

/// True for a `sip:` or `sips:` URI with a host that both our parser and rsip (which serialises what we
/// send) accept.
pub fn is_sip_uri(uri: &str) -> bool {
    message::SipUri::parse(uri).is_ok() && rsip::Uri::try_from(uri).is_ok()
}

/// Host and port of a SIP URI (`[v6]` brackets removed from the host).
pub fn uri_host_port(uri: &str) -> Option<(String, Option<u16>)> {
    message::SipUri::parse(uri).ok().map(|u| (u.host, u.port))
}

/// The socket address of a SIP URI whose host is an IP literal (port 5060 when absent). Names need DNS,
/// which is the driver's job; those give `None`.
pub fn uri_socket_addr(uri: &str) -> Option<SocketAddr> {
    message::SipUri::parse(uri).ok()?.socket_addr()
}

/// The parsed `NameAddr` of a header value, for callers outside this module.
pub fn name_addr(value: &str) -> Option<NameAddr> {
    NameAddr::parse(value).ok()
}

#[cfg(test)]
#[path = "ua_tests.rs"]
mod tests;
