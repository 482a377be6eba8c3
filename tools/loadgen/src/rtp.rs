//! Real-time RTP senders: a few pacer tasks, each owning many streams and sending every packet that is due
//! on a 5 ms tick (packet n of a stream is due at start + n x period, so pacing never drifts). How late the
//! pacer sends is measured, so a generator that cannot keep up is seen, not mistaken for the gateway's fault.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::media::{Audio, Video};

/// Counters shared by every pacer.
#[derive(Default)]
pub struct RtpStats {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub send_errors: AtomicU64,
    pub streams_active: AtomicU64,
    /// Largest lateness of a send (µs) since it was last read with `take_max_late_us`.
    pub max_late_us: AtomicU64,
    /// Largest lateness ever (µs).
    pub max_late_us_ever: AtomicU64,
}

impl RtpStats {
    pub fn take_max_late_us(&self) -> u64 {
        self.max_late_us.swap(0, Ordering::Relaxed)
    }
}

/// Per-call counters, owned by the call and updated by its pacer.
#[derive(Default, Debug)]
pub struct StreamCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
}

pub enum Source {
    Audio { payload_type: u8, audio: Audio },
    Video { payload_type: u8, video: Video },
}

pub struct StreamSpec {
    pub socket: Arc<UdpSocket>,
    pub destination: SocketAddr,
    pub source: Source,
    pub counters: Arc<StreamCounters>,
}

enum Command {
    Add(u64, Vec<StreamSpec>),
    Remove(u64),
}

struct Stream {
    owner: u64,
    spec: StreamSpec,
    ssrc: u32,
    seq: u16,
    ts_base: u32,
    start: Instant,
    /// Index of the next packet (audio) or frame (video).
    next: u64,
    period: Duration,
    buf: Vec<u8>,
}

impl Stream {
    fn new(owner: u64, spec: StreamSpec, now: Instant) -> Stream {
        let seed = owner
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(spec.destination.port() as u64);
        let period = match &spec.source {
            Source::Audio { .. } => Duration::from_millis(20),
            Source::Video { video, .. } => Duration::from_secs(1) / video.fps,
        };
        Stream {
            owner,
            spec,
            ssrc: (seed >> 32) as u32 ^ seed as u32,
            seq: (seed >> 16) as u16,
            ts_base: (seed >> 8) as u32,
            start: now,
            next: 0,
            period,
            buf: Vec::with_capacity(1500),
        }
    }

    fn due(&self) -> Instant {
        self.start + self.period * (self.next as u32)
    }

    fn send_packet(
        &mut self,
        payload_type: u8,
        marker: bool,
        ts: u32,
        payload: &[u8],
        stats: &RtpStats,
    ) {
        self.buf.clear();
        self.buf.push(0x80);
        self.buf
            .push(payload_type & 0x7f | if marker { 0x80 } else { 0 });
        self.buf.extend_from_slice(&self.seq.to_be_bytes());
        self.buf.extend_from_slice(&ts.to_be_bytes());
        self.buf.extend_from_slice(&self.ssrc.to_be_bytes());
        self.buf.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        match self.spec.socket.send_to(&self.buf, self.spec.destination) {
            Ok(n) => {
                stats.packets.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                self.spec.counters.packets.fetch_add(1, Ordering::Relaxed);
                self.spec
                    .counters
                    .bytes
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => {
                stats.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends everything due by `now`; returns how late the earliest of it was.
    fn send_due(&mut self, now: Instant, stats: &RtpStats) -> Duration {
        let mut late = Duration::ZERO;
        // Never more than 1 s of catch-up in one go: a stalled generator shows as lateness, not as a flood.
        let mut budget = 50;
        while self.due() <= now && budget > 0 {
            budget -= 1;
            late = late.max(now - self.due());
            let n = self.next;
            match &self.spec.source {
                Source::Audio {
                    payload_type,
                    audio,
                } => {
                    let (pt, audio) = (*payload_type, audio.clone());
                    let ts = self.ts_base.wrapping_add((n as u32).wrapping_mul(160));
                    self.send_packet(pt, n == 0, ts, audio.payload(n), stats);
                }
                Source::Video {
                    payload_type,
                    video,
                } => {
                    let (pt, video) = (*payload_type, video.clone());
                    let ts = self
                        .ts_base
                        .wrapping_add((n.wrapping_mul(90_000) / u64::from(video.fps)) as u32);
                    for packet in video.frame(n) {
                        self.send_packet(pt, packet.marker, ts, &packet.payload, stats);
                    }
                }
            }
            self.next += 1;
        }
        late
    }
}

/// Handle to the pacers; cheap to clone.
#[derive(Clone)]
pub struct Pacers {
    shards: Vec<mpsc::UnboundedSender<Command>>,
}

impl Pacers {
    /// Starts `count` pacer tasks on the current tokio runtime.
    pub fn spawn(count: usize, stats: Arc<RtpStats>) -> Pacers {
        let shards = (0..count.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run(rx, stats.clone()));
                tx
            })
            .collect();
        Pacers { shards }
    }

    fn shard(&self, owner: u64) -> &mpsc::UnboundedSender<Command> {
        &self.shards[(owner % self.shards.len() as u64) as usize]
    }

    /// Starts streaming for `owner` now.
    pub fn add(&self, owner: u64, streams: Vec<StreamSpec>) {
        let _ = self.shard(owner).send(Command::Add(owner, streams));
    }

    /// Stops `owner`'s streams.
    pub fn remove(&self, owner: u64) {
        let _ = self.shard(owner).send(Command::Remove(owner));
    }
}

async fn run(mut commands: mpsc::UnboundedReceiver<Command>, stats: Arc<RtpStats>) {
    let mut streams: Vec<Stream> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Add(owner, specs)) => {
                    let now = Instant::now();
                    for spec in specs {
                        stats.streams_active.fetch_add(1, Ordering::Relaxed);
                        streams.push(Stream::new(owner, spec, now));
                    }
                }
                Some(Command::Remove(owner)) => {
                    let before = streams.len();
                    streams.retain(|s| s.owner != owner);
                    stats.streams_active.fetch_sub((before - streams.len()) as u64, Ordering::Relaxed);
                }
                None => return,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                let mut late = Duration::ZERO;
                for stream in &mut streams {
                    late = late.max(stream.send_due(now, &stats));
                }
                let late = late.as_micros() as u64;
                stats.max_late_us.fetch_max(late, Ordering::Relaxed);
                stats.max_late_us_ever.fetch_max(late, Ordering::Relaxed);
            }
        }
    }
}

/// A UDP socket for RTP with a small receive buffer: what the gateway sends back (keep-alive audio, RTCP)
/// is not read, and must not pile up in the kernel.
pub fn bind_rtp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_recv_buffer_size(4096)?;
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
