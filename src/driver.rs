//! The one thin tokio task that owns the SIP sockets and the clock, and drives the sans-IO cores: the SIP
//! user agent, the call registry's state rules, and the per-call media pipelines.
//!
//! SIP goes over UDP (one socket) and TCP (a listener on the same address, and one connection per peer
//! address, opened on demand; RFC 3261 18.3 framing by `message::StreamFramer`). Everything that can block
//! (DNS, connecting, stopping a pipeline) happens off this task and comes back as a message.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use crate::call::command::{
    CommandError, Dtmf, DtmfKind, PushFilter, PushSnapshot, PushTarget, Reply,
};
use crate::call::{CallStatus, Registry, RtmpStatus, SipFollowUp};
use crate::config::Config;
use crate::media::{
    gst_rtp_caps, Backoff, CallPipeline, KeepAlive, MediaEvent, MediaEventKind, OutputSettings,
    PortAllocator, Setup, StreamSetup, TargetChange, TargetId, TargetKind, Templates, Values,
};
use crate::sdp::{self, Direction, Offer, VideoCodec};
use crate::sip::message::{StreamFramer, Transport};
use crate::sip::transaction::Timers;
use crate::sip::ua::{CallSpec, Credentials, LegId, RateLimit, SipEvent, UaConfig, UserAgent};

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
    /// A liveness probe of a call's target: `None` when the server answered.
    Probed {
        leg: LegId,
        target: TargetId,
        generation: u64,
        failure: Option<String>,
    },
    /// A peer connected to our TCP listener; `writer` sends on that connection.
    TcpAccepted(SocketAddr, mpsc::UnboundedSender<Vec<u8>>),
    /// A complete message framed from a TCP connection.
    TcpMessage(SocketAddr, Vec<u8>),
    /// A TCP connection is gone (closed, reset, failed to connect, or a framing error).
    TcpClosed(SocketAddr),
}

/// RFC 5168 2: the keyframe request of SIP video endpoints that do not act on RTCP feedback.
const PICTURE_FAST_UPDATE: &[u8] = b"<?xml version=\"1.0\" encoding=\"utf-8\" ?>\r\n<media_control>\r\n  <vc_primitive>\r\n    \
<to_encoder>\r\n      <picture_fast_update/>\r\n    </to_encoder>\r\n  </vc_primitive>\r\n</media_control>\r\n";

/// The target every call starts with (its rtmpUrl/rtmpStream); its status is the call's rtmpStreamStatus.
const PRIMARY_TARGET: TargetId = 1;

/// How long connecting to a TCP peer may take; the transaction's own timers cover the rest.
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Media state of one call.
struct MediaSlot {
    /// RTP ports (each with RTCP on the next): audio, then video when offered.
    rtp_ports: Vec<u16>,
    pipeline: Option<CallPipeline>,
    /// Set once the pipeline has been asked to stop; the port returns on `Stopped`.
    stopping: bool,
}

