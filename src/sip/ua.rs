//! The sans-IO SIP user agent for the calls the gateway places (RFC 3261 UAC, with the few UAS answers a
//! UAC dialog needs: BYE, OPTIONS, INFO).
//!
//! Inputs: commands ([`UserAgent::start_call`], [`UserAgent::hangup`]), datagrams
//! ([`UserAgent::handle_datagram`]) and time ([`UserAgent::handle_timeout`]), each with `now`.
//! Outputs: datagrams ([`UserAgent::poll_transmit`]), events ([`UserAgent::poll_event`]) and the next
//! deadline ([`UserAgent::poll_timeout`]). The driver owns the socket and the clock.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::digest::{self, Challenge};
use super::message::{self, Incoming, RequestBuilder, StartLine};
use super::transaction::{ClientTransaction, Kind, ResponseAction, TimerAction, Timers};
use crate::secret::Password;

/// The gateway's handle for one call's SIP leg; chosen by the caller, unique among live legs.
pub type LegId = u64;

/// RFC 3261 8.1.1.7: branches start with the magic cookie.
const BRANCH_COOKIE: &str = "z9hG4bK";
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO";

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
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Password,
}

/// Everything needed to place one call.
#[derive(Debug, Clone)]
pub struct CallSpec {
    pub leg: LegId,
    /// Request-URI and To URI, e.g. `sip:bob@example.com:5060`.
    pub target_uri: String,
    /// From URI, e.g. `sip:gateway@example.com`.
    pub from_uri: String,
    /// User part of our Contact.
    pub contact_user: String,
    /// Next hop for the INVITE: the outbound proxy, or the target's host, resolved.
    pub destination: SocketAddr,
    /// True when `destination` is an outbound proxy, which then also carries in-dialog requests.
    pub via_outbound_proxy: bool,
    pub credentials: Option<Credentials>,
    pub sdp_offer: Vec<u8>,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub payload: Vec<u8>,
}

