//! N SIP user agents (users `<prefix>0` .. `<prefix>N-1`) on one UDP socket: each answers an INVITE with
//! 100, 180 and 200 + SDP answer, streams RTP once the ACK has come, answers BYE, and hangs up (BYE) on
//! request. RFC 3261 UAS behaviour where it matters for a benchmark: 2xx retransmission until the ACK (Timer
//! G/H), BYE retransmission until its answer (Timer E/F), retransmitted requests answered again, one call per
//! user at a time (486 otherwise).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::media::{Audio, Video};
use crate::rtp::{bind_rtp_socket, Pacers, Source, StreamCounters, StreamSpec};
use crate::sdp;
use crate::sip::{self, Message, StartLine};

pub struct UasConfig {
    pub advertised: IpAddr,
    pub users: u32,
    pub prefix: String,
    pub want_video: bool,
    pub audio: Audio,
    pub video: Option<Video>,
    /// RTP port range for the callees' streams (even ports; RTCP on the next).
    pub rtp_ports: (u16, u16),
    /// Each call hangs up (BYE) this long after its ACK.
    pub hangup_after: Option<Duration>,
    /// Between 180 and 200.
    pub ring: Duration,
    pub t1: Duration,
    pub verbose: bool,
}

/// Requests to the user agents from outside (signals, the CLI).
#[derive(Debug)]
pub enum Control {
    /// Hang up every established call (BYE).
    HangupAll,
}

#[derive(Default)]
pub struct UasStats {
    pub invites: AtomicU64,
    pub answered: AtomicU64,
    pub established: AtomicU64,
    pub active: AtomicU64,
    pub ended: AtomicU64,
    pub byes_received: AtomicU64,
    pub byes_sent: AtomicU64,
    pub bye_ok: AtomicU64,
    pub bye_failed: AtomicU64,
    pub cancels: AtomicU64,
    pub ack_timeouts: AtomicU64,
    pub rejected: AtomicU64,
    pub parse_errors: AtomicU64,
    pub retransmissions: AtomicU64,
}

impl UasStats {
    pub fn to_json(&self) -> Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "invites": g(&self.invites),
            "answered": g(&self.answered),
            "established": g(&self.established),
            "active": g(&self.active),
            "ended": g(&self.ended),
            "byes_received": g(&self.byes_received),
            "byes_sent": g(&self.byes_sent),
            "bye_ok": g(&self.bye_ok),
            "bye_failed": g(&self.bye_failed),
            "cancels": g(&self.cancels),
            "ack_timeouts": g(&self.ack_timeouts),
            "rejected": g(&self.rejected),
            "parse_errors": g(&self.parse_errors),
            "retransmissions": g(&self.retransmissions),
        })
    }
}

/// What is known of a finished call, for the summary.
#[derive(Debug, Clone)]
pub struct CallReport {
    pub user: String,
    pub call_id: String,
    pub established: bool,
    pub ended_by: &'static str,
    pub rtp_packets: u64,
    pub rtp_bytes: u64,
    pub media_ms: u64,
}

impl CallReport {
    pub fn to_json(&self) -> Value {
        json!({
            "user": self.user, "call_id": self.call_id, "established": self.established,
            "ended_by": self.ended_by, "rtp_packets": self.rtp_packets, "rtp_bytes": self.rtp_bytes,
            "media_ms": self.media_ms,
        })
    }
}

enum State {
    /// 180 sent; 200 goes at `answer_at`.
    Ringing {
        answer_at: Instant,
    },
    /// 200 sent, waiting for the ACK.
    Answered {
        next: Instant,
        interval: Duration,
        give_up: Instant,
    },
    Confirmed {
        hangup_at: Option<Instant>,
    },
    ByeSent {
        request: Vec<u8>,
        destination: SocketAddr,
        next: Instant,
        interval: Duration,
        give_up: Instant,
    },
    /// Over; kept to answer retransmissions until `purge_at`.
    Ended {
        purge_at: Instant,
    },
}

