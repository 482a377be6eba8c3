//! The one thin tokio task that owns the SIP socket and the clock, and drives the sans-IO cores: the SIP
//! user agent, the call registry's state rules, and the per-call media pipelines.
//!
//! Everything that can block (DNS, stopping a pipeline) happens off this task and comes back as a message.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::call::command::{CommandError, Dtmf, PushFilter, PushSnapshot, PushTarget, Reply};
use crate::call::{CallStatus, Registry, RtmpStatus, SipFollowUp};
use crate::config::Config;
use crate::media::pipeline::{Destination, Setup};
use crate::media::{CallPipeline, MediaEvent, MediaEventKind, PortAllocator, Templates, Values};
use crate::sdp::{self, Direction, Offer};
use crate::sip::transaction::Timers;
use crate::sip::ua::{CallSpec, Credentials, LegId, SipEvent, UaConfig, UserAgent};

/// Commands from the API to the driver.
#[derive(Debug)]
pub enum Command {
    /// Place the admitted call.
    Start(LegId),
    /// Hang up (CANCEL or BYE) and end the stream cleanly.
    Terminate(LegId),
    /// Hang up every call, wait for their streams to end (bounded), then answer.
    Shutdown(oneshot::Sender<()>),
    /// Send DTMF digits on an established call.
    SendDtmf {
        leg: LegId,
        dtmf: Dtmf,
        reply: Reply<()>,
    },
    /// Add another RTMP target to a live call; answers with its mediaSessionId.
    PushStart {
        leg: LegId,
        target: PushTarget,
        reply: Reply<PushSnapshot>,
    },
    /// List push targets.
    PushFind {
        filter: PushFilter,
        reply: Reply<Vec<PushSnapshot>>,
    },
    /// Remove a push target; the call and its other targets go on.
    PushStop {
        media_session_id: String,
        reply: Reply<()>,
    },
    /// Mute (silence) or unmute one push target.
    PushMute {
        media_session_id: String,
        muted: bool,
        reply: Reply<()>,
    },
}

/// Capacity of the API -> driver queue; a full queue answers 503 instead of blocking a request.
pub const COMMAND_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot bind the SIP socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Results of work done off the driver task.
enum Internal {
    Resolved(LegId, Result<SocketAddr, String>),
}

/// Media state of one call.
struct MediaSlot {
    rtp_port: u16,
    pipeline: Option<CallPipeline>,
    /// Set once the pipeline has been asked to stop; the port returns on `Stopped`.
    stopping: bool,
}

pub struct Driver {
    config: Arc<Config>,
    registry: Arc<Registry>,
    ua: UserAgent,
    socket: UdpSocket,
    templates: Templates,
    ports: PortAllocator,
    media: HashMap<LegId, MediaSlot>,
    commands: mpsc::Receiver<Command>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    media_tx: mpsc::UnboundedSender<MediaEvent>,
    media_rx: mpsc::UnboundedReceiver<MediaEvent>,
    shutdown: Option<(oneshot::Sender<()>, Instant)>,
}

/// How long shutdown waits for calls and streams to end before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

