//! Calls as the application sees them: the registry of live and recently ended calls, their WCS statuses,
//! and the rules that turn SIP and media events into status changes. No I/O here.
//!
//! Every status change (status, sipStatus or rtmpStreamStatus) of every call is announced from one place:
//! [`Registry::admit`] and [`Registry::update`] compare before and after and hand a [`CallEvent`] to the
//! event sink (the notify room), under the registry's lock, so events leave in the order they happened.

pub mod command;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::media::MediaFigures;
use crate::secret::{Password, StreamKey};
use crate::sip::message::Transport;
use crate::sip::ua::{EndReason, LegId, SipEvent};

/// Call status, named as WCS names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStatus {
    Trying,
    Ring,
    SessionProgress,
    Established,
    /// Established, and the peer has put the call on hold (sendonly/inactive); the stream goes on.
    Hold,
    Busy,
    Failed,
    Finish,
}

impl CallStatus {
    pub fn wcs_name(self) -> &'static str {
        match self {
            Self::Trying => "TRYING",
            Self::Ring => "RING",
            Self::SessionProgress => "SESSION_PROGRESS",
            Self::Established => "ESTABLISHED",
            Self::Hold => "HOLD",
            Self::Busy => "BUSY",
            Self::Failed => "FAILED",
            Self::Finish => "FINISH",
        }
    }

    pub fn from_wcs_name(name: &str) -> Option<Self> {
        [
            Self::Trying,
            Self::Ring,
            Self::SessionProgress,
            Self::Established,
            Self::Hold,
            Self::Busy,
            Self::Failed,
            Self::Finish,
        ]
        .into_iter()
        .find(|s| s.wcs_name().eq_ignore_ascii_case(name))
    }

    /// True once the call is over and its rtmpUrl+rtmpStream and callId are free again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Busy | Self::Failed | Self::Finish)
    }
}

/// State of the call's RTMP output, named as WCS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtmpStatus {
    Wait,
    Active,
    ConnectionLost,
    ConnectionFailed,
}

impl RtmpStatus {
    pub fn wcs_name(self) -> &'static str {
        match self {
            Self::Wait => "RTMP_STREAM_WAIT",
            Self::Active => "RTMP_STREAM_ACTIVE",
            Self::ConnectionLost => "RTMP_CONNECTION_LOST",
            Self::ConnectionFailed => "RTMP_CONNECTION_FAILED",
        }
    }

    pub fn from_wcs_name(name: &str) -> Option<Self> {
        [
            Self::Wait,
            Self::Active,
            Self::ConnectionLost,
            Self::ConnectionFailed,
        ]
        .into_iter()
        .find(|s| s.wcs_name().eq_ignore_ascii_case(name))
    }
}

/// Who caused a failure; the API maps it to an HTTP status in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The REST client sent something wrong.
    Client,
    /// The SIP peer or the network toward it.
    RemoteSip,
    /// The RTMP server or the network toward it.
    RtmpDestination,
    /// The gateway itself (a bug, or a resource it ran out of).
    Gateway,
}

/// A validated call/startup request. Built by the API room from the client's JSON.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub call_id: String,
    /// The callee as the client gave it (a user name or a SIP URI).
    pub callee: String,
    /// The SIP URI the INVITE goes to.
    pub target_uri: String,
    /// The From URI.
    pub from_uri: String,
    /// User part of From and Contact (sipLogin, or the configured default).
    pub sip_login: String,
    /// Username for digest authentication (sipAuthenticationName, or sipLogin).
    pub auth_name: String,
    pub password: Option<Password>,
    /// Host the INVITE is sent to: the outbound proxy if given, else the target's host.
    pub next_hop_host: String,
    pub next_hop_port: u16,
    pub via_outbound_proxy: bool,
    /// UDP, or TCP when the callee or proxy URI says `transport=tcp`.
    pub transport: Transport,
    /// sipRegisterRequired: REGISTER at this registrar URI (`sip:domain[:port]`) before the INVITE.
    pub registrar_uri: Option<String>,
    pub rtmp_url: String,
    pub rtmp_stream: StreamKey,
    pub has_audio: bool,
    pub has_video: bool,
    pub app_key: Option<String>,
    pub to_stream: Option<String>,
    /// Also record the call to a file (config recording.dir).
    pub record: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    #[error("a call with callId {0:?} is already live")]
    DuplicateCallId(String),
    #[error("a live call already publishes to this rtmpUrl and rtmpStream")]
    DuplicateStream,
    #[error("the gateway is at its limit of {0} calls")]
    AtCapacity(usize),
    #[error("the gateway is shutting down")]
    Draining,
}