struct Call {
    key: u64,
    user: String,
    call_id: String,
    source: SocketAddr,
    invite: Message,
    invite_cseq: u32,
    local_tag: String,
    /// The last final response to the INVITE, for retransmissions.
    final_response: Option<Vec<u8>>,
    answer_sdp: Vec<u8>,
    streams: Vec<StreamSpec>,
    counters: Arc<StreamCounters>,
    /// Ports to return when the call is over: (rtp port, sockets kept bound).
    ports: Vec<u16>,
    _sockets: Vec<Arc<std::net::UdpSocket>>,
    local_cseq: u32,
    state: State,
    established: bool,
    media_started: Option<Instant>,
    media_ms: u64,
}

pub struct Uas {
    config: UasConfig,
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    pacers: Pacers,
    stats: Arc<UasStats>,
    calls: HashMap<String, Call>,
    busy: HashMap<String, String>,
    free_ports: Vec<u16>,
    next_key: u64,
    reports: Vec<CallReport>,
    draining: bool,
    /// Makes tags and branches unique across runs (RFC 3261 8.1.1.7: branches unique in space and time).
    nonce: String,
}

impl Uas {
    pub fn new(
        config: UasConfig,
        socket: Arc<UdpSocket>,
        pacers: Pacers,
        stats: Arc<UasStats>,
    ) -> std::io::Result<Uas> {
        let local = socket.local_addr()?;
        let (lo, hi) = config.rtp_ports;
        let first = lo + lo % 2;
        // Port pairs handed out round-robin, so a port is not reused at once.
        let free_ports: Vec<u16> = (first..hi).step_by(2).rev().collect();
        Ok(Uas {
            config,
            socket,
            local,
            pacers,
            stats,
            calls: HashMap::new(),
            busy: HashMap::new(),
            free_ports,
            next_key: 1,
            reports: Vec::new(),
            draining: false,
            nonce: {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
            },
        })
    }

    pub fn reports(&self) -> &[CallReport] {
        &self.reports
    }

    /// Calls not yet over (ringing, answered, confirmed, or hanging up).
    pub fn live_calls(&self) -> usize {
        self.calls
            .values()
            .filter(|c| !matches!(c.state, State::Ended { .. }))
            .count()
    }

    /// Calls waiting for a BYE answer or an ACK (what a clean shutdown waits for).
    pub fn pending_transactions(&self) -> usize {
        self.calls
            .values()
            .filter(|c| matches!(c.state, State::ByeSent { .. } | State::Answered { .. }))
            .count()
    }

    async fn send(&self, bytes: &[u8], to: SocketAddr) {
        if let Err(e) = self.socket.send_to(bytes, to).await {
            if self.config.verbose {
                eprintln!("loadgen: SIP send to {to} failed: {e}");
            }
        }
    }