impl Driver {
    /// Binds the SIP socket. Templates must have been checked already.
    pub async fn bind(
        config: Arc<Config>,
        registry: Arc<Registry>,
        templates: Templates,
        commands: mpsc::Receiver<Command>,
    ) -> Result<Self, DriverError> {
        let addr = config.sip.listen;
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|source| DriverError::Bind { addr, source })?;
        let local = socket
            .local_addr()
            .map_err(|source| DriverError::Bind { addr, source })?;
        let ua = UserAgent::new(UaConfig {
            advertised_host: config.sip.advertised_host(),
            advertised_port: local.port(),
            user_agent: config.sip.user_agent.clone(),
            timers: Timers {
                t1: Duration::from_millis(config.sip.t1_ms),
                t2: Duration::from_millis(config.sip.t2_ms),
                t4: Duration::from_millis(config.sip.t4_ms),
            },
            no_answer_timeout: Duration::from_secs(config.sip.no_answer_timeout_secs),
        });
        let ports = PortAllocator::new(
            config.media.rtp_bind,
            config.media.rtp_port_min,
            config.media.rtp_port_max,
        );
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let (media_tx, media_rx) = mpsc::unbounded_channel();
        Ok(Self {
            config,
            registry,
            ua,
            socket,
            templates,
            ports,
            media: HashMap::new(),
            commands,
            internal_tx,
            internal_rx,
            media_tx,
            media_rx,
            shutdown: None,
        })
    }

    pub fn sip_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Runs until every command sender is gone, or a shutdown has completed.
    pub async fn run(mut self) {
        let mut buf = vec![0u8; 65535];
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.ua.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.ua.handle_datagram(Instant::now(), from, &buf[..len]),
                    // ICMP port unreachable shows up here on some systems; the transaction timers cover it.
                    Err(e) => tracing::debug!("SIP socket receive error: {e}"),
                },
                _ = sleep_until(deadline) => self.ua.handle_timeout(Instant::now()),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None if self.shutdown.is_none() => break,
                    None => {}
                },
                Some(internal) = self.internal_rx.recv() => self.on_internal(internal),
                Some(event) = self.media_rx.recv() => self.on_media_event(event),
                _ = tick.tick() => self.on_tick(),
            }
            self.pump().await;
            if self.shutdown_complete() {
                break;
            }
        }
    }

    /// Sends what the user agent wants sent and applies its events, until both queues are empty.
    async fn pump(&mut self) {
        loop {
            let mut idle = true;
            while let Some(transmit) = self.ua.poll_transmit() {
                idle = false;
                if let Err(e) = self
                    .socket
                    .send_to(&transmit.payload, transmit.destination)
                    .await
                {
                    tracing::warn!(destination = %transmit.destination, "SIP send failed: {e}");
                }
            }
            while let Some(event) = self.ua.poll_event() {
                idle = false;
                self.on_sip_event(event);
            }
            if idle {
                return;
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Start(leg) => self.start(leg),
            Command::Terminate(leg) => self.terminate(leg),
            Command::Shutdown(done) => {
                self.registry.start_draining();
                let live = self.registry.live_legs();
                tracing::info!(calls = live.len(), "shutting down: hanging up every call");
                for leg in live {
                    self.terminate(leg);
                }
                self.shutdown = Some((done, Instant::now() + SHUTDOWN_GRACE));
            }
            Command::SendDtmf { leg, dtmf, reply } => self.send_dtmf(leg, dtmf, reply),
            Command::PushStart { reply, .. } => not_yet(reply, "push/startup"),
            Command::PushFind { reply, .. } => not_yet(reply, "push/find"),
            Command::PushStop { reply, .. } => not_yet(reply, "push/terminate"),
            Command::PushMute { reply, .. } => not_yet(reply, "push/mute"),
        }
    }

    /// DTMF is validated and routed here; sending it (RFC 4733 from the call's pipeline, or SIP INFO)
    /// lands with the media issue (#4).
    fn send_dtmf(&mut self, leg: LegId, dtmf: Dtmf, reply: Reply<()>) {
        let answer = match self.registry.get(leg) {
            None => Err(CommandError::NoSuchCall),
            Some(c) if c.status.is_final() => Err(CommandError::NoSuchCall),
            Some(c) if c.status != CallStatus::Established => Err(CommandError::NotEstablished),
            Some(c) => {
                tracing::info!(
                    call_id = c.request.call_id,
                    ?dtmf,
                    "DTMF not sent: not supported yet"
                );
                Err(CommandError::NotSupported("sending DTMF"))
            }
        };
        let _ = reply.send(answer);
    }

    fn shutdown_complete(&mut self) -> bool {
        let Some((_, deadline)) = &self.shutdown else {
            return false;
        };
        let quiet = self.media.is_empty() && self.registry.live_count() == 0;
        if quiet || Instant::now() >= *deadline {
            if let Some((done, _)) = self.shutdown.take() {
                let _ = done.send(());
            }
            return true;
        }
        false
    }

    fn fail(&mut self, leg: LegId, reason: String) {
        tracing::warn!(leg, "call failed: {reason}");
        self.registry.update(leg, |c| {
            if !c.status.is_final() {
                c.status = CallStatus::Failed;
                c.reason = Some(reason);
                c.ended_at = Some(Instant::now());
            }
        });
    }

    fn start(&mut self, leg: LegId) {
        let Some(record) = self.registry.get(leg) else {
            return;
        };
        let port = match self.ports.allocate() {
            Ok(port) => port,
            Err(e) => return self.fail(leg, e.to_string()),
        };
        self.media.insert(
            leg,
            MediaSlot {
                rtp_port: port,
                pipeline: None,
                stopping: false,
            },
        );
        let host = record.request.next_hop_host.clone();
        let port = record.request.next_hop_port;
        let tx = self.internal_tx.clone();
        tokio::spawn(async move {
            let resolved = resolve(&host, port).await;
            let _ = tx.send(Internal::Resolved(leg, resolved));
        });
    }

    fn on_internal(&mut self, internal: Internal) {
        match internal {
            Internal::Resolved(leg, result) => self.place_call(leg, result),
        }
    }

    fn place_call(&mut self, leg: LegId, destination: Result<SocketAddr, String>) {
        let Some(record) = self.registry.get(leg) else {
            return self.release_media(leg);
        };
        if record.hangup_requested || record.status.is_final() {
            self.registry.update(leg, |c| {
                finish_now(
                    c,
                    CallStatus::Finish,
                    "terminated before the call was placed",
                )
            });
            return self.release_media(leg);
        }
        let destination = match destination {
            Ok(d) => d,
            Err(e) => {
                self.fail(leg, e);
                return self.release_media(leg);
            }
        };
        let Some(slot) = self.media.get(&leg) else {
            return;
        };
        let offer = Offer {
            address: self.config.media.advertised_ip(),
            audio_port: slot.rtp_port,
            audio_direction: if record.request.has_audio {
                Direction::SendRecv
            } else {
                Direction::RecvOnly
            },
            session_id: leg + 1_000_000,
        };
        let request = &record.request;
        let spec = CallSpec {
            leg,
            target_uri: request.target_uri.clone(),
            from_uri: request.from_uri.clone(),
            contact_user: request.sip_login.clone(),
            destination,
            via_outbound_proxy: request.via_outbound_proxy,
            credentials: request.password.clone().map(|password| Credentials {
                username: request.auth_name.clone(),
                password,
            }),
            sdp_offer: offer.to_sdp(),
        };
        tracing::info!(call_id = request.call_id, leg, %destination, target = request.target_uri, "placing call");
        if let Err(e) = self.ua.start_call(Instant::now(), spec) {
            self.fail(leg, e.to_string());
            self.release_media(leg);
        }
    }

    fn terminate(&mut self, leg: LegId) {
        self.registry.update(leg, |c| c.hangup_requested = true);
        self.stop_media(leg, true);
        self.ua.hangup(Instant::now(), leg);
    }

    fn on_sip_event(&mut self, event: SipEvent) {
        let leg = event.leg();
        let now = Instant::now();
        let Some(follow_up) = self.registry.update(leg, |c| {
            let before = (c.status, c.sip_status);
            let follow_up = c.on_sip_event(&event, now);
            if (c.status, c.sip_status) != before {
                tracing::info!(
                    call_id = c.request.call_id,
                    status = c.status.wcs_name(),
                    sip_status = c.sip_status,
                    "call status"
                );
            }
            follow_up
        }) else {
            return;
        };
        match follow_up {
            SipFollowUp::None => {}
            SipFollowUp::StartMedia(sdp) => self.start_media(leg, &sdp),
            SipFollowUp::StopMedia => self.stop_media(leg, true),
            SipFollowUp::Released => self.release_media(leg),
            SipFollowUp::Hangup => self.ua.hangup(now, leg),
        }
    }

    fn start_media(&mut self, leg: LegId, answer: &[u8]) {
        let Some(record) = self.registry.get(leg) else {
            return;
        };
        let plan = match sdp::plan_from_answer(answer) {
            Ok(plan) => plan,
            Err(e) => {
                self.fail(leg, format!("unusable SDP answer: {e}"));
                self.ua.hangup(Instant::now(), leg);
                return;
            }
        };
        let Some(slot) = self.media.get_mut(&leg) else {
            return;
        };
        let values = Values {
            codec: plan.audio.codec,
            jitter_latency_ms: self.config.media.jitter_latency_ms,
            aac_bitrate: self.config.media.aac_bitrate,
        };
        let destination = Destination {
            rtmp_url: &record.request.rtmp_url,
            stream: &record.request.rtmp_stream,
        };
        let setup = Setup {
            leg,
            template: &self.templates.audio_g711,
            values: &values,
            rtp_bind: self.config.media.rtp_bind,
            rtp_port: slot.rtp_port,
            plan: &plan.audio,
            destination,
        };
        let started = CallPipeline::start(setup, self.media_tx.clone());
        match started {
            Ok(pipeline) => {
                tracing::info!(call_id = record.request.call_id, codec = plan.audio.codec.encoding_name(), rtp_port = slot.rtp_port, remote = %plan.audio.remote, "media started");
                slot.pipeline = Some(pipeline);
            }
            Err(e) => {
                self.fail(
                    leg,
                    record.request.rtmp_stream.scrub(&format!("media: {e}")),
                );
                self.ua.hangup(Instant::now(), leg);
            }
        }
    }

    /// Ends a call's pipeline (with EOS when `clean`); its port returns once it is down.
    fn stop_media(&mut self, leg: LegId, clean: bool) {
        let Some(slot) = self.media.get_mut(&leg) else {
            return;
        };
        if slot.stopping {
            return;
        }
        match slot.pipeline.take() {
            Some(pipeline) => {
                slot.stopping = true;
                if clean {
                    pipeline.stop(self.config.media.eos_timeout());
                } else {
                    pipeline.abort();
                }
            }
            None => {
                // No pipeline yet: once the SIP side is over too, nothing holds the port.
                let over = self.registry.get(leg).is_none_or(|c| c.status.is_final());
                if over {
                    self.release_media(leg);
                }
            }
        }
    }

    /// Returns a call's RTP port when no pipeline uses it.
    fn release_media(&mut self, leg: LegId) {
        if let Some(slot) = self.media.get(&leg) {
            if slot.pipeline.is_none() && !slot.stopping {
                self.ports.release(slot.rtp_port);
                self.media.remove(&leg);
            }
        }
    }

    fn on_media_event(&mut self, event: MediaEvent) {
        let leg = event.leg;
        match event.kind {
            MediaEventKind::Stopped { rtp_port } => {
                self.ports.release(rtp_port);
                self.media.remove(&leg);
            }
            MediaEventKind::RtmpError(reason) => {
                let was_active = self
                    .media
                    .get(&leg)
                    .and_then(|s| s.pipeline.as_ref())
                    .is_some_and(CallPipeline::was_active);
                let status = if was_active {
                    RtmpStatus::ConnectionLost
                } else {
                    RtmpStatus::ConnectionFailed
                };
                self.registry.update(leg, |c| {
                    tracing::warn!(
                        call_id = c.request.call_id,
                        status = status.wcs_name(),
                        "RTMP output failed: {reason}"
                    );
                    c.rtmp_status = status;
                    c.reason = Some(format!("RTMP: {reason}"));
                });
                // The SIP call goes on; reconnecting the output is issue #6's work.
                self.stop_media(leg, false);
            }
            MediaEventKind::Failed(reason) => {
                self.fail(leg, format!("media pipeline: {reason}"));
                self.stop_media(leg, false);
                self.ua.hangup(Instant::now(), leg);
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        self.registry.purge(now);
        let mut became_active = Vec::new();
        for (leg, slot) in &mut self.media {
            if let Some(pipeline) = slot.pipeline.as_mut() {
                if pipeline.poll_became_active() {
                    became_active.push(*leg);
                }
            }
        }
        for leg in became_active {
            self.registry.update(leg, |c| {
                c.rtmp_status = RtmpStatus::Active;
                tracing::info!(
                    call_id = c.request.call_id,
                    status = RtmpStatus::Active.wcs_name(),
                    "RTMP output live"
                );
            });
        }
    }
}

/// Push targets need several RTMP outputs per call (the lead's multi-target work); until then the
/// commands are answered "not supported yet".
fn not_yet<T>(reply: Reply<T>, what: &'static str) {
    let _ = reply.send(Err(CommandError::NotSupported(what)));
}

fn finish_now(c: &mut crate::call::CallRecord, status: CallStatus, reason: &str) {
    if !c.status.is_final() {
        c.status = status;
        c.reason = Some(reason.to_owned());
        c.ended_at = Some(Instant::now());
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Resolves a host (name or address literal) to the address the INVITE goes to; IPv4 first.
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{host} has no address"))
}
