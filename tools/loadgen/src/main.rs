//! `loadgen uas ...`: N SIP user agents answering calls; `loadgen rtp ...`: RTP streams to fixed ports, no SIP.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use loadgen::media::{tone_ulaw, Audio, Video};
use loadgen::rtp::{bind_rtp_socket, Pacers, RtpStats, Source, StreamCounters, StreamSpec};
use loadgen::uas::{self, Control, Uas, UasConfig, UasStats};

#[derive(Parser)]
#[command(name = "loadgen", about = "sipcast capacity benchmark load generator")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// N SIP user agents (users <prefix>0..<prefix>N-1) on one UDP socket that answer the gateway's calls and
    /// stream RTP from the prepared media.
    Uas(UasArgs),
    /// RTP streams to fixed ports without SIP (feeds one ffmpeg per call for the baseline).
    Rtp(RtpArgs),
}

#[derive(Args)]
struct MediaArgs {
    /// Raw G.711 mu-law file (8 kHz), looped; default: a computed 440 Hz tone.
    #[arg(long)]
    audio_file: Option<PathBuf>,
    /// H.264 Annex-B file starting with SPS/PPS/IDR, looped (needed for --video).
    #[arg(long)]
    video_file: Option<PathBuf>,
    /// Frame rate of --video-file.
    #[arg(long, default_value_t = 25)]
    fps: u32,
    /// Stream video too (H.264 packetization-mode=1).
    #[arg(long)]
    video: bool,
    /// Pacer tasks sending RTP.
    #[arg(long, default_value_t = 2)]
    pacers: usize,
    /// Stop after this many seconds (hanging up first).
    #[arg(long)]
    duration: Option<f64>,
    /// Write figures as JSON to this file every second (and at exit).
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// Worker threads of the runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Args)]
struct UasArgs {
    /// SIP socket (port 0: any; the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:5070")]
    sip: SocketAddr,
    /// Number of user agents.
    #[arg(long, default_value_t = 10)]
    users: u32,
    /// User name prefix: users are <prefix>0, <prefix>1, ...
    #[arg(long, default_value = "ua")]
    prefix: String,
    /// RTP port range of the callees, e.g. 40000-59999.
    #[arg(long, default_value = "40000-59999")]
    rtp_ports: String,
    /// Each call hangs up (BYE) this many seconds after it was established.
    #[arg(long)]
    hangup_after: Option<f64>,
    /// Delay between 180 Ringing and 200 OK, ms.
    #[arg(long, default_value_t = 0)]
    ring_ms: u64,
    /// Exit once this many calls have ended.
    #[arg(long)]
    exit_after_calls: Option<u64>,
    #[command(flatten)]
    media: MediaArgs,
}

#[derive(Args)]
struct RtpArgs {
    /// Destination address.
    #[arg(long, default_value = "127.0.0.1")]
    dest_ip: IpAddr,
    /// Audio of stream i goes to base_port + i*stride; video (with --video) to that + 2.
    #[arg(long)]
    base_port: u16,
    #[arg(long)]
    count: u32,
    #[arg(long, default_value_t = 4)]
    stride: u16,
    /// Payload types.
    #[arg(long, default_value_t = 0)]
    audio_pt: u8,
    #[arg(long, default_value_t = 96)]
    video_pt: u8,
    #[command(flatten)]
    media: MediaArgs,
}

fn load_media(args: &MediaArgs) -> anyhow::Result<(Audio, Option<Video>)> {
    let audio = match &args.audio_file {
        Some(path) => Audio::from_ulaw(
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )?,
        None => Audio::from_ulaw(tone_ulaw(440.0, 10))?,
    };
    let video = if args.video {
        let path = args
            .video_file
            .as_ref()
            .context("--video needs --video-file (H.264 Annex-B)")?;
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Some(Video::from_annexb(&data, args.fps)?)
    } else {
        None
    };
    Ok((audio, video))
}

fn write_stats(path: &Path, value: &Value) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, value.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

fn rtp_json(stats: &RtpStats, window_late_us: u64) -> Value {
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    json!({
        "packets": g(&stats.packets),
        "bytes": g(&stats.bytes),
        "send_errors": g(&stats.send_errors),
        "streams_active": g(&stats.streams_active),
        "max_late_ms_last_second": window_late_us as f64 / 1000.0,
        "max_late_ms": g(&stats.max_late_us_ever) as f64 / 1000.0,
    })
}

/// A watch that turns true on SIGTERM, SIGINT or when `duration` has passed.
fn stop_signal(duration: Option<f64>) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        let sleep = async {
            match duration {
                Some(d) if d.is_finite() && d >= 0.0 => {
                    tokio::time::sleep(Duration::from_secs_f64(d)).await
                }
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
            _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
            _ = sleep => {}
        }
        let _ = tx.send(true);
        // Keep the sender alive so receivers see `true`, not a closed channel.
        std::future::pending::<()>().await;
    });
    rx
}

fn parse_range(range: &str) -> anyhow::Result<(u16, u16)> {
    let (lo, hi) = range
        .split_once('-')
        .context("--rtp-ports wants LOW-HIGH")?;
    let (lo, hi): (u16, u16) = (lo.trim().parse()?, hi.trim().parse()?);
    anyhow::ensure!(lo < hi && hi < u16::MAX, "--rtp-ports: LOW < HIGH < 65535");
    Ok((lo, hi))
}