    pub async fn on_datagram(&mut self, data: &[u8], from: SocketAddr) {
        let message = match sip::parse(data) {
            Ok(m) if m.has_dialog_headers() => m,
            _ => {
                self.stats.parse_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        match message.start.clone() {
            StartLine::Request { method, uri } => {
                self.on_request(&method, &uri, message, from).await
            }
            StartLine::Response { code, .. } => self.on_response(code, &message),
        }
    }

    async fn reply(&self, request: &Message, code: u16, reason: &str, from: SocketAddr) {
        let bytes = sip::response(request, code, reason, None, &[], None);
        self.send(&bytes, from).await;
    }

    async fn on_request(&mut self, method: &str, uri: &str, request: Message, from: SocketAddr) {
        let call_id = request.header("Call-ID").unwrap_or("").to_owned();
        match method {
            "INVITE" => self.on_invite(uri, request, call_id, from).await,
            "ACK" => {
                let now = Instant::now();
                let Some(call) = self.calls.get_mut(&call_id) else {
                    return;
                };
                let acks_2xx = matches!(call.state, State::Answered { .. })
                    && request.cseq().map(|(n, _)| n) == Some(call.invite_cseq);
                if acks_2xx {
                    let hangup_at = self.config.hangup_after.map(|d| now + d);
                    call.state = State::Confirmed { hangup_at };
                    call.established = true;
                    call.media_started = Some(now);
                    self.stats.established.fetch_add(1, Ordering::Relaxed);
                    self.stats.active.fetch_add(1, Ordering::Relaxed);
                    self.pacers.add(call.key, std::mem::take(&mut call.streams));
                }
            }
            "BYE" => {
                let known = self.calls.contains_key(&call_id);
                if !known {
                    return self
                        .reply(&request, 481, "Call/Transaction Does Not Exist", from)
                        .await;
                }
                self.reply(&request, 200, "OK", from).await;
                let live = self
                    .calls
                    .get(&call_id)
                    .is_some_and(|c| !matches!(c.state, State::Ended { .. }));
                if live {
                    self.stats.byes_received.fetch_add(1, Ordering::Relaxed);
                    self.end_call(&call_id, "remote-bye");
                }
            }
            "CANCEL" => {
                let Some(call) = self.calls.get(&call_id) else {
                    return self
                        .reply(&request, 481, "Call/Transaction Does Not Exist", from)
                        .await;
                };
                self.reply(&request, 200, "OK", from).await;
                if matches!(call.state, State::Ringing { .. }) {
                    self.stats.cancels.fetch_add(1, Ordering::Relaxed);
                    let invite = call.invite.clone();
                    let tag = call.local_tag.clone();
                    let terminated =
                        sip::response(&invite, 487, "Request Terminated", Some(&tag), &[], None);
                    self.send(&terminated, from).await;
                    if let Some(call) = self.calls.get_mut(&call_id) {
                        call.final_response = Some(terminated);
                    }
                    self.end_call(&call_id, "cancel");
                }
            }
            "OPTIONS" | "INFO" | "NOTIFY" | "UPDATE" => {
                let allow = [(
                    "Allow",
                    "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO".to_owned(),
                )];
                let bytes = sip::response(&request, 200, "OK", None, &allow, None);
                self.send(&bytes, from).await;
            }
            _ => self.reply(&request, 501, "Not Implemented", from).await,
        }
    }

    async fn on_invite(&mut self, uri: &str, request: Message, call_id: String, from: SocketAddr) {
        let now = Instant::now();
        let cseq = request.cseq().map(|(n, _)| n).unwrap_or(0);
        if let Some(call) = self.calls.get(&call_id) {
            // A retransmission: the same answer again. (A re-INVITE gets our SDP again.)
            if cseq == call.invite_cseq {
                self.stats.retransmissions.fetch_add(1, Ordering::Relaxed);
                if let Some(response) = &call.final_response {
                    self.send(response, from).await;
                } else {
                    self.reply(&request, 100, "Trying", from).await;
                }
            } else if !matches!(call.state, State::Ended { .. }) {
                let contact = [("Contact", self.contact(&call.user))];
                let body = call.answer_sdp.clone();
                let ok = sip::response(
                    &request,
                    200,
                    "OK",
                    Some(&call.local_tag),
                    &contact,
                    Some(("application/sdp", &body)),
                );
                self.send(&ok, from).await;
            }
            return;
        }
        self.stats.invites.fetch_add(1, Ordering::Relaxed);
        let user = sip::uri_user(uri).unwrap_or("").to_owned();
        let known_user = user
            .strip_prefix(self.config.prefix.as_str())
            .and_then(|rest| rest.parse::<u32>().ok().filter(|n| n.to_string() == rest))
            .is_some_and(|n| n < self.config.users);
        let reject = if self.draining {
            Some((503, "Service Unavailable"))
        } else if !known_user {
            Some((404, "Not Found"))
        } else if self.busy.contains_key(&user) {
            Some((486, "Busy Here"))
        } else {
            None
        };
        if let Some((code, reason)) = reject {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return self.reply(&request, code, reason, from).await;
        }
        self.reply(&request, 100, "Trying", from).await;
        let negotiated = sdp::parse_offer(&request.body).and_then(|offer| {
            let chosen = offer.negotiate(self.config.want_video)?;
            Ok((offer, chosen))
        });
        let (offer, negotiated) = match negotiated {
            Ok(pair) => pair,
            Err(e) => {
                if self.config.verbose {
                    eprintln!("loadgen: {user}: unusable offer: {e:?}");
                }
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                return self.reply(&request, 488, "Not Acceptable Here", from).await;
            }
        };
        let video = negotiated.video.zip(self.config.video.clone());
        let Some(media) = self.bind_media(1 + usize::from(video.is_some())) else {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return self.reply(&request, 503, "Service Unavailable", from).await;
        };
        let key = self.next_key;
        self.next_key += 1;
        let counters = Arc::new(StreamCounters::default());
        let mut streams = vec![StreamSpec {
            socket: media[0].1.clone(),
            destination: negotiated.audio_dest,
            source: Source::Audio {
                payload_type: negotiated.audio_pt,
                audio: self.config.audio.clone(),
            },
            counters: counters.clone(),
        }];
        if let (Some(((pt, destination), video)), Some(v)) = (video, media.get(1)) {
            streams.push(StreamSpec {
                socket: v.1.clone(),
                destination,
                source: Source::Video {
                    payload_type: pt,
                    video,
                },
                counters: counters.clone(),
            });
        }
        let answer = sdp::answer(
            &offer,
            &negotiated,
            self.config.advertised,
            media[0].0,
            media.get(1).map(|m| m.0),
            key,
        );
        let local_tag = format!("lg{key}x{}", self.nonce);
        let ringing = sip::response(
            &request,
            180,
            "Ringing",
            Some(&local_tag),
            &[("Contact", self.contact(&user))],
            None,
        );
        self.send(&ringing, from).await;
        let mut sockets = Vec::new();
        for (_, rtp, rtcp) in &media {
            sockets.push(rtp.clone());
            sockets.push(rtcp.clone());
        }
        self.busy.insert(user.clone(), call_id.clone());
        self.calls.insert(
            call_id.clone(),
            Call {
                key,
                user,
                call_id: call_id.clone(),
                source: from,
                invite: request,
                invite_cseq: cseq,
                local_tag,
                final_response: None,
                answer_sdp: answer,
                streams,
                counters,
                ports: media.iter().map(|m| m.0).collect(),
                _sockets: sockets,
                local_cseq: 0,
                state: State::Ringing {
                    answer_at: now + self.config.ring,
                },
                established: false,
                media_started: None,
                media_ms: 0,
            },
        );
        if self.config.ring.is_zero() {
            self.answer(&call_id, now).await;
        }
    }

    fn contact(&self, user: &str) -> String {
        format!(
            "<sip:{user}@{}:{}>",
            self.config.advertised,
            self.local.port()
        )
    }

    /// Binds `count` RTP/RTCP pairs from the free list; None when the range is exhausted.
    #[allow(clippy::type_complexity)]
    fn bind_media(
        &mut self,
        count: usize,
    ) -> Option<Vec<(u16, Arc<std::net::UdpSocket>, Arc<std::net::UdpSocket>)>> {
        let mut bound = Vec::new();
        let mut tries = 0;
        while bound.len() < count && tries < 64 {
            tries += 1;
            let port = self.free_ports.pop()?;
            let ip = self.config.advertised;
            match (
                bind_rtp_socket(SocketAddr::new(ip, port)),
                bind_rtp_socket(SocketAddr::new(ip, port + 1)),
            ) {
                (Ok(rtp), Ok(rtcp)) => bound.push((port, Arc::new(rtp), Arc::new(rtcp))),
                // Taken by someone else: try it again much later.
                _ => self.free_ports.insert(0, port),
            }
        }
        if bound.len() < count {
            for (port, _, _) in bound {
                self.free_ports.insert(0, port);
            }
            return None;
        }
        Some(bound)
    }

    async fn answer(&mut self, call_id: &str, now: Instant) {
        let contact = self.call_contact(call_id);
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let ok = sip::response(
            &call.invite,
            200,
            "OK",
            Some(&call.local_tag),
            &[("Contact", contact)],
            Some(("application/sdp", &call.answer_sdp)),
        );
        call.final_response = Some(ok.clone());
        let t1 = self.config.t1;
        call.state = State::Answered {
            next: now + t1,
            interval: t1,
            give_up: now + t1 * 64,
        };
        let source = call.source;
        self.stats.answered.fetch_add(1, Ordering::Relaxed);
        self.send(&ok, source).await;
    }

    fn call_contact(&self, call_id: &str) -> String {
        self.calls
            .get(call_id)
            .map(|c| self.contact(&c.user))
            .unwrap_or_default()
    }

    fn on_response(&mut self, code: u16, response: &Message) {
        if code < 200 || response.cseq().map(|(_, m)| m) != Some("BYE") {
            return;
        }
        let call_id = response.header("Call-ID").unwrap_or("");
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        if matches!(call.state, State::ByeSent { .. }) {
            if (200..300).contains(&code) {
                self.stats.bye_ok.fetch_add(1, Ordering::Relaxed);
            } else {
                self.stats.bye_failed.fetch_add(1, Ordering::Relaxed);
            }
            let call_id = call_id.to_owned();
            self.end_call(&call_id, "local-bye");
        }
    }

    /// Stops the call's media, frees its user and ports, records it; keeps it to answer retransmissions.
    fn end_call(&mut self, call_id: &str, ended_by: &'static str) {
        let now = Instant::now();
        let purge_at = now + self.config.t1 * 64;
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if matches!(call.state, State::Ended { .. }) {
            return;
        }
        let was_media = call.media_started.is_some();
        if let Some(started) = call.media_started.take() {
            call.media_ms = now.saturating_duration_since(started).as_millis() as u64;
            self.pacers.remove(call.key);
            self.stats.active.fetch_sub(1, Ordering::Relaxed);
        }
        // Media may already have been stopped by a BYE we sent.
        let _ = was_media;
        call.state = State::Ended { purge_at };
        self.stats.ended.fetch_add(1, Ordering::Relaxed);
        self.busy.remove(&call.user);
        for port in call.ports.drain(..) {
            self.free_ports.insert(0, port);
        }
        call._sockets.clear();
        self.reports.push(CallReport {
            user: call.user.clone(),
            call_id: call.call_id.clone(),
            established: call.established,
            ended_by,
            rtp_packets: call.counters.packets.load(Ordering::Relaxed),
            rtp_bytes: call.counters.bytes.load(Ordering::Relaxed),
            media_ms: call.media_ms,
        });
    }

    /// Sends BYE on an established call (RFC 3261 15.1.1); media stops at once.
    async fn hangup(&mut self, call_id: &str, now: Instant) {
        let t1 = self.config.t1;
        let local = self.local;
        let advertised = self.config.advertised;
        let nonce = self.nonce.clone();
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if !matches!(call.state, State::Confirmed { .. }) {
            return;
        }
        call.local_cseq += 1;
        let invite = &call.invite;
        let remote_target = invite
            .header("Contact")
            .map(sip::header_uri)
            .unwrap_or("")
            .to_owned();
        let target = if remote_target.is_empty() {
            invite
                .header("From")
                .map(sip::header_uri)
                .unwrap_or("")
                .to_owned()
        } else {
            remote_target.clone()
        };
        // Route set of a UAS: the Record-Route values in order (12.1.1).
        let routes: Vec<String> = invite.all("Record-Route").map(str::to_owned).collect();
        let first_hop = routes
            .first()
            .map(|r| sip::header_uri(r).to_owned())
            .unwrap_or_else(|| target.clone());
        let destination = sip::uri_host_port(&first_hop)
            .and_then(|(h, p)| Some(SocketAddr::new(h.parse().ok()?, p)))
            .unwrap_or(call.source);
        let to = invite.header("From").unwrap_or("").to_owned();
        let from = match invite.header("To") {
            Some(to) if sip::header_param(to, "tag").is_some() => to.to_owned(),
            Some(to) => format!("{to};tag={}", call.local_tag),
            None => String::new(),
        };
        let mut request = format!(
            "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {advertised}:{};branch=z9hG4bKlg{nonce}x{}x{};rport\r\n\
             Max-Forwards: 70\r\n",
            local.port(),
            call.key,
            call.local_cseq
        );
        for route in &routes {
            request.push_str(&format!("Route: {route}\r\n"));
        }
        request.push_str(&format!(
            "From: {from}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {} BYE\r\nContent-Length: 0\r\n\r\n",
            call.call_id, call.local_cseq
        ));
        let request = request.into_bytes();
        if let Some(started) = call.media_started.take() {
            call.media_ms = now.saturating_duration_since(started).as_millis() as u64;
            self.pacers.remove(call.key);
            self.stats.active.fetch_sub(1, Ordering::Relaxed);
        }
        call.state = State::ByeSent {
            request: request.clone(),
            destination,
            next: now + t1,
            interval: t1,
            give_up: now + t1 * 64,
        };
        self.stats.byes_sent.fetch_add(1, Ordering::Relaxed);
        self.send(&request, destination).await;
    }

    /// Hangs up every established call.
    pub async fn hangup_all(&mut self) {
        let now = Instant::now();
        let ids: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| matches!(c.state, State::Confirmed { .. }))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.hangup(&id, now).await;
        }
    }