impl AdmitError {
    pub fn fault(&self) -> Fault {
        match self {
            Self::DuplicateCallId(_) | Self::DuplicateStream => Fault::Client,
            Self::AtCapacity(_) | Self::Draining => Fault::Gateway,
        }
    }
}

/// One call's record.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub leg: LegId,
    pub request: StartRequest,
    pub status: CallStatus,
    pub sip_status: Option<u16>,
    pub rtmp_status: RtmpStatus,
    /// Why the call failed or ended, safe to show (secrets scrubbed).
    pub reason: Option<String>,
    pub hangup_requested: bool,
    /// The media figures, refreshed while media runs and kept after it ends.
    pub media: Option<MediaFigures>,
    pub created_at: Instant,
    pub established_at: Option<Instant>,
    pub ended_at: Option<Instant>,
}

impl CallRecord {
    /// What a status event reports a change of.
    fn watched(&self) -> (CallStatus, Option<u16>, RtmpStatus) {
        (self.status, self.sip_status, self.rtmp_status)
    }

    fn new(leg: LegId, request: StartRequest, now: Instant) -> Self {
        Self {
            leg,
            request,
            status: CallStatus::Trying,
            sip_status: None,
            rtmp_status: RtmpStatus::Wait,
            reason: None,
            hangup_requested: false,
            media: None,
            created_at: now,
            established_at: None,
            ended_at: None,
        }
    }

    fn finish(
        &mut self,
        status: CallStatus,
        sip_status: Option<u16>,
        reason: Option<String>,
        now: Instant,
    ) {
        if self.status.is_final() {
            return;
        }
        self.status = status;
        if sip_status.is_some() {
            self.sip_status = sip_status;
        }
        if reason.is_some() {
            self.reason = reason;
        }
        self.ended_at = Some(now);
    }

    /// Applies a SIP event; returns what the driver must do next.
    pub fn on_sip_event(&mut self, event: &SipEvent, now: Instant) -> SipFollowUp {
        match event {
            SipEvent::Progress { code, .. } => {
                if !self.status.is_final() {
                    self.sip_status = Some(*code);
                    self.status = match code {
                        180 => CallStatus::Ring,
                        183 => CallStatus::SessionProgress,
                        _ => self.status,
                    };
                }
                SipFollowUp::None
            }
            SipEvent::Answered { code, sdp, .. } => {
                self.sip_status = Some(*code);
                if self.status.is_final() || self.hangup_requested {
                    return SipFollowUp::Hangup;
                }
                self.status = CallStatus::Established;
                self.established_at = Some(now);
                SipFollowUp::StartMedia(sdp.clone())
            }
            SipEvent::Rejected { code, reason, .. } => {
                let status = if self.hangup_requested {
                    CallStatus::Finish
                } else if matches!(code, 486 | 600 | 603) {
                    CallStatus::Busy
                } else {
                    CallStatus::Failed
                };
                self.finish(status, Some(*code), Some(reason.clone()), now);
                SipFollowUp::Released
            }
            SipEvent::MediaUpdated { hold, .. } => {
                if matches!(self.status, CallStatus::Established | CallStatus::Hold) {
                    self.status = if *hold {
                        CallStatus::Hold
                    } else {
                        CallStatus::Established
                    };
                }
                SipFollowUp::None
            }
            SipEvent::Refreshed { .. } | SipEvent::Registered { .. } => SipFollowUp::None,
            SipEvent::Ended { reason, .. } => {
                let (code, text) = match reason {
                    EndReason::RemoteBye => (None, "BYE from the remote side".to_owned()),
                    EndReason::LocalBye { code } => {
                        (Some(*code), "hung up by the gateway".to_owned())
                    }
                    EndReason::Terminated { code, why } => (Some(*code), why.clone()),
                };
                let text = self.reason.clone().unwrap_or(text);
                self.finish(CallStatus::Finish, code, Some(text), now);
                SipFollowUp::StopMedia
            }
        }
    }
}

/// What the driver does after a SIP event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipFollowUp {
    None,
    /// Build the media plan from this SDP answer and start the pipeline.
    StartMedia(Vec<u8>),
    /// The call is over on the SIP side; stop its media (EOS).
    StopMedia,
    /// The call never had media; release what was reserved for it.
    Released,
    /// Answered although the call is already over: hang up.
    Hangup,
}