async fn run_uas(args: UasArgs) -> anyhow::Result<()> {
    let (audio, video) = load_media(&args.media)?;
    let socket = {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(
            Domain::for_address(args.sip),
            Type::DGRAM,
            Some(Protocol::UDP),
        )?;
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(4 << 20);
        s.bind(&args.sip.into())
            .with_context(|| format!("binding the SIP socket {}", args.sip))?;
        s.set_nonblocking(true)?;
        Arc::new(tokio::net::UdpSocket::from_std(s.into())?)
    };
    let local = socket.local_addr()?;
    let rtp_stats = Arc::new(RtpStats::default());
    let pacers = Pacers::spawn(args.media.pacers, rtp_stats.clone());
    let stats = Arc::new(UasStats::default());
    let config = UasConfig {
        advertised: local.ip(),
        users: args.users,
        prefix: args.prefix.clone(),
        want_video: args.media.video,
        audio,
        video,
        rtp_ports: parse_range(&args.rtp_ports)?,
        hangup_after: args
            .hangup_after
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64),
        ring: Duration::from_millis(args.ring_ms),
        t1: Duration::from_millis(500),
        verbose: args.media.verbose,
    };
    let uas = Uas::new(config, socket, pacers, stats.clone())?;
    let (_control_tx, control_rx) = tokio::sync::mpsc::unbounded_channel::<Control>();
    let stop = stop_signal(args.media.duration);
    println!(
        "loadgen ready sip={local} users={} prefix={}",
        args.users, args.prefix
    );
    let started = Instant::now();
    let stats_task = args.media.stats_file.clone().map(|path| {
        let (stats, rtp_stats) = (stats.clone(), rtp_stats.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let late = rtp_stats.take_max_late_us();
                let value = json!({
                    "mode": "uas", "uptime_s": started.elapsed().as_secs_f64(),
                    "sip": stats.to_json(), "rtp": rtp_json(&rtp_stats, late),
                });
                write_stats(&path, &value);
            }
        })
    });
    let uas = uas::run(uas, control_rx, stop, args.exit_after_calls).await;
    if let Some(task) = stats_task {
        task.abort();
    }
    let summary = json!({
        "mode": "uas", "uptime_s": started.elapsed().as_secs_f64(),
        "sip": stats.to_json(), "rtp": rtp_json(&rtp_stats, rtp_stats.take_max_late_us()),
        "calls": uas.reports().iter().map(|r| r.to_json()).collect::<Vec<_>>(),
    });
    if let Some(path) = &args.media.stats_file {
        write_stats(path, &summary);
    }
    println!("loadgen summary {summary}");
    Ok(())
}

async fn run_rtp(args: RtpArgs) -> anyhow::Result<()> {
    let (audio, video) = load_media(&args.media)?;
    let rtp_stats = Arc::new(RtpStats::default());
    let pacers = Pacers::spawn(args.media.pacers, rtp_stats.clone());
    let local = SocketAddr::new(
        if args.dest_ip.is_ipv4() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
        },
        0,
    );
    let mut keep = Vec::new();
    for i in 0..args.count {
        let port = u32::from(args.base_port) + i * u32::from(args.stride);
        let port = u16::try_from(port).context("base_port + count*stride exceeds 65535")?;
        let counters = Arc::new(StreamCounters::default());
        let socket = Arc::new(bind_rtp_socket(local)?);
        let mut streams = vec![StreamSpec {
            socket: socket.clone(),
            destination: SocketAddr::new(args.dest_ip, port),
            source: Source::Audio {
                payload_type: args.audio_pt,
                audio: audio.clone(),
            },
            counters: counters.clone(),
        }];
        if let Some(video) = &video {
            let vsocket = Arc::new(bind_rtp_socket(local)?);
            streams.push(StreamSpec {
                socket: vsocket.clone(),
                destination: SocketAddr::new(
                    args.dest_ip,
                    port.checked_add(2).context("video port exceeds 65535")?,
                ),
                source: Source::Video {
                    payload_type: args.video_pt,
                    video: video.clone(),
                },
                counters: counters.clone(),
            });
            keep.push(vsocket);
        }
        keep.push(socket);
        pacers.add(u64::from(i), streams);
    }
    println!("loadgen ready rtp streams={}", args.count);
    let started = Instant::now();
    let mut stop = stop_signal(args.media.duration);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {
                if let Some(path) = &args.media.stats_file {
                    let late = rtp_stats.take_max_late_us();
                    write_stats(path, &json!({
                        "mode": "rtp", "uptime_s": started.elapsed().as_secs_f64(),
                        "rtp": rtp_json(&rtp_stats, late),
                    }));
                }
            }
        }
    }
    let summary = json!({"mode": "rtp", "uptime_s": started.elapsed().as_secs_f64(),
        "rtp": rtp_json(&rtp_stats, rtp_stats.take_max_late_us())});
    if let Some(path) = &args.media.stats_file {
        write_stats(path, &summary);
    }
    println!("loadgen summary {summary}");
    drop(keep);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = match &cli.mode {
        Mode::Uas(a) => a.media.threads,
        Mode::Rtp(a) => a.media.threads,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.mode {
            Mode::Uas(args) => run_uas(args).await,
            Mode::Rtp(args) => run_rtp(args).await,
        }
    })
}