/// Why an established call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The peer sent BYE.
    RemoteBye,
    /// We sent BYE; `code` is the peer's answer, 408 when it never came (Timer F).
    LocalBye { code: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipEvent {
    /// A provisional response (100, 180, 183, ...).
    Progress { leg: LegId, code: u16 },
    /// A 2xx: the dialog is up and ACKed. `sdp` is the answer (empty when the peer sent none).
    Answered { leg: LegId, code: u16, sdp: Vec<u8> },
    /// The call never got established: a final non-2xx, Timer B, a CANCEL that took effect, or a 2xx that
    /// arrived after we gave up (ACKed and sent BYE).
    Rejected {
        leg: LegId,
        code: u16,
        reason: String,
    },
    /// The established call is over.
    Ended { leg: LegId, reason: EndReason },
}

impl SipEvent {
    pub fn leg(&self) -> LegId {
        match self {
            Self::Progress { leg, .. }
            | Self::Answered { leg, .. }
            | Self::Rejected { leg, .. }
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

#[derive(Debug, Clone)]
struct AuthEntry {
    /// `Authorization` for 401, `Proxy-Authorization` for 407.
    header: &'static str,
    challenge: Challenge,
    nc: u32,
    stale_retried: bool,
}

#[derive(Debug, Clone)]
struct Dialog {
    remote_tag: String,
    remote_target: String,
    /// Route set in the order requests carry it (RFC 3261 12.1.2: Record-Route reversed for a UAC).
    route_set: Vec<String>,
    /// To header value with the remote tag.
    to: String,
    /// The ACK for the 2xx, re-sent when the 2xx is retransmitted (13.2.2.4).
    ack: Vec<u8>,
    ack_destination: SocketAddr,
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
    auth: Vec<AuthEntry>,
    provisional_seen: bool,
    cancel_wanted: bool,
    cancel: Option<ClientTransaction>,
    /// TU deadline: CANCEL when ringing too long, or give up when a CANCEL got no final answer (9.1).
    give_up_at: Option<Instant>,
    dialog: Option<Dialog>,
    bye: Option<ClientTransaction>,
}

impl Leg {
    fn transactions(&self) -> impl Iterator<Item = &ClientTransaction> {
        std::iter::once(&self.invite)
            .chain(self.cancel.iter())
            .chain(self.bye.iter())
    }

    fn deadline(&self) -> Option<Instant> {
        self.transactions()
            .filter_map(|t| t.deadline())
            .chain(self.give_up_at)
            .min()
    }

    fn is_finished(&self) -> bool {
        self.phase == Phase::Done && self.transactions().all(|t| t.is_terminated())
    }
}

/// A response we sent to a request, kept to answer its retransmissions (Timer J, 17.2.2).
#[derive(Debug)]
struct SentResponse {
    payload: Vec<u8>,
    destination: SocketAddr,
    expires: Instant,
}

pub struct UserAgent {
    config: UaConfig,
    rng: rand::rngs::StdRng,
    legs: HashMap<LegId, Leg>,
    by_call_id: HashMap<String, LegId>,
    sent_responses: HashMap<(String, String), SentResponse>,
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
        Self {
            config,
            rng,
            legs: HashMap::new(),
            by_call_id: HashMap::new(),
            sent_responses: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Number of legs still held (including ones lingering after their end).
    pub fn leg_count(&self) -> usize {
        self.legs.len()
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
        legs.chain(cache).min()
    }

    fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| ALPHABET[self.rng.gen_range(0..ALPHABET.len())] as char)
            .collect()
    }

    fn via(&mut self) -> (String, String) {
        let branch = format!("{BRANCH_COOKIE}{}", self.token(16));
        let via = format!(
            "SIP/2.0/UDP {}:{};branch={branch};rport",
            self.config.advertised_host, self.config.advertised_port
        );
        (via, branch)
    }

    fn contact(&self, user: &str) -> String {
        format!(
            "<sip:{user}@{}:{}>",
            self.config.advertised_host, self.config.advertised_port
        )
    }

    /// Sends the INVITE for a new call (RFC 3261 13.2.1).
    pub fn start_call(&mut self, now: Instant, spec: CallSpec) -> Result<(), UaError> {
        if self.legs.contains_key(&spec.leg) {
            return Err(UaError::DuplicateLeg(spec.leg));
        }
        for uri in [&spec.target_uri, &spec.from_uri] {
            if !is_sip_uri(uri) {
                return Err(UaError::BadUri(uri.clone()));
            }
        }
        let call_id = format!("{}@sipcast", self.token(20));
        let local_tag = self.token(10);
        let (via, branch) = self.via();
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
            auth: Vec::new(),
            provisional_seen: false,
            cancel_wanted: false,
            cancel: None,
            give_up_at: None,
            dialog: None,
            bye: None,
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
        );
        self.transmits.push_back(Transmit {
            destination: leg.spec.destination,
            payload: request,
        });
        self.by_call_id.insert(call_id, leg_id);
        self.legs.insert(leg_id, leg);
        Ok(())
    }

    fn invite_bytes(&mut self, leg: &mut Leg, via: &str) -> Result<Vec<u8>, UaError> {
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
            .header("Contact", self.contact(&leg.spec.contact_user))
            .header("Allow", ALLOW)
            .header("User-Agent", self.config.user_agent.clone());
        if let Some(credentials) = &leg.spec.credentials {
            for entry in &mut leg.auth {
                entry.nc += 1;
                let cnonce = {
                    const HEX: &[u8] = b"0123456789abcdef";
                    (0..16)
                        .map(|_| HEX[self.rng.gen_range(0..16)] as char)
                        .collect::<String>()
                };
                let input = digest::ResponseInput {
                    algorithm: entry.challenge.algorithm,
                    username: &credentials.username,
                    realm: &entry.challenge.realm,
                    password: credentials.password.expose(),
                    method: "INVITE",
                    uri: &leg.spec.target_uri,
                    nonce: &entry.challenge.nonce,
                    qop: entry.challenge.qop,
                    nc: entry.nc,
                    cnonce: &cnonce,
                    body: &leg.spec.sdp_offer,
                };
                builder = builder.header(
                    entry.header,
                    digest::authorization(&entry.challenge, &input),
                );
            }
        }
        builder
            .body("application/sdp", leg.spec.sdp_offer.clone())
            .build()
            .map_err(|_| UaError::BadUri(leg.spec.target_uri.clone()))
    }

    /// Ends the call: CANCEL before the answer (9.1), BYE after (15.1.1). Idempotent.
    pub fn hangup(&mut self, now: Instant, leg_id: LegId) {
        let Some(mut leg) = self.legs.remove(&leg_id) else {
            return;
        };
        match leg.phase {
            Phase::Inviting if !leg.cancel_wanted => {
                leg.cancel_wanted = true;
                // 9.1: a CANCEL may only follow a provisional response; without one, wait for it or for
                // Timer B. Either way, give up 64*T1 from now.
                leg.give_up_at = Some(now + self.config.timers.transaction_timeout());
                if leg.provisional_seen {
                    self.send_cancel(now, &mut leg);
                }
            }
            Phase::Established => self.send_bye(now, &mut leg),
            _ => {}
        }
        self.legs.insert(leg_id, leg);
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
        leg.cancel = Some(ClientTransaction::start(
            Kind::NonInvite,
            now,
            self.config.timers,
            branch,
            leg.spec.destination,
            request.clone(),
        ));
        self.transmits.push_back(Transmit {
            destination: leg.spec.destination,
            payload: request,
        });
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
    /// a fresh branch. Returns the bytes (or why they cannot be built) and the branch.
    fn in_dialog_request(
        &mut self,
        leg: &Leg,
        dialog: &Dialog,
        method: rsip::Method,
        cseq: u32,
    ) -> (Result<Vec<u8>, message::MessageError>, String) {
        let (via, branch) = self.via();
        let mut builder = RequestBuilder::new(method, dialog.remote_target.clone())
            .header("Via", via)
            .header("Max-Forwards", "70");
        for route in &dialog.route_set {
            builder = builder.header("Route", route.clone());
        }
        let built = builder
            .header(
                "From",
                format!("<{}>;tag={}", leg.spec.from_uri, leg.local_tag),
            )
            .header("To", dialog.to.clone())
            .header("Call-ID", leg.call_id.clone())
            .header("CSeq", format!("{cseq} {method}"))
            .header("User-Agent", self.config.user_agent.clone())
            .build();
        (built, branch)
    }

    fn send_bye(&mut self, now: Instant, leg: &mut Leg) {
        let Some(dialog) = leg.dialog.clone() else {
            return;
        };
        leg.cseq += 1;
        let (built, branch) = self.in_dialog_request(leg, &dialog, rsip::Method::Bye, leg.cseq);
        leg.phase = Phase::Ending;
        let destination = self.in_dialog_destination(leg, &dialog);
        match built {
            Ok(request) => {
                leg.bye = Some(ClientTransaction::start(
                    Kind::NonInvite,
                    now,
                    self.config.timers,
                    branch,
                    destination,
                    request.clone(),
                ));
                self.transmits.push_back(Transmit {
                    destination,
                    payload: request,
                });
            }
            Err(_) => {
                // The remote target is not a URI we can address: the dialog cannot be ended politely.
                leg.phase = Phase::Done;
                self.events.push_back(SipEvent::Ended {
                    leg: leg.spec.leg,
                    reason: EndReason::LocalBye { code: 400 },
                });
            }
        }
    }

    /// Feeds one received datagram. Malformed input is dropped (or answered 400 when it is a request we can
    /// answer); it never panics.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Ok(msg) = message::parse(data) else {
            return;
        };
        match &msg.start {
            StartLine::Response { code, .. } => self.on_response(now, *code, &msg),
            StartLine::Request { method, .. } => {
                let method = method.clone();
                self.on_request(now, from, &method, &msg)
            }
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
        match msg.cseq_method.as_str() {
            "INVITE"
                if branch == leg.invite.branch
                    && msg.cseq == leg.invite_cseq
                    && !leg.invite.is_terminated() =>
            {
                self.on_invite_response(now, code, msg, &mut leg)
            }
            "INVITE" if (200..300).contains(&code) => {
                // A retransmitted 2xx after the transaction ended: ACK it again (13.2.2.4).
                if let Some(dialog) = &leg.dialog {
                    self.transmits.push_back(Transmit {
                        destination: dialog.ack_destination,
                        payload: dialog.ack.clone(),
                    });
                }
            }
            "CANCEL" => {
                if let Some(cancel) = leg.cancel.as_mut().filter(|c| c.branch == branch) {
                    // Its final answer changes nothing: the INVITE's 487 (or 2xx) decides.
                    let _ = cancel.on_response(now, code, Vec::new);
                }
            }
            "BYE" => {
                if let Some(bye) = leg.bye.as_mut().filter(|b| b.branch == branch) {
                    if let ResponseAction::PassUp { .. } = bye.on_response(now, code, Vec::new) {
                        if code >= 200 && leg.phase == Phase::Ending {
                            leg.phase = Phase::Done;
                            self.events.push_back(SipEvent::Ended {
                                leg: leg_id,
                                reason: EndReason::LocalBye { code },
                            });
                        }
                    }
                }
            }
            _ => {}
        }
        self.keep_or_drop(leg);
    }

    fn on_invite_response(&mut self, now: Instant, code: u16, msg: &Incoming, leg: &mut Leg) {
        let to_echo = msg
            .echo
            .iter()
            .find(|(n, _)| *n == "To")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
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
            self.transmits.push_back(Transmit {
                destination: leg.invite.destination,
                payload,
            });
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
            401 | 407 if !leg.cancel_wanted && self.retry_with_credentials(now, code, msg, leg) => {
            }
            _ => {
                leg.phase = Phase::Done;
                leg.give_up_at = None;
                let reason = if leg.cancel_wanted {
                    "cancelled".to_owned()
                } else {
                    reason_phrase(msg)
                };
                self.events.push_back(SipEvent::Rejected {
                    leg: leg.spec.leg,
                    code,
                    reason,
                });
            }
        }
    }

    fn on_invite_success(&mut self, now: Instant, code: u16, msg: &Incoming, leg: &mut Leg) {
        leg.give_up_at = None;
        let to = msg
            .echo
            .iter()
            .find(|(n, _)| *n == "To")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let remote_target = msg
            .contact
            .clone()
            .unwrap_or_else(|| leg.spec.target_uri.clone());
        let route_set: Vec<String> = msg.record_route.iter().rev().cloned().collect();
        let mut dialog = Dialog {
            remote_tag: msg.to_tag.clone().unwrap_or_default(),
            remote_target,
            route_set,
            to,
            ack: Vec::new(),
            ack_destination: leg.spec.destination,
        };
        dialog.ack_destination = self.in_dialog_destination(leg, &dialog);
        // 13.2.2.4: the 2xx ACK is a request of its own, with the INVITE's CSeq number.
        let (built, _) = self.in_dialog_request(leg, &dialog, rsip::Method::Ack, leg.invite_cseq);
        match built {
            Ok(ack) => {
                dialog.ack = ack.clone();
                self.transmits.push_back(Transmit {
                    destination: dialog.ack_destination,
                    payload: ack,
                });
            }
            Err(_) => {
                // A Contact we cannot address: we cannot even ACK, so the call cannot go on.
                leg.phase = Phase::Done;
                self.events.push_back(SipEvent::Rejected {
                    leg: leg.spec.leg,
                    code,
                    reason: "unusable Contact in 2xx".into(),
                });
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

    /// RFC 3261 22.2: answer a 401/407 with credentials, once per realm (plus once more when the server says
    /// the nonce was stale), so a wrong password ends in the challenge's status instead of a loop.
    fn retry_with_credentials(
        &mut self,
        now: Instant,
        code: u16,
        msg: &Incoming,
        leg: &mut Leg,
    ) -> bool {
        if leg.spec.credentials.is_none() {
            return false;
        }
        let (header, values) = match code {
            401 => ("Authorization", &msg.www_authenticate),
            _ => ("Proxy-Authorization", &msg.proxy_authenticate),
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
            match leg
                .auth
                .iter_mut()
                .find(|e| e.header == header && e.challenge.realm == challenge.realm)
            {
                Some(entry) if challenge.stale && !entry.stale_retried => {
                    entry.challenge = challenge;
                    entry.nc = 0;
                    entry.stale_retried = true;
                }
                Some(_) => return false,
                None => leg.auth.push(AuthEntry {
                    header,
                    challenge,
                    nc: 0,
                    stale_retried: false,
                }),
            }
        }
        leg.invite_cseq = leg.cseq + 1;
        leg.cseq = leg.invite_cseq;
        let (via, branch) = self.via();
        let Ok(request) = self.invite_bytes(leg, &via) else {
            return false;
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
        );
        self.transmits.push_back(Transmit {
            destination: leg.spec.destination,
            payload: request,
        });
        true
    }

    fn on_request(&mut self, now: Instant, from: SocketAddr, method: &str, msg: &Incoming) {
        if method == "ACK" {
            return; // ACKs for our non-2xx answers need nothing; we never send 2xx to an INVITE.
        }
        let key = (msg.branch.clone().unwrap_or_default(), method.to_owned());
        if let Some(sent) = self.sent_responses.get(&key) {
            // A retransmitted request: answer as before (17.2.2).
            self.transmits.push_back(Transmit {
                destination: sent.destination,
                payload: sent.payload.clone(),
            });
            return;
        }
        let leg_id = self.by_call_id.get(&msg.call_id).copied().filter(|id| {
            self.legs.get(id).is_some_and(|leg| {
                msg.to_tag.as_deref() == Some(leg.local_tag.as_str())
                    && leg
                        .dialog
                        .as_ref()
                        .is_some_and(|d| msg.from_tag.as_deref() == Some(d.remote_tag.as_str()))
            })
        });
        let reply_tag = self.token(10);
        let (code, reason) = match (method, leg_id) {
            ("BYE", Some(leg_id)) => {
                if let Some(leg) = self.legs.get_mut(&leg_id) {
                    if matches!(leg.phase, Phase::Established | Phase::Ending) {
                        let was_ending = leg.phase == Phase::Ending;
                        leg.phase = Phase::Done;
                        if let Some(bye) = leg.bye.as_mut() {
                            bye.terminate();
                        }
                        let reason = if was_ending {
                            EndReason::LocalBye { code: 200 }
                        } else {
                            EndReason::RemoteBye
                        };
                        self.events.push_back(SipEvent::Ended {
                            leg: leg_id,
                            reason,
                        });
                    }
                }
                (200, "OK")
            }
            ("OPTIONS", _) => (200, "OK"),
            ("INFO", Some(_)) => (200, "OK"),
            // Re-INVITE handling (hold, session refresh) is not implemented yet: refusing it keeps the
            // dialog and the media as they are (RFC 3261 14.2).
            ("INVITE", Some(_)) => (488, "Not Acceptable Here"),
            ("INVITE", None) => (403, "Forbidden"),
            (_, None) => (481, "Call/Transaction Does Not Exist"),
            (_, Some(_)) => (405, "Method Not Allowed"),
        };
        let extra = [
            ("Allow", ALLOW.to_owned()),
            ("User-Agent", self.config.user_agent.clone()),
        ];
        let payload = message::response_to(msg, code, reason, Some(&reply_tag), &extra);
        self.sent_responses.insert(
            key,
            SentResponse {
                payload: payload.clone(),
                destination: from,
                expires: now + self.config.timers.transaction_timeout(),
            },
        );
        self.transmits.push_back(Transmit {
            destination: from,
            payload,
        });
        if let Some(leg_id) = leg_id {
            if let Some(leg) = self.legs.remove(&leg_id) {
                self.keep_or_drop(leg);
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
    }

    fn fire_leg_timers(&mut self, now: Instant, leg: &mut Leg) {
        let leg_id = leg.spec.leg;
        while let Some(action) = leg.invite.on_timeout(now) {
            match action {
                TimerAction::Retransmit(payload) => self.transmits.push_back(Transmit {
                    destination: leg.invite.destination,
                    payload,
                }),
                TimerAction::TimedOut if leg.phase == Phase::Inviting => {
                    leg.phase = Phase::Done;
                    leg.give_up_at = None;
                    let reason = if leg.cancel_wanted {
                        "cancelled"
                    } else {
                        "Timer B: no response to INVITE"
                    };
                    self.events.push_back(SipEvent::Rejected {
                        leg: leg_id,
                        code: 408,
                        reason: reason.into(),
                    });
                }
                TimerAction::TimedOut | TimerAction::Terminated => {}
            }
        }
        if let Some(cancel) = leg.cancel.as_mut() {
            while let Some(action) = cancel.on_timeout(now) {
                if let TimerAction::Retransmit(payload) = action {
                    self.transmits.push_back(Transmit {
                        destination: cancel.destination,
                        payload,
                    });
                }
            }
        }
        if let Some(bye) = leg.bye.as_mut() {
            while let Some(action) = bye.on_timeout(now) {
                match action {
                    TimerAction::Retransmit(payload) => self.transmits.push_back(Transmit {
                        destination: bye.destination,
                        payload,
                    }),
                    TimerAction::TimedOut if leg.phase == Phase::Ending => {
                        leg.phase = Phase::Done;
                        self.events.push_back(SipEvent::Ended {
                            leg: leg_id,
                            reason: EndReason::LocalBye { code: 408 },
                        });
                    }
                    TimerAction::TimedOut | TimerAction::Terminated => {}
                }
            }
        }
        if leg.give_up_at.is_some_and(|t| t <= now) {
            leg.give_up_at = None;
            if leg.phase == Phase::Inviting {
                if leg.cancel_wanted {
                    // 9.1: no final response 64*T1 after the CANCEL: consider the INVITE cancelled.
                    leg.phase = Phase::Done;
                    leg.invite.terminate();
                    self.events.push_back(SipEvent::Rejected {
                        leg: leg_id,
                        code: 487,
                        reason: "cancelled; no final response".into(),
                    });
                } else {
                    // Ringing for too long: CANCEL, reported as a 408 once the 487 arrives.
                    self.hangup_inner(now, leg);
                }
            }
        }
    }

    fn hangup_inner(&mut self, now: Instant, leg: &mut Leg) {
        leg.cancel_wanted = true;
        leg.give_up_at = Some(now + self.config.timers.transaction_timeout());
        if leg.provisional_seen {
            self.send_cancel(now, leg);
        }
    }

    fn keep_or_drop(&mut self, leg: Leg) {
        if leg.is_finished() {
            self.by_call_id.remove(&leg.call_id);
        } else {
            self.legs.insert(leg.spec.leg, leg);
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

fn algorithm_strength(algorithm: digest::Algorithm) -> u8 {
    use digest::Algorithm::*;
    match algorithm {
        Md5 | Md5Sess => 0,
        Sha256 | Sha256Sess => 1,
        Sha512_256 | Sha512_256Sess => 2,
    }
}

fn reason_phrase(msg: &Incoming) -> String {
    match &msg.start {
        StartLine::Response { reason, .. } => reason.clone(),
        StartLine::Request { .. } => String::new(),
    }
}

/// True for a `sip:` or `sips:` URI with a host, as rsip parses it.
pub fn is_sip_uri(uri: &str) -> bool {
    let lower = uri.to_ascii_lowercase();
    if !(lower.starts_with("sip:") || lower.starts_with("sips:"))
        || uri.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return false;
    }
    rsip::Uri::try_from(uri).is_ok_and(|u| !u.host_with_port.host.to_string().is_empty())
}

/// Host and port of a SIP URI (`[v6]` brackets removed from the host).
pub fn uri_host_port(uri: &str) -> Option<(String, Option<u16>)> {
    let parsed = rsip::Uri::try_from(uri).ok()?;
    let port = parsed.host_with_port.port.map(|p| *p.value());
    let host = parsed
        .host_with_port
        .host
        .to_string()
        .trim_matches(['[', ']'])
        .to_owned();
    (!host.is_empty()).then_some((host, port))
}

/// The socket address of a SIP URI whose host is an IP literal (port 5060 when absent). Names need DNS,
/// which is the driver's job; those give `None`.
pub fn uri_socket_addr(uri: &str) -> Option<SocketAddr> {
    let parsed = rsip::Uri::try_from(uri).ok()?;
    let port = parsed
        .host_with_port
        .port
        .map(|p| *p.value())
        .unwrap_or(5060);
    match parsed.host_with_port.host {
        rsip::Host::IpAddr(ip) => Some(SocketAddr::new(ip, port)),
        rsip::Host::Domain(domain) => domain
            .to_string()
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port)),
    }
}

#[cfg(test)]
#[path = "ua_tests.rs"]
mod tests;