pub struct Driver {
    config: Arc<Config>,
    registry: Arc<Registry>,
    ua: UserAgent,
    socket: UdpSocket,
    tcp_listener: Option<TcpListener>,
    /// Open TCP connections by peer address: a sender to the connection's writer.
    tcp: HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>>,
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
        let tcp_listener = if config.sip.tcp {
            let tcp_addr = local;
            Some(
                TcpListener::bind(tcp_addr)
                    .await
                    .map_err(|source| DriverError::Bind {
                        addr: tcp_addr,
                        source,
                    })?,
            )
        } else {
            None
        };
        let sip = &config.sip;
        let ua = UserAgent::new(UaConfig {
            advertised_host: sip.advertised_host(),
            advertised_port: local.port(),
            user_agent: sip.user_agent.clone(),
            timers: Timers {
                t1: Duration::from_millis(sip.t1_ms),
                t2: Duration::from_millis(sip.t2_ms),
                t4: Duration::from_millis(sip.t4_ms),
            },
            no_answer_timeout: Duration::from_secs(sip.no_answer_timeout_secs),
            session_expires: (sip.session_expires_secs > 0)
                .then(|| Duration::from_secs(sip.session_expires_secs)),
            min_se: Duration::from_secs(sip.min_se_secs),
            incoming_invite_status: sip.incoming_invite_status,
            stray_limit: RateLimit {
                per_second: sip.stray_responses_per_sec,
                burst: sip.stray_responses_burst,
            },
            register_expires: Duration::from_secs(sip.register_expires_secs),
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
            tcp_listener,
            tcp: HashMap::new(),
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
        if let Some(listener) = self.tcp_listener.take() {
            tokio::spawn(accept_tcp(listener, self.internal_tx.clone()));
        }
        let mut buf = vec![0u8; 65535];
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.ua.poll_timeout().map(tokio::time::Instant::from_std);
            let media_deadline = self
                .media
                .values()
                .filter_map(|s| s.pipeline.as_ref().and_then(CallPipeline::next_deadline))
                .min()
                .map(tokio::time::Instant::from_std);
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
                _ = sleep_until(media_deadline) => self.on_media_deadline(),
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
                match transmit.transport {
                    Transport::Udp => {
                        if let Err(e) = self
                            .socket
                            .send_to(&transmit.payload, transmit.destination)
                            .await
                        {
                            tracing::warn!(destination = %transmit.destination, "SIP send failed: {e}");
                        }
                    }
                    Transport::Tcp => self.send_tcp(transmit.destination, transmit.payload),
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
            Command::SendDtmf { leg, dtmf, reply } => {
                let _ = reply.send(self.send_dtmf(leg, &dtmf));
            }
            Command::PushStart { leg, target, reply } => {
                let _ = reply.send(self.push_start(leg, target));
            }
            Command::PushFind { filter, reply } => {
                let _ = reply.send(Ok(self.push_find(&filter)));
            }
            Command::PushStop {
                media_session_id,
                reply,
            } => {
                let _ = reply.send(self.push_stop(&media_session_id));
            }
            Command::PushMute {
                media_session_id,
                muted,
                reply,
            } => {
                let _ = reply.send(self.push_mute(&media_session_id, muted));
            }
        }
    }

    /// Sends DTMF: RFC 4733 events on the generated audio toward the peer, or one SIP INFO
    /// (application/dtmf-relay) per digit, in order.
    fn send_dtmf(&mut self, leg: LegId, dtmf: &Dtmf) -> Result<(), CommandError> {
        match self.registry.get(leg) {
            None => return Err(CommandError::NoSuchCall),
            Some(c) if c.status.is_final() => return Err(CommandError::NoSuchCall),
            Some(c) if c.status != CallStatus::Established => {
                return Err(CommandError::NotEstablished)
            }
            Some(_) => {}
        }
        match dtmf.kind {
            DtmfKind::Rfc2833 => {
                let pipeline = self
                    .media
                    .get(&leg)
                    .and_then(|s| s.pipeline.as_ref())
                    .ok_or(CommandError::NotEstablished)?;
                if !pipeline.send_dtmf(dtmf.digits(), DTMF_DURATION_MS) {
                    // No generated audio: hasAudio=false, generate_av_for_ua = none, or a codec it cannot make.
                    return Err(CommandError::NotSupported(
                        "RFC 2833 DTMF on a call without generated audio",
                    ));
                }
            }
            DtmfKind::Info => {
                let now = Instant::now();
                for digit in dtmf.digits().chars() {
                    let body =
                        format!("Signal={digit}\r\nDuration={DTMF_DURATION_MS}\r\n").into_bytes();
                    self.ua
                        .send_info(now, leg, "application/dtmf-relay", body)
                        .map_err(|_| CommandError::NotEstablished)?;
                }
            }
        }
        tracing::info!(leg, ?dtmf, "DTMF sent");
        Ok(())
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
        let mut rtp_ports = Vec::new();
        for _ in 0..(1 + usize::from(record.request.has_video)) {
            match self.ports.allocate() {
                Ok(port) => rtp_ports.push(port),
                Err(e) => {
                    for port in rtp_ports {
                        self.ports.release(port);
                    }
                    return self.fail(leg, e.to_string());
                }
            }
        }
        self.media.insert(
            leg,
            MediaSlot {
                rtp_ports,
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
            Internal::Probed {
                leg,
                target,
                generation,
                failure,
            } => {
                let change = self
                    .media
                    .get_mut(&leg)
                    .and_then(|s| s.pipeline.as_mut())
                    .and_then(|p| p.on_probe_result(target, generation, failure));
                if let Some(change) = change {
                    self.apply_target_change(leg, change);
                }
            }
            Internal::TcpAccepted(peer, writer) => {
                tracing::debug!(%peer, "SIP TCP connection accepted");
                self.tcp.insert(peer, writer);
            }
            Internal::TcpMessage(peer, message) => {
                self.ua
                    .handle_message(Instant::now(), peer, Transport::Tcp, &message)
            }
            Internal::TcpClosed(peer) => {
                tracing::debug!(%peer, "SIP TCP connection closed");
                self.tcp.remove(&peer);
            }
        }
    }

    /// Sends over the connection to `peer`, opening one if there is none (RFC 3261 18.1.1, 18.2.2).
    fn send_tcp(&mut self, peer: SocketAddr, payload: Vec<u8>) {
        if let Some(writer) = self.tcp.get(&peer) {
            if writer.send(payload.clone()).is_ok() {
                return;
            }
        }
        tracing::debug!(%peer, "SIP TCP connection opening");
        let (writer, queue) = mpsc::unbounded_channel();
        let _ = writer.send(payload);
        self.tcp.insert(peer, writer);
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(peer)).await {
                Ok(Ok(stream)) => run_tcp(stream, peer, queue, internal).await,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, "SIP TCP connect failed: {e}");
                    let _ = internal.send(Internal::TcpClosed(peer));
                }
                Err(_) => {
                    tracing::warn!(%peer, "SIP TCP connect timed out");
                    let _ = internal.send(Internal::TcpClosed(peer));
                }
            }
        });
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
            audio_port: slot.rtp_ports[0],
            audio_direction: if record.request.has_audio {
                Direction::SendRecv
            } else {
                Direction::RecvOnly
            },
            video_port: slot.rtp_ports.get(1).copied(),
            video_direction: if record.request.has_video {
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
            transport: request.transport,
            credentials: request.password.clone().map(|password| Credentials {
                username: request.auth_name.clone(),
                password,
            }),
            offer,
            register: request.registrar_uri.clone(),
        };
        tracing::info!(
            call_id = request.call_id,
            leg,
            %destination,
            transport = request.transport.via_name(),
            target = request.target_uri,
            register = request.registrar_uri.as_deref().unwrap_or("no"),
            "placing call"
        );
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
        match &event {
            SipEvent::Registered { expires, .. } => {
                tracing::info!(
                    leg,
                    expires = expires.as_secs(),
                    "SIP registration accepted"
                )
            }
            SipEvent::Refreshed {
                by_us, interval, ..
            } => tracing::info!(
                leg,
                by_us,
                interval = interval.as_secs(),
                "SIP session refreshed"
            ),
            SipEvent::MediaUpdated { hold, .. } => {
                // The pipeline keeps running through hold and resume; the media side fills the gap.
                tracing::info!(leg, hold, "SIP session updated by the peer")
            }
            _ => {}
        }
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
        let request = &record.request;
        let mut targets = vec![TargetKind::Rtmp {
            url: request.rtmp_url.clone(),
            stream: request.rtmp_stream.clone(),
        }];
        if request.record {
            targets.push(TargetKind::File {
                path: recording_path(&self.config.recording.dir, &request.call_id),
            });
        }
        let media = &self.config.media;
        let audio = StreamSetup {
            session: 0,
            rtp_port: slot.rtp_ports[0],
            caps: gst_rtp_caps(
                "audio",
                plan.audio.clock_rate,
                plan.audio.codec.encoding_name(),
                plan.audio.payload_type,
            ),
            payload_type: plan.audio.payload_type,
            remote_rtp: plan.audio.remote,
            remote_rtcp: plan.audio.remote_rtcp,
        };
        // Video only when we offered it (a port was reserved) and the peer accepted it.
        let video = plan
            .video
            .as_ref()
            .zip(slot.rtp_ports.get(1))
            .map(|(v, port)| StreamSetup {
                session: 1,
                rtp_port: *port,
                caps: gst_rtp_caps("video", 90000, v.codec.encoding_name(), v.payload_type),
                payload_type: v.payload_type,
                remote_rtp: v.remote,
                remote_rtcp: v.remote_rtcp,
            });
        let template = match plan
            .video
            .as_ref()
            .filter(|_| video.is_some())
            .map(|v| v.codec)
        {
            Some(VideoCodec::H264 { .. }) => &self.templates.h264,
            Some(VideoCodec::Vp8) => &self.templates.vp8,
            None => &self.templates.audio_g711,
        };
        // WCS semantics: hasAudio=true made the offer sendrecv, so the peer expects media back.
        let peer_receives = matches!(
            plan.audio.remote_direction,
            Direction::SendRecv | Direction::RecvOnly
        );
        let keepalive = (media.generate_av_for_ua.audio() && request.has_audio && peer_receives)
            .then(|| KeepAlive {
                encoding_name: plan.audio.codec.encoding_name(),
                payload_type: plan.audio.payload_type,
                dtmf_payload_type: plan.audio.telephone_event_pt,
                packets_per_send: media.generated_packets_per_send,
            });
        let rtmp = &self.config.rtmp;
        let setup = Setup {
            leg,
            template,
            templates: &self.templates,
            values: &values,
            rtp_bind: media.rtp_bind,
            jitter_latency_ms: media.jitter_latency_ms,
            rtp_timeout: (media.rtp_timeout_secs > 0)
                .then(|| Duration::from_secs(media.rtp_timeout_secs)),
            audio,
            video,
            keepalive,
            settings: OutputSettings {
                backoff: Backoff::new(
                    Duration::from_millis(rtmp.reconnect_initial_ms),
                    Duration::from_millis(rtmp.reconnect_max_ms),
                    rtmp.reconnect_multiplier,
                ),
                liveness: (rtmp.liveness_secs > 0).then(|| Duration::from_secs(rtmp.liveness_secs)),
                tls_accept_invalid: rtmp.tls_accept_invalid_certs,
            },
            targets,
        };
        match CallPipeline::start(setup, self.media_tx.clone()) {
            Ok(pipeline) => {
                tracing::info!(
                    call_id = request.call_id,
                    codec = plan.audio.codec.encoding_name(),
                    rtp_ports = ?slot.rtp_ports,
                    remote = %plan.audio.remote,
                    video = plan.video.as_ref().map(|v| v.codec.encoding_name()).unwrap_or("none"),
                    record = request.record,
                    "media started"
                );
                slot.pipeline = Some(pipeline);
            }
            Err(e) => {
                self.fail(leg, request.rtmp_stream.scrub(&format!("media: {e}")));
                self.ua.hangup(Instant::now(), leg);
            }
        }
    }

    fn push_start(&mut self, leg: LegId, target: PushTarget) -> Result<PushSnapshot, CommandError> {
        let call_id = self
            .registry
            .get(leg)
            .filter(|c| !c.status.is_final())
            .ok_or(CommandError::NoSuchCall)?
            .request
            .call_id;
        let pipeline = self
            .media
            .get_mut(&leg)
            .and_then(|s| s.pipeline.as_mut())
            .ok_or(CommandError::NotEstablished)?;
        let kind = TargetKind::Rtmp {
            url: target.rtmp_url.clone(),
            stream: target.stream.clone(),
        };
        if pipeline.has_target(&kind) {
            return Err(CommandError::TargetExists);
        }
        let description = kind.describe();
        let id = pipeline.add_target(kind).map_err(|e| {
            tracing::warn!(call_id, "push target could not be built: {e}");
            CommandError::Unavailable
        })?;
        if target.muted {
            let _ = pipeline.set_muted(id, true);
        }
        tracing::info!(
            call_id,
            target = id,
            destination = description,
            "target added"
        );
        Ok(PushSnapshot {
            media_session_id: media_session_id(&call_id, id),
            call_id,
            rtmp_url: target.rtmp_url,
            rtmp_stream_redacted: target.stream.redacted(),
            rtmp_status: RtmpStatus::Wait,
            muted: target.muted,
        })
    }

    /// Every push target (not the calls' own rtmpUrl targets) matching `filter`.
    fn push_find(&self, filter: &PushFilter) -> Vec<PushSnapshot> {
        let mut found = Vec::new();
        for (leg, slot) in &self.media {
            if filter.leg.is_some_and(|l| l != *leg) {
                continue;
            }
            let (Some(pipeline), Some(call)) = (slot.pipeline.as_ref(), self.registry.get(*leg))
            else {
                continue;
            };
            for (id, kind, status, muted) in pipeline.targets() {
                let TargetKind::Rtmp { url, stream } = kind else {
                    continue;
                };
                let session = media_session_id(&call.request.call_id, id);
                if id == PRIMARY_TARGET
                    || filter
                        .media_session_id
                        .as_ref()
                        .is_some_and(|m| *m != session)
                    || filter.rtmp_url.as_ref().is_some_and(|u| u != url)
                {
                    continue;
                }
                found.push(PushSnapshot {
                    media_session_id: session,
                    call_id: call.request.call_id.clone(),
                    rtmp_url: url.clone(),
                    rtmp_stream_redacted: stream.redacted(),
                    rtmp_status: status,
                    muted,
                });
            }
        }
        found.sort_by(|a, b| a.media_session_id.cmp(&b.media_session_id));
        found
    }

    /// The live call and target a mediaSessionId names (not the call's own target).
    fn push_target(
        &mut self,
        media_session_id: &str,
    ) -> Result<(&mut CallPipeline, TargetId), CommandError> {
        let (call_id, target) =
            parse_media_session_id(media_session_id).ok_or(CommandError::NoSuchTarget)?;
        if target == PRIMARY_TARGET {
            return Err(CommandError::NoSuchTarget);
        }
        let leg = self
            .registry
            .live_leg(&call_id)
            .ok_or(CommandError::NoSuchTarget)?;
        let pipeline = self
            .media
            .get_mut(&leg)
            .and_then(|s| s.pipeline.as_mut())
            .ok_or(CommandError::NoSuchTarget)?;
        Ok((pipeline, target))
    }

    fn push_mute(&mut self, media_session_id: &str, muted: bool) -> Result<(), CommandError> {
        let (pipeline, target) = self.push_target(media_session_id)?;
        pipeline
            .set_muted(target, muted)
            .map_err(|_| CommandError::NoSuchTarget)?;
        tracing::info!(media_session_id, muted, "push target muted");
        Ok(())
    }

    fn push_stop(&mut self, media_session_id: &str) -> Result<(), CommandError> {
        // The call's own rtmpUrl ends with the call (call/terminate), not here.
        let (pipeline, target) = self.push_target(media_session_id)?;
        pipeline
            .remove_target(target)
            .map_err(|_| CommandError::NoSuchTarget)?;
        tracing::info!(media_session_id, "target removed");
        Ok(())
    }

    /// Records a target's status change; the primary target's is the call's rtmpStreamStatus.
    fn apply_target_change(&mut self, leg: LegId, change: TargetChange) {
        self.registry.update(leg, |c| {
            let reason = change
                .reason
                .as_deref()
                .map(|r| c.request.rtmp_stream.scrub(r));
            match change.status {
                RtmpStatus::Active => tracing::info!(
                    call_id = c.request.call_id,
                    target = change.target,
                    "RTMP target live"
                ),
                status => tracing::warn!(
                    call_id = c.request.call_id,
                    target = change.target,
                    status = status.wcs_name(),
                    reason = reason.as_deref().unwrap_or(""),
                    "RTMP target down; reconnecting"
                ),
            }
            if change.target == PRIMARY_TARGET && c.rtmp_status != change.status {
                c.rtmp_status = change.status;
                if let Some(reason) = reason {
                    c.reason = Some(format!("RTMP: {reason}"));
                }
            }
        });
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
                for port in &slot.rtp_ports {
                    self.ports.release(*port);
                }
                self.media.remove(&leg);
            }
        }
    }

    fn on_media_event(&mut self, event: MediaEvent) {
        let leg = event.leg;
        match event.kind {
            MediaEventKind::Stopped { rtp_ports } => {
                for port in rtp_ports {
                    self.ports.release(port);
                }
                self.media.remove(&leg);
            }
            MediaEventKind::OutputFailed {
                target,
                generation,
                reason,
            } => {
                let change = self
                    .media
                    .get_mut(&leg)
                    .and_then(|s| s.pipeline.as_mut())
                    .and_then(|p| p.on_output_failed(target, generation, reason));
                if let Some(change) = change {
                    self.apply_target_change(leg, change);
                }
            }
            MediaEventKind::RtpTimeout => {
                // A held call may be silent (RFC 3264 8.4: sendonly/inactive); udpsrc keeps reporting, so the
                // timeout applies again once the call is resumed.
                if self
                    .registry
                    .get(leg)
                    .is_some_and(|c| c.status == CallStatus::Hold)
                {
                    return;
                }
                let secs = self.config.media.rtp_timeout_secs;
                self.fail(leg, format!("no RTP received for {secs} s; hung up"));
                self.stop_media(leg, true);
                self.ua.hangup(Instant::now(), leg);
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
        let legs: Vec<LegId> = self.media.keys().copied().collect();
        for leg in legs {
            self.poll_media(leg, now);
        }
    }

    /// Polls only the calls whose media deadline is due (a target to rebuild, a new target's first byte):
    /// cheap enough to run often while calls start, unlike the tick over every call.
    fn on_media_deadline(&mut self) {
        let now = Instant::now();
        let due: Vec<LegId> = self
            .media
            .iter()
            .filter(|(_, s)| {
                s.pipeline
                    .as_ref()
                    .and_then(CallPipeline::next_deadline)
                    .is_some_and(|d| d <= now)
            })
            .map(|(leg, _)| *leg)
            .collect();
        for leg in due {
            self.poll_media(leg, now);
        }
    }

    /// One call's periodic media work: target rebuilds and statuses, liveness probes, figures.
    fn poll_media(&mut self, leg: LegId, now: Instant) {
        let probe_timeout = Duration::from_secs(self.config.rtmp.liveness_secs.max(1));
        let keyframe_info_after =
            Duration::from_millis(self.config.media.keyframe_info_after_ms.max(100));
        let Some(pipeline) = self.media.get_mut(&leg).and_then(|s| s.pipeline.as_mut()) else {
            return;
        };
        let (changes, probes) = pipeline.poll(now);
        for (target, generation, (host, port)) in probes {
            let tx = self.internal_tx.clone();
            tokio::spawn(async move {
                let failure = rtmp_handshake_probe(&host, port, probe_timeout).await.err();
                let _ = tx.send(Internal::Probed {
                    leg,
                    target,
                    generation,
                    failure,
                });
            });
        }
        let keyframe_overdue = pipeline.keyframe_overdue(now, keyframe_info_after);
        let figures = pipeline.figures();
        self.registry.update(leg, |c| c.media = Some(figures));
        for change in changes {
            self.apply_target_change(leg, change);
        }
        if keyframe_overdue {
            tracing::debug!(leg, "no keyframe after RTCP requests: asking by SIP INFO");
            let _ = self.ua.send_info(
                now,
                leg,
                "application/media_control+xml",
                PICTURE_FAST_UPDATE.to_vec(),
            );
        }
    }
}

/// The file a call's recording goes to: `<dir>/<callId>-<unix seconds>.flv`, the callId reduced to
/// characters safe in a file name.
fn recording_path(dir: &std::path::Path, call_id: &str) -> std::path::PathBuf {
    let safe: String = call_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    dir.join(format!("{safe}-{unix}.flv"))
}

/// Liveness of an RTMP server: a second connection whose handshake (RTMP 5.2: C0+C1 out, S0+S1 back) must
/// complete within `timeout`. A stopped or wedged server accepts the TCP connection in its kernel but
/// never answers.
async fn rtmp_handshake_probe(host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // C0: version 3; C1: time 0, zero, 1528 bytes of zeros (random bytes are not needed for a probe).
        let mut hello = vec![0u8; 1 + 1536];
        hello[0] = 3;
        stream
            .write_all(&hello)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut answer = vec![0u8; 1 + 1536];
        stream
            .read_exact(&mut answer)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        Ok::<(), String>(())
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => {
            result.map_err(|e| format!("RTMP server stalled: liveness probe failed ({e})"))
        }
        Err(_) => Err(format!(
            "RTMP server stalled: no handshake answer within {} s",
            timeout.as_secs()
        )),
    }
}