/// What `find` and `find_all` show of a call. Secrets already redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSnapshot {
    pub leg: LegId,
    pub call_id: String,
    pub status: CallStatus,
    pub sip_status: Option<u16>,
    pub rtmp_url: String,
    pub rtmp_stream_redacted: String,
    pub rtmp_status: RtmpStatus,
    pub caller: String,
    pub callee: String,
    pub has_audio: bool,
    pub has_video: bool,
    pub app_key: Option<String>,
    pub to_stream: Option<String>,
    pub reason: Option<String>,
    pub media: Option<MediaFigures>,
}

/// A `call/find` filter: every given field must match.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    pub call_id: Option<String>,
    pub status: Option<CallStatus>,
    pub sip_status: Option<u16>,
    pub rtmp_status: Option<RtmpStatus>,
    pub caller: Option<String>,
    pub callee: Option<String>,
    pub rtmp_url: Option<String>,
    pub app_key: Option<String>,
    pub to_stream: Option<String>,
}

impl CallFilter {
    fn matches(&self, c: &CallRecord) -> bool {
        let r = &c.request;
        self.call_id.as_ref().is_none_or(|v| *v == r.call_id)
            && self.status.is_none_or(|v| v == c.status)
            && self.sip_status.is_none_or(|v| Some(v) == c.sip_status)
            && self.rtmp_status.is_none_or(|v| v == c.rtmp_status)
            && self.caller.as_ref().is_none_or(|v| *v == r.sip_login)
            && self.callee.as_ref().is_none_or(|v| *v == r.callee)
            && self.rtmp_url.as_ref().is_none_or(|v| *v == r.rtmp_url)
            && self
                .app_key
                .as_ref()
                .is_none_or(|v| Some(v) == r.app_key.as_ref())
            && self
                .to_stream
                .as_ref()
                .is_none_or(|v| Some(v) == r.to_stream.as_ref())
    }
}

/// One status change of one call: the call as it is right after the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    /// Increases by one per event, across all calls.
    pub sequence: u64,
    pub call: CallSnapshot,
}

/// Where status changes go. Called under the registry's lock: it must not block (the notify room's
/// sink only tries to enqueue, and counts what it cannot).
pub type EventSink = Box<dyn Fn(CallEvent) + Send + Sync>;

#[derive(Default)]
struct Inner {
    calls: HashMap<LegId, CallRecord>,
    next_leg: LegId,
    next_event: u64,
    draining: bool,
}

impl Inner {
    fn announce(&mut self, sink: Option<&EventSink>, leg: LegId) {
        let (Some(sink), Some(call)) = (sink, self.calls.get(&leg)) else {
            return;
        };
        self.next_event += 1;
        sink(CallEvent {
            sequence: self.next_event,
            call: snapshot(call),
        });
    }
}

/// All calls, shared by the API (admission, find) and the driver (status changes).
pub struct Registry {
    max_calls: usize,
    keep_finished: Duration,
    inner: Mutex<Inner>,
    events: Option<EventSink>,
}

impl Registry {
    pub fn new(max_calls: usize, keep_finished: Duration) -> Self {
        Self {
            max_calls,
            keep_finished,
            inner: Mutex::new(Inner::default()),
            events: None,
        }
    }