    /// Refuses new calls from now on (503) and hangs up the established ones.
    pub async fn drain(&mut self) {
        self.draining = true;
        self.hangup_all().await;
    }

    pub async fn on_control(&mut self, control: Control) {
        match control {
            Control::HangupAll => self.hangup_all().await,
        }
    }

    /// Timers: answers due, 2xx and BYE retransmissions, hang-ups due, purging.
    pub async fn on_tick(&mut self) {
        let now = Instant::now();
        let t2 = Duration::from_secs(4).max(self.config.t1);
        let mut answers = Vec::new();
        let mut hangups = Vec::new();
        let mut resend: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
        let mut no_ack = Vec::new();
        let mut bye_timeout = Vec::new();
        let mut purge = Vec::new();
        for (id, call) in &mut self.calls {
            match &mut call.state {
                State::Ringing { answer_at } if *answer_at <= now => answers.push(id.clone()),
                State::Answered {
                    next,
                    interval,
                    give_up,
                } => {
                    if *give_up <= now {
                        no_ack.push(id.clone());
                    } else if *next <= now {
                        *interval = (*interval * 2).min(t2);
                        *next = now + *interval;
                        if let Some(r) = &call.final_response {
                            resend.push((r.clone(), call.source));
                        }
                    }
                }
                State::Confirmed {
                    hangup_at: Some(at),
                } if *at <= now => hangups.push(id.clone()),
                State::ByeSent {
                    request,
                    destination,
                    next,
                    interval,
                    give_up,
                } => {
                    if *give_up <= now {
                        bye_timeout.push(id.clone());
                    } else if *next <= now {
                        *interval = (*interval * 2).min(t2);
                        *next = now + *interval;
                        resend.push((request.clone(), *destination));
                    }
                }
                State::Ended { purge_at } if *purge_at <= now => purge.push(id.clone()),
                _ => {}
            }
        }
        for id in answers {
            self.answer(&id, now).await;
        }
        for (bytes, to) in resend {
            self.stats.retransmissions.fetch_add(1, Ordering::Relaxed);
            self.send(&bytes, to).await;
        }
        for id in no_ack {
            self.stats.ack_timeouts.fetch_add(1, Ordering::Relaxed);
            // 13.3.1.4: no ACK -> the dialog is over; the BYE we would send is best effort.
            if let Some(call) = self.calls.get_mut(&id) {
                call.state = State::Confirmed { hangup_at: None };
            }
            self.hangup(&id, now).await;
        }
        for id in hangups {
            self.hangup(&id, now).await;
        }
        for id in bye_timeout {
            self.stats.bye_failed.fetch_add(1, Ordering::Relaxed);
            self.end_call(&id, "local-bye-timeout");
        }
        for id in purge {
            self.calls.remove(&id);
        }
    }
}