/// Push targets need several RTMP outputs per call (the lead's multi-target work); until then the
/// commands are answered "not supported yet".
/// How long each DTMF digit lasts (RFC 4733 event duration; INFO Duration).
const DTMF_DURATION_MS: u32 = 250;

/// A push target's id as the API shows it: `<callId>/<target>`.
fn media_session_id(call_id: &str, target: TargetId) -> String {
    format!("{call_id}/{target}")
}

fn parse_media_session_id(id: &str) -> Option<(String, TargetId)> {
    let (call, target) = id.rsplit_once('/')?;
    Some((call.to_owned(), target.parse().ok()?))
}

fn finish_now(c: &mut crate::call::CallRecord, status: CallStatus, reason: &str) {
    if !c.status.is_final() {
        c.status = status;
        c.reason = Some(reason.to_owned());
        c.ended_at = Some(Instant::now());
    }
}

/// Accepts SIP TCP connections until the driver is gone.
async fn accept_tcp(listener: TcpListener, internal: mpsc::UnboundedSender<Internal>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let (writer, queue) = mpsc::unbounded_channel();
                if internal.send(Internal::TcpAccepted(peer, writer)).is_err() {
                    return;
                }
                tokio::spawn(run_tcp(stream, peer, queue, internal.clone()));
            }
            Err(e) => {
                tracing::warn!("SIP TCP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if internal.is_closed() {
            return;
        }
    }
}

/// One TCP connection: frames what arrives (RFC 3261 18.3) and writes what the driver queues. Ends on EOF,
/// an I/O error or a framing error (the stream cannot be resynchronised: RFC 4475 3.1.2.3).
async fn run_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    mut queue: mpsc::UnboundedReceiver<Vec<u8>>,
    internal: mpsc::UnboundedSender<Internal>,
) {
    let (mut reader, mut writer) = stream.into_split();
    let mut framer = StreamFramer::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    framer.push(&buf[..n]);
                    loop {
                        match framer.next_message() {
                            Ok(Some(message)) => {
                                if internal.send(Internal::TcpMessage(peer, message)).is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!(%peer, "closing SIP TCP connection: {e}");
                                let _ = internal.send(Internal::TcpClosed(peer));
                                return;
                            }
                        }
                    }
                }
            },
            out = queue.recv() => match out {
                Some(payload) => {
                    if writer.write_all(&payload).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    let _ = internal.send(Internal::TcpClosed(peer));
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