    /// A registry that announces every status change to `sink`.
    pub fn with_events(max_calls: usize, keep_finished: Duration, sink: EventSink) -> Self {
        Self {
            events: Some(sink),
            ..Self::new(max_calls, keep_finished)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data, never a half-applied invariant worth dying for.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a call if its callId and rtmpUrl+rtmpStream are free among live calls and there is room.
    /// A finished call with the same callId is replaced.
    pub fn admit(&self, request: StartRequest, now: Instant) -> Result<LegId, AdmitError> {
        let mut inner = self.lock();
        if inner.draining {
            return Err(AdmitError::Draining);
        }
        let live: Vec<&CallRecord> = inner
            .calls
            .values()
            .filter(|c| !c.status.is_final())
            .collect();
        if live.iter().any(|c| c.request.call_id == request.call_id) {
            return Err(AdmitError::DuplicateCallId(request.call_id));
        }
        if live.iter().any(|c| {
            c.request.rtmp_url == request.rtmp_url && c.request.rtmp_stream == request.rtmp_stream
        }) {
            return Err(AdmitError::DuplicateStream);
        }
        if live.len() >= self.max_calls {
            return Err(AdmitError::AtCapacity(self.max_calls));
        }
        inner
            .calls
            .retain(|_, c| c.request.call_id != request.call_id);
        inner.next_leg += 1;
        let leg = inner.next_leg;
        inner.calls.insert(leg, CallRecord::new(leg, request, now));
        inner.announce(self.events.as_ref(), leg);
        Ok(leg)
    }

    /// The live call with this callId.
    pub fn live_leg(&self, call_id: &str) -> Option<LegId> {
        self.lock()
            .calls
            .values()
            .find(|c| c.request.call_id == call_id && !c.status.is_final())
            .map(|c| c.leg)
    }

    /// The live call whose callId or toStream is `name` (push/startup's `streamName`).
    pub fn live_leg_by_stream_name(&self, name: &str) -> Option<LegId> {
        let inner = self.lock();
        let live = || inner.calls.values().filter(|c| !c.status.is_final());
        live()
            .find(|c| c.request.call_id == name)
            .or_else(|| live().find(|c| c.request.to_stream.as_deref() == Some(name)))
            .map(|c| c.leg)
    }

    /// Runs `f` on a call's record; a change of status, sipStatus or rtmpStreamStatus is announced.
    pub fn update<R>(&self, leg: LegId, f: impl FnOnce(&mut CallRecord) -> R) -> Option<R> {
        let mut inner = self.lock();
        let record = inner.calls.get_mut(&leg)?;
        let before = record.watched();
        let result = f(record);
        if record.watched() != before {
            inner.announce(self.events.as_ref(), leg);
        }
        Some(result)
    }

    pub fn get(&self, leg: LegId) -> Option<CallRecord> {
        self.lock().calls.get(&leg).cloned()
    }

    pub fn find(&self, filter: &CallFilter) -> Vec<CallSnapshot> {
        let inner = self.lock();
        let mut found: Vec<&CallRecord> =
            inner.calls.values().filter(|c| filter.matches(c)).collect();
        found.sort_by_key(|c| c.leg);
        found.into_iter().map(snapshot).collect()
    }

    /// Every call not yet final.
    pub fn live_legs(&self) -> Vec<LegId> {
        self.lock()
            .calls
            .values()
            .filter(|c| !c.status.is_final())
            .map(|c| c.leg)
            .collect()
    }

    /// Number of calls not yet final.
    pub fn live_count(&self) -> usize {
        self.lock()
            .calls
            .values()
            .filter(|c| !c.status.is_final())
            .count()
    }

    /// Refuses new calls from now on (shutdown).
    pub fn start_draining(&self) {
        self.lock().draining = true;
    }

    /// Forgets calls that ended longer ago than the retention time.
    pub fn purge(&self, now: Instant) {
        let keep = self.keep_finished;
        self.lock().calls.retain(|_, c| {
            c.ended_at
                .is_none_or(|t| now.saturating_duration_since(t) < keep)
        });
    }
}

fn snapshot(c: &CallRecord) -> CallSnapshot {
    CallSnapshot {
        leg: c.leg,
        call_id: c.request.call_id.clone(),
        status: c.status,
        sip_status: c.sip_status,
        rtmp_url: c.request.rtmp_url.clone(),
        rtmp_stream_redacted: c.request.rtmp_stream.redacted(),
        rtmp_status: c.rtmp_status,
        caller: c.request.sip_login.clone(),
        callee: c.request.callee.clone(),
        has_audio: c.request.has_audio,
        has_video: c.request.has_video,
        app_key: c.request.app_key.clone(),
        to_stream: c.request.to_stream.clone(),
        reason: c.reason.as_ref().map(|r| c.request.rtmp_stream.scrub(r)),
        media: c.media.clone(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn request(call_id: &str, stream: &str) -> StartRequest {
        StartRequest {
            call_id: call_id.into(),
            callee: "bob".into(),
            target_uri: "sip:bob@127.0.0.1".into(),
            from_uri: "sip:gw@127.0.0.1".into(),
            sip_login: "gw".into(),
            auth_name: "gw".into(),
            password: None,
            next_hop_host: "127.0.0.1".into(),
            next_hop_port: 5060,
            via_outbound_proxy: false,
            transport: Transport::Udp,
            registrar_uri: None,
            rtmp_url: "rtmp://127.0.0.1/live".into(),
            rtmp_stream: StreamKey::new(stream),
            has_audio: true,
            has_video: false,
            app_key: None,
            to_stream: None,
            record: false,
        }
    }

    #[test]
    fn duplicates_among_live_calls_are_refused_and_freed_when_final() {
        let reg = Registry::new(10, Duration::from_secs(30));
        let now = Instant::now();
        let a = reg.admit(request("a", "key-a"), now).unwrap();
        assert_eq!(
            reg.admit(request("a", "key-b"), now),
            Err(AdmitError::DuplicateCallId("a".into()))
        );
        assert_eq!(
            reg.admit(request("b", "key-a"), now),
            Err(AdmitError::DuplicateStream)
        );
        reg.update(a, |c| {
            c.on_sip_event(
                &SipEvent::Rejected {
                    leg: a,
                    code: 486,
                    reason: "Busy".into(),
                },
                now,
            )
        });
        assert_eq!(reg.get(a).unwrap().status, CallStatus::Busy);
        let again = reg.admit(request("a", "key-a"), now).unwrap();
        assert_ne!(again, a);
        assert_eq!(
            reg.find(&CallFilter {
                call_id: Some("a".into()),
                ..Default::default()
            })
            .len(),
            1,
            "the old record is replaced"
        );
    }

    #[test]
    fn capacity_and_draining_refuse() {
        let reg = Registry::new(1, Duration::from_secs(30));
        let now = Instant::now();
        reg.admit(request("a", "key-a"), now).unwrap();
        assert_eq!(
            reg.admit(request("b", "key-b"), now),
            Err(AdmitError::AtCapacity(1))
        );
        reg.start_draining();
        assert_eq!(
            reg.admit(request("c", "key-c"), now),
            Err(AdmitError::Draining)
        );
    }

    #[test]
    fn sip_events_map_to_wcs_statuses() {
        let now = Instant::now();
        let mut c = CallRecord::new(1, request("a", "k"), now);
        assert_eq!(c.status, CallStatus::Trying);
        c.on_sip_event(&SipEvent::Progress { leg: 1, code: 180 }, now);
        assert_eq!((c.status, c.sip_status), (CallStatus::Ring, Some(180)));
        c.on_sip_event(&SipEvent::Progress { leg: 1, code: 183 }, now);
        assert_eq!(c.status, CallStatus::SessionProgress);
        let follow = c.on_sip_event(
            &SipEvent::Answered {
                leg: 1,
                code: 200,
                sdp: b"v=0".to_vec(),
            },
            now,
        );
        assert_eq!(follow, SipFollowUp::StartMedia(b"v=0".to_vec()));
        assert_eq!(c.status, CallStatus::Established);
        let hold = |on| SipEvent::MediaUpdated {
            leg: 1,
            hold: on,
            sdp: Vec::new(),
        };
        assert_eq!(c.on_sip_event(&hold(true), now), SipFollowUp::None);
        assert_eq!((c.status, c.status.wcs_name()), (CallStatus::Hold, "HOLD"));
        assert!(!c.status.is_final(), "a held call is live");
        c.on_sip_event(&hold(false), now);
        assert_eq!(c.status, CallStatus::Established);
        c.on_sip_event(&hold(true), now);
        let follow = c.on_sip_event(
            &SipEvent::Ended {
                leg: 1,
                reason: EndReason::RemoteBye,
            },
            now,
        );
        assert_eq!(follow, SipFollowUp::StopMedia);
        assert_eq!(c.status, CallStatus::Finish);
        assert!(c.ended_at.is_some());
    }

    #[test]
    fn rejections_map_to_busy_failed_or_finish_when_asked() {
        let now = Instant::now();
        for (code, hangup, expected) in [
            (486, false, CallStatus::Busy),
            (603, false, CallStatus::Busy),
            (407, false, CallStatus::Failed),
            (408, false, CallStatus::Failed),
            (487, true, CallStatus::Finish),
        ] {
            let mut c = CallRecord::new(1, request("a", "k"), now);
            c.hangup_requested = hangup;
            c.on_sip_event(
                &SipEvent::Rejected {
                    leg: 1,
                    code,
                    reason: "r".into(),
                },
                now,
            );
            assert_eq!((c.status, c.sip_status), (expected, Some(code)), "{code}");
        }
    }

    #[test]
    fn snapshots_never_hold_the_stream_key() {
        let reg = Registry::new(10, Duration::from_secs(30));
        let now = Instant::now();
        let leg = reg.admit(request("a", "supersecretkey"), now).unwrap();
        reg.update(leg, |c| {
            c.reason = Some("rtmp://x/live/supersecretkey refused".into())
        });
        let snap = &reg.find(&CallFilter::default())[0];
        let text = format!("{snap:?}");
        assert!(!text.contains("supersecretkey"), "{text}");
        assert_eq!(snap.rtmp_stream_redacted, "supe...");
    }

    #[test]
    fn every_status_change_is_announced_once_and_in_order() {
        use std::sync::Arc;
        let seen: Arc<Mutex<Vec<CallEvent>>> = Arc::default();
        let sink_seen = seen.clone();
        let reg = Registry::with_events(
            10,
            Duration::from_secs(30),
            Box::new(move |e| sink_seen.lock().unwrap().push(e)),
        );
        let now = Instant::now();
        let leg = reg.admit(request("a", "secret-key-x"), now).unwrap();
        reg.update(leg, |c| c.hangup_requested = false); // no change, no event
        reg.update(leg, |c| {
            c.on_sip_event(&SipEvent::Progress { leg, code: 180 }, now)
        });
        reg.update(leg, |c| {
            c.on_sip_event(
                &SipEvent::Answered {
                    leg,
                    code: 200,
                    sdp: Vec::new(),
                },
                now,
            )
        });
        reg.update(leg, |c| c.rtmp_status = RtmpStatus::Active);
        reg.update(leg, |c| c.reason = Some("only the reason".into())); // not a status
        reg.update(leg, |c| {
            c.on_sip_event(
                &SipEvent::Ended {
                    leg,
                    reason: EndReason::RemoteBye,
                },
                now,
            )
        });
        let seen = seen.lock().unwrap();
        let got: Vec<(u64, &str, Option<u16>, &str)> = seen
            .iter()
            .map(|e| {
                (
                    e.sequence,
                    e.call.status.wcs_name(),
                    e.call.sip_status,
                    e.call.rtmp_status.wcs_name(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "TRYING", None, "RTMP_STREAM_WAIT"),
                (2, "RING", Some(180), "RTMP_STREAM_WAIT"),
                (3, "ESTABLISHED", Some(200), "RTMP_STREAM_WAIT"),
                (4, "ESTABLISHED", Some(200), "RTMP_STREAM_ACTIVE"),
                (5, "FINISH", Some(200), "RTMP_STREAM_ACTIVE"),
            ]
        );
        assert!(!format!("{seen:?}").contains("secret-key-x"));
    }

    #[test]
    fn find_filters_on_every_field() {
        let reg = Registry::new(10, Duration::from_secs(30));
        let now = Instant::now();
        let mut r = request("a", "ka");
        r.app_key = Some("app".into());
        r.to_stream = Some("out".into());
        let a = reg.admit(r, now).unwrap();
        reg.admit(request("b", "kb"), now).unwrap();
        reg.update(a, |c| c.rtmp_status = RtmpStatus::Active);
        let count = |f: CallFilter| reg.find(&f).len();
        assert_eq!(count(CallFilter::default()), 2);
        assert_eq!(
            count(CallFilter {
                rtmp_status: Some(RtmpStatus::Active),
                ..Default::default()
            }),
            1
        );
        assert_eq!(
            count(CallFilter {
                to_stream: Some("out".into()),
                app_key: Some("app".into()),
                caller: Some("gw".into()),
                ..Default::default()
            }),
            1
        );
        assert_eq!(
            count(CallFilter {
                sip_status: Some(200),
                ..Default::default()
            }),
            0
        );
        assert_eq!(reg.live_leg_by_stream_name("out"), Some(a));
        assert_eq!(reg.live_leg_by_stream_name("a"), Some(a));
        assert_eq!(reg.live_leg_by_stream_name("zzz"), None);
    }

    #[test]
    fn purge_forgets_only_old_finished_calls() {
        let reg = Registry::new(10, Duration::from_secs(30));
        let now = Instant::now();
        let a = reg.admit(request("a", "ka"), now).unwrap();
        reg.admit(request("b", "kb"), now).unwrap();
        reg.update(a, |c| {
            c.on_sip_event(
                &SipEvent::Rejected {
                    leg: a,
                    code: 500,
                    reason: "x".into(),
                },
                now,
            )
        });
        reg.purge(now + Duration::from_secs(29));
        assert_eq!(reg.find(&CallFilter::default()).len(), 2);
        reg.purge(now + Duration::from_secs(31));
        assert_eq!(reg.find(&CallFilter::default()).len(), 1);
    }
}