/// Runs the user agents until `stop` fires; then drains (BYE to established calls, bounded wait).
pub async fn run(
    mut uas: Uas,
    mut control: mpsc::UnboundedReceiver<Control>,
    stop: tokio::sync::watch::Receiver<bool>,
    exit_after_calls: Option<u64>,
) -> Uas {
    let socket = uas.socket.clone();
    let mut buf = vec![0u8; 65535];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut stop = stop;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        if let Some(n) = exit_after_calls {
            if uas.stats.ended.load(Ordering::Relaxed) >= n && drain_deadline.is_none() {
                uas.drain().await;
                drain_deadline = Some(Instant::now() + uas.config.t1 * 10);
            }
        }
        if let Some(deadline) = drain_deadline {
            if uas.pending_transactions() == 0 || Instant::now() >= deadline {
                return uas;
            }
        }
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                if let Ok((len, from)) = received {
                    let data = buf[..len].to_vec();
                    uas.on_datagram(&data, from).await;
                }
            }
            Some(c) = control.recv() => uas.on_control(c).await,
            changed = stop.changed(), if drain_deadline.is_none() => {
                if changed.is_err() || *stop.borrow() {
                    uas.drain().await;
                    drain_deadline = Some(Instant::now() + uas.config.t1 * 10);
                }
            }
            _ = tick.tick() => uas.on_tick().await,
        }
    }
}
