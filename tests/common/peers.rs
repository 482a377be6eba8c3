//! Real test peers on loopback: an RTMP server ([`Nginx`]), SIP user agents ([`Baresip`]) and a
//! digest-challenging SIP proxy/registrar ([`Kamailio`]).
//!
//! Every peer picks fresh ports, keeps all its files in a temporary directory it owns (kept when
//! `SIPCAST_KEEP_TEST_DIRS` is set), captures stdout+stderr to a log file, and is stopped on drop
//! (SIGTERM, then SIGKILL after a short grace), also when the test panics; on a panic the last log
//! lines are printed.
//!
//! Pitfalls found while building this (Debian 12: baresip 1.0.0, kamailio 5.6.3, nginx 1.22.1 +
//! nginx-rtmp 1.1.4):
//!
//! baresip
//! - It prints a call status line (`[0:00:03] audio=64000/64000 (bit/s)`) every 100 ms, framed
//!   with `\r` and no newline, from the `menu` module (which provides `dial`/`hangup`, so it cannot
//!   be left out; only the in-call command `statmode` toggles it); errors carry ANSI colour codes.
//!   [`Baresip::log`] strips both. With video the line goes on after `(bit/s)`
//!   (`... (bit/s) efps=25.0/25.0`).
//! - `<peer>: session closed: <reason>` is printed both for a BYE from the remote side (reason
//!   exactly `Connection reset by peer`) and for a failed outgoing call (`407 Proxy
//!   Authentication Required`, `486 Busy Here`, ...); a CANCEL of a ringing incoming call gives
//!   the same `Connection reset by peer` as a BYE: the following `audio: destroyed (started=1)`
//!   (BYE of an established call) vs `(started=0)` (CANCEL) tells them apart. A local hangup prints
//!   `call: terminate call '<id>' with <peer>` and no "session closed" line.
//! - `<aor>: Call with <peer> terminated (duration: N secs)` is only printed for calls that lasted
//!   1 s or more; `audio: destroyed (started=1)` marks the end of every call that had media
//!   (`started=0` for a call that failed before media).
//! - `rtp_timeout` is a *config* setting in 1.0 (`rtp_timeout 2`); `;rtp_timeout=N` on the
//!   account line is silently ignored. It counts from call establishment, so it also fires when
//!   no RTP ever arrived (measured: BYE 2.0 s after the 200 with `rtp_timeout 2`). It logs
//!   `stream: no audio RTP packets received for N milliseconds`,
//!   `call: error in "audio" rtp stream (Connection timed out)`, then sends BYE. It watches
//!   *every* stream: a sendrecv video stream without video RTP ends the call just the same
//!   (`error in "video" rtp stream`). Streams that are not sendrecv (on hold; video answered
//!   sendonly to a recvonly offer) are not watched; it then prints
//!   `check_rtp: not checking (dir=sendonly)` every second.
//! - Video (`baresip-ffmpeg` for `avformat`/`avcodec`): config `module avcodec.so` (H.264, plus
//!   H263/MP4V-ES/H265) and/or `module vp8.so`, `module avformat.so` +
//!   `video_source avformat,FILE` (a *video-only* file: an audio track makes avformat decode
//!   audio with no audio source set up, which crashed it; a comma in FILE is read as
//!   `FORMAT,DEVICE`; at EOF it sleeps 1 s and rewinds), and a display: without
//!   `video_display` it offers video `sendonly` and answers a sendonly offer `inactive`, so
//!   `module fakevideo.so` + `video_display fakevideo,nil` are always set here (fakevideo is
//!   also a still colour-bar source: `video_source fakevideo,nil`). `video_size` sizes only
//!   fakevideo frames; a file keeps its own size. Do not set `video_codecs=H264` on the
//!   account: lookup by name keeps only the first H.264 variant (packetization-mode=0).
//! - As answerer it keeps the offer's order, answers *every* offered format it supports (the
//!   gateway's 96 H.264 mode 1, 97 mode 0, 98 VP8 all come back with their fmtp, plus
//!   `a=rtcp-fb:* nack pli`, `a=framerate:25.00`, `a=label:2`) and sends with the first; as
//!   offerer it lists avcodec's formats first (96 H.264 mode 0, 97 mode 1, 34 H263, 98
//!   MP4V-ES, 99 H265) then VP8 (100; 96 when alone), so two baresips use H.264 mode 0.
//!   Log lines: `Set video encoder: H264 packetization-mode=1 (500000 bit/s, 25.00 fps)`,
//!   `Set video decoder: ...`, `stream: incoming rtp for 'video' established, ...`,
//!   `video: receiving with resolution 320 x 240 and format 'yuv420p'` (first decoded frame).
//! - DTMF received by RTP telephone-event: `received event: '5' (end=0)` then `(end=1)` per
//!   digit (no prefix; repeated digits are separate events); by SIP INFO
//!   (`application/dtmf-relay`, `Signal=5`/`Duration=160`): `call: received DTMF: '5'
//!   (duration=160)`, answered 200 (other INFO bodies get 488). Sending: ctrl `sndcode 123#`
//!   (RTP only; `audio: send DTMF digit: '1'`). 1.0 has no `dtmfmode`: it cannot send INFO.
//! - Hold: ctrl `hold`/`resume` (in-call commands, like `sndcode`; unknown outside a call) log
//!   `call: hold <peer>`/`call: resume <peer>` and send a re-INVITE with all streams
//!   `a=sendonly` (the held baresip answers `a=recvonly`) / `a=sendrecv`.
//! - `-s` prints each SIP message sent or received (`ESC[36;1m#`, `UDP <src> -> <dst>`, the
//!   message, `ESC[;m`) to unbuffered stdout: [`Baresip::sip_trace`] parses the raw log.
//! - It binds its SIP port on UDP *and* TCP, so the port must be free for both; it exits with
//!   status 98 when the SIP port is taken, but when the ctrl_tcp port is taken it only logs
//!   `ctrl_tcp: failed to listen` and runs on without a control socket (detected here).
//! - ctrl_tcp speaks netstrings (`LEN:JSON,`) both ways: send
//!   `{"command":"dial","params":"sip:..","token":"t1"}`; the answer
//!   `{"response":true,"ok":true,"data":"..","token":"t1"}` can be preceded by event messages
//!   (`{"event":true,"type":"CALL_RINGING",..}`) on the same connection.
//! - It registers its Contact as `sip:<user>-0x<hex>@127.0.0.1:<port>` and accepts INVITEs to
//!   that user too (so a registrar's lookup reaches it). The outbound proxy is the account
//!   parameter `outbound="sip:HOST:PORT"`; the AOR's host:port is where it REGISTERs.
//! - `aufile` refuses a WAV whose rate/channels differ from `ausrc_srate`/`ausrc_channels`
//!   (`must have sample-rate 48000 Hz`); the call then fails (`session closed: No such device`,
//!   and a BYE if already answered).
//! - It exits within milliseconds on SIGTERM (sending BYE / un-REGISTER first). (From a shell,
//!   `( baresip ... & )` looks alive ~1 s longer to `kill -0`: it is a zombie until init reaps it.)
//!
//! nginx-rtmp
//! - `record_unique on` appends the publish start time in *seconds* to the file name: two
//!   publishes of one stream name starting within the same second share one name. With
//!   `record_append on` (set here) the second is appended to the first file instead of
//!   overwriting it (timestamps continue; ffmpeg warns about non-monotonic DTS at the seam).
//! - Its http temp paths, pid and error log must be under its own prefix, and `access_log` must be
//!   inside `rtmp {}`, or it touches /var/log/nginx and /var/lib/nginx.
//! - The stat XML has a newline after `<stream>`; `<publishing/>` appears both per client and
//!   per stream.
//! - A successful connect to a fresh port does not prove it is *this* nginx (another test may
//!   have grabbed the port meanwhile): readiness also waits for its `getrlimit(` log line, written
//!   after its listening sockets are bound.
//!
//! kamailio
//! - With `-DD` it still forks worker children: SIGKILL on the main process alone would leave
//!   them running, so a forced stop kills all descendants (found via /proc). SIGTERM is clean.
//! - An empty `event_route[htable:mod-init] {}` is a config syntax error (no users given).
//! - Readiness is only observable over SIP: the harness pings it with OPTIONS, answered with an
//!   `X-Sipcast-Instance` header so that a foreign server on a reused port is not mistaken for it.
//! - Requests without credentials must be challenged before `pv_*_authenticate` is called, or it
//!   logs errors; `$au` (not `$fU`) names the user whose password is checked.
//! - A de-REGISTER (expires=0) also goes through `save("location")`: logged separately here.
//!
//! Ports: fresh ports come from binding port 0, so with several test *processes* in parallel a
//! port can be taken between the check and the peer's bind. Every start retries with fresh ports
//! (up to 3 times) when that happens.
use super::{free_tcp_port, free_udp_port, free_udp_tcp_port, wait_until};
use std::cell::{Cell, RefCell};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Environment variable that keeps the peers' temporary directories (logs, configs, recordings).
pub const KEEP_DIRS_ENV: &str = "SIPCAST_KEEP_TEST_DIRS";
/// How long a peer may take to become ready.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How many times a start is retried with fresh ports when a port was taken in the meantime.
const START_ATTEMPTS: usize = 3;
/// Lines of log shown in panic messages.
const TAIL_LINES: usize = 40;

// ---------------------------------------------------------------------------------------------
// Directories and processes
// ---------------------------------------------------------------------------------------------

/// A peer's working directory: removed on drop unless `SIPCAST_KEEP_TEST_DIRS` is set.
pub struct PeerDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl PeerDir {
    /// Creates a fresh temporary directory named `sipcast-<prefix>-XXXX`.
    pub fn new(prefix: &str) -> PeerDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("sipcast-{prefix}-"))
            .tempdir()
            .expect("cannot create a temporary directory");
        let path = dir.path().to_path_buf();
        PeerDir {
            dir: Some(dir),
            path,
        }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PeerDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            if std::env::var_os(KEEP_DIRS_ENV).is_some() {
                let path = dir.keep();
                eprintln!("[peers] kept {}", path.display());
            }
        }
    }
}

/// Turns a raw log into readable text (used for baresip's status-line noise).
type LogCleaner = fn(&str) -> String;

/// A child process whose stdout+stderr go to a log file; stopped (and reaped) on drop.
pub struct PeerProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    grace: Duration,
    cleaner: LogCleaner,
    exit: Option<ExitStatus>,
    /// Set once a panic message included the log tail (not repeated on drop).
    tail_shown: Cell<bool>,
    /// Cleaned log up to the last complete line read so far, and the raw bytes it covers
    /// (polling re-reads only what was appended).
    log_cache: RefCell<(u64, String)>,
}

impl PeerProcess {
    /// Spawns `cmd` with stdin from /dev/null and stdout+stderr appended to `log_path`.
    pub fn spawn(name: &str, mut cmd: Command, log_path: &Path, grace: Duration) -> PeerProcess {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap_or_else(|e| panic!("{name}: cannot open log {}: {e}", log_path.display()));
        let err = log.try_clone().expect("cannot duplicate log file handle");
        cmd.stdin(Stdio::null()).stdout(log).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {:?}: {e}", cmd.get_program()));
        PeerProcess {
            name: name.to_string(),
            child,
            log_path: log_path.to_path_buf(),
            grace,
            cleaner: |s| s.to_string(),
            exit: None,
            tail_shown: Cell::new(false),
            log_cache: RefCell::new((0, String::new())),
        }
    }

    /// The name used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Path of the captured stdout+stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The captured output, cleaned of status-line noise.
    pub fn log(&self) -> String {
        let mut cache = self.log_cache.borrow_mut();
        let mut fresh = Vec::new();
        if let Ok(mut file) = File::open(&self.log_path) {
            if file.seek(SeekFrom::Start(cache.0)).is_ok() {
                let _ = file.read_to_end(&mut fresh);
            }
        }
        // Complete lines go to the cache; a partial last line is cleaned but not cached.
        let complete = fresh.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let cleaned = (self.cleaner)(&String::from_utf8_lossy(&fresh[..complete]));
        cache.1.push_str(&cleaned);
        cache.0 += complete as u64;
        let mut log = cache.1.clone();
        log.push_str(&(self.cleaner)(&String::from_utf8_lossy(
            &fresh[complete..],
        )));
        log
    }

    /// The cleaned output written after the first `offset` bytes of the log file.
    pub fn log_since(&self, offset: u64) -> String {
        let mut raw = Vec::new();
        if let Ok(mut file) = File::open(&self.log_path) {
            if file.seek(SeekFrom::Start(offset)).is_ok() {
                let _ = file.read_to_end(&mut raw);
            }
        }
        (self.cleaner)(&String::from_utf8_lossy(&raw))
    }

    /// The last `n` lines of [`PeerProcess::log`].
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Panics with `msg`, the log path and the log's tail.
    pub fn fail(&self, msg: &str) -> ! {
        self.tail_shown.set(true);
        panic!(
            "{}: {msg}\n--- last lines of {} ---\n{}\n---",
            self.name,
            self.log_path.display(),
            self.log_tail(TAIL_LINES)
        )
    }

    /// The exit status if the process has exited (reaps it), else None.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait failed");
        }
        self.exit
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || !self.is_running());
        self.exit_status()
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`, ...) to the process.
    pub fn signal(&mut self, signal: &str) {
        if self.is_running() {
            send_signal(self.pid(), signal);
        }
    }

    /// Stops the process: SIGTERM, then SIGKILL (with all descendants) after the grace period.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.exit_status() {
            return status;
        }
        send_signal(self.pid(), "TERM");
        // A test may have stopped the process (SIGSTOP) to simulate a hang: let it see the TERM.
        send_signal(self.pid(), "CONT");
        match self.wait_exit(self.grace) {
            Some(status) => status,
            None => self.kill(),
        }
    }

    /// Kills the process and all its descendants with SIGKILL at once, and reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.exit_status() {
            return status;
        }
        let descendants = descendants_of(self.pid());
        send_signal(self.pid(), "KILL");
        for pid in descendants {
            send_signal(pid, "KILL");
        }
        let status = self.child.wait().expect("wait failed");
        self.exit = Some(status);
        status
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.tail_shown.get() {
            eprintln!(
                "[peers] {} (pid {}) log {} (set {KEEP_DIRS_ENV}=1 to keep it); last lines:\n{}\n---",
                self.name,
                self.child.id(),
                self.log_path.display(),
                self.log_tail(TAIL_LINES)
            );
        }
        self.terminate();
    }
}

/// Sends `signal` (a name as understood by kill(1)) to `pid`, ignoring a vanished process.
pub fn send_signal(pid: u32, signal: &str) {
    // std has no kill(2) and the workspace denies unsafe code: use kill(1).
    let _ = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// All (transitive) child processes of `pid`, read from /proc.
pub fn descendants_of(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
            let after_comm = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
            if let Some(ppid) = after_comm
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
            {
                parent_of.push((child, ppid));
            }
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// What a readiness probe saw in a freshly started peer.
enum Probe {
    /// Fully up on its own ports.
    Ready,
    /// Not yet.
    Pending,
    /// One of its fresh ports was taken by someone else meanwhile: restart with new ports.
    PortTaken,
}

/// Waits until `probe` says ready (true), or a port conflict / early exit with "Address already
/// in use" warrants a retry with fresh ports (false); panics with the log on any other failure
/// or after [`STARTUP_TIMEOUT`]. A process that is not ready is stopped before returning false.
/// `log_offset`: where this start's output begins in the log (restarts append to it).
fn await_startup(
    process: &mut PeerProcess,
    attempt: usize,
    log_offset: u64,
    mut probe: impl FnMut(&str) -> Probe,
) -> bool {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let running = process.is_running();
        let log = process.log_since(log_offset);
        let log = log.as_str();
        let outcome = if running {
            probe(log)
        } else if log.contains("Address already in use") {
            Probe::PortTaken
        } else {
            let status = process.exit_status();
            process.fail(&format!("exited during startup ({status:?})"))
        };
        match outcome {
            Probe::Ready => return true,
            Probe::PortTaken if attempt < START_ATTEMPTS => {
                eprintln!(
                    "[peers] {}: a port was taken meanwhile, retrying",
                    process.name
                );
                process.kill();
                return false;
            }
            Probe::PortTaken => process.fail("a port was taken meanwhile, giving up"),
            Probe::Pending if Instant::now() >= deadline => {
                process.fail(&format!("not ready after {STARTUP_TIMEOUT:?}"))
            }
            Probe::Pending => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Length of the log file in bytes (0 when missing): where the next start's output begins.
fn log_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Whether a TCP connection to 127.0.0.1:`port` is accepted.
fn tcp_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Polls `log` for `pattern` until found (true) or `timeout` passes (false).
fn wait_for_text(timeout: Duration, pattern: &str, log: impl Fn() -> String) -> bool {
    wait_until(timeout, || log().contains(pattern))
}

// ---------------------------------------------------------------------------------------------
// nginx with the RTMP module
// ---------------------------------------------------------------------------------------------

/// An own nginx instance with nginx-rtmp: `rtmp://127.0.0.1:PORT/live/<stream>` is recorded to
/// `<dir>/recordings/<stream>-<unix time>.flv`; `http://127.0.0.1:HTTP/stat` gives XML stats and
/// `/control` nginx-rtmp's control API.
pub struct Nginx {
    process: Option<PeerProcess>,
    rtmp_port: u16,
    http_port: u16,
    /// With [`Nginx::start_with_tls`]: a TLS port (nginx `stream {}` with ssl) in front of the RTMP port.
    tls_port: Option<u16>,
    dir: PeerDir,
}

impl Nginx {
    /// Starts nginx on fresh ports and waits until its RTMP and HTTP ports accept connections.
    pub fn start() -> Nginx {
        Self::start_inner(false)
    }

    /// Like [`Nginx::start`], plus `rtmps://127.0.0.1:TLS/live`: TLS terminated by nginx's stream
    /// module with a self-signed certificate for 127.0.0.1 made at start (openssl), proxied to RTMP.
    pub fn start_with_tls() -> Nginx {
        Self::start_inner(true)
    }

    fn start_inner(tls: bool) -> Nginx {
        let dir = PeerDir::new("nginx");
        fs::create_dir_all(dir.path().join("recordings")).unwrap();
        if tls {
            let status = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=127.0.0.1",
                ])
                .args(["-addext", "subjectAltName=IP:127.0.0.1"])
                .arg("-keyout")
                .arg(dir.path().join("key.pem"))
                .arg("-out")
                .arg(dir.path().join("cert.pem"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl is installed");
            assert!(
                status.success(),
                "openssl could not make a test certificate"
            );
        }
        let mut nginx = Nginx {
            process: None,
            rtmp_port: 0,
            http_port: 0,
            tls_port: None,
            dir,
        };
        for attempt in 1..=START_ATTEMPTS {
            nginx.rtmp_port = free_tcp_port();
            nginx.http_port = free_tcp_port();
            nginx.tls_port = tls.then(free_tcp_port);
            fs::write(nginx.dir.path().join("nginx.conf"), nginx.config()).unwrap();
            if nginx.spawn(attempt) {
                return nginx;
            }
        }
        unreachable!()
    }

    /// Spawns nginx with the existing config and waits for readiness (false: retry).
    fn spawn(&mut self, attempt: usize) -> bool {
        let d = self.dir.path();
        let log_path = d.join("nginx.log");
        let log_offset = log_len(&log_path);
        let mut cmd = Command::new("nginx");
        cmd.arg("-p").arg(d).arg("-c").arg(d.join("nginx.conf"));
        cmd.arg("-e").arg(&log_path);
        let mut process = PeerProcess::spawn("nginx", cmd, &log_path, Duration::from_secs(3));
        let (rtmp, http, tls) = (self.rtmp_port, self.http_port, self.tls_port);
        // nginx logs getrlimit() after it has bound its listening sockets: only then can a
        // successful connect not be to someone else's server.
        let ok = await_startup(&mut process, attempt, log_offset, |log| {
            if log.contains("Address already in use") {
                Probe::PortTaken
            } else if log.contains("getrlimit(")
                && tcp_accepts(rtmp)
                && tcp_accepts(http)
                && tls.is_none_or(tcp_accepts)
            {
                Probe::Ready
            } else {
                Probe::Pending
            }
        });
        self.process = Some(process);
        ok
    }

    fn config(&self) -> String {
        let d = self.dir.path().display();
        let (stream_module, stream_block) = match self.tls_port {
            Some(tls) => (
                "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n".to_owned(),
                format!(
                    "stream {{\n    server {{\n        listen 127.0.0.1:{tls} ssl;\n        ssl_certificate {d}/cert.pem;\n        \
                     ssl_certificate_key {d}/key.pem;\n        proxy_pass 127.0.0.1:{};\n    }}\n}}\n",
                    self.rtmp_port
                ),
            ),
            None => (String::new(), String::new()),
        };
        format!(
            r#"{stream_module}load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx.log info;
events {{ worker_connections 256; }}
rtmp {{
    access_log {d}/rtmp_access.log;
    server {{
        listen 127.0.0.1:{rtmp};
        application live {{
            live on;
            record all;
            record_path {d}/recordings;
            record_unique on;
            record_append on;
        }}
    }}
}}
http {{
    access_log {d}/http_access.log;
    client_body_temp_path {d}/tmp_body;
    proxy_temp_path {d}/tmp_proxy;
    fastcgi_temp_path {d}/tmp_fastcgi;
    uwsgi_temp_path {d}/tmp_uwsgi;
    scgi_temp_path {d}/tmp_scgi;
    server {{
        listen 127.0.0.1:{http};
        location /stat {{ rtmp_stat all; }}
        location /control {{ rtmp_control all; }}
    }}
}}
{stream_block}"#,
            rtmp = self.rtmp_port,
            http = self.http_port
        )
    }

    fn process(&self) -> &PeerProcess {
        self.process.as_ref().expect("nginx process")
    }

    fn process_mut(&mut self) -> &mut PeerProcess {
        self.process.as_mut().expect("nginx process")
    }

    /// The RTMP port.
    pub fn rtmp_port(&self) -> u16 {
        self.rtmp_port
    }

    /// The HTTP port (`/stat`, `/control`).
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// `rtmp://127.0.0.1:PORT/live`: the application URL (append `/<stream>` to publish).
    pub fn rtmp_url(&self) -> String {
        format!("rtmp://127.0.0.1:{}/live", self.rtmp_port)
    }

    /// `rtmps://127.0.0.1:TLS/live` (only with [`Nginx::start_with_tls`]).
    pub fn rtmps_url(&self) -> String {
        format!(
            "rtmps://127.0.0.1:{}/live",
            self.tls_port.expect("started with TLS")
        )
    }

    /// `rtmp://127.0.0.1:PORT/live/<stream>`.
    pub fn stream_url(&self, stream: &str) -> String {
        format!("{}/{stream}", self.rtmp_url())
    }

    /// Directory holding the FLV recordings.
    pub fn recordings_dir(&self) -> PathBuf {
        self.dir.path().join("recordings")
    }

    /// The recordings of `stream` (`<stream>-<unix time>.flv`), oldest first (by mtime).
    pub fn recordings(&self, stream: &str) -> Vec<PathBuf> {
        let prefix = format!("{stream}-");
        let mut found: Vec<(SystemTime, PathBuf)> = fs::read_dir(self.recordings_dir())
            .map(|entries| entries.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix(&prefix))
                    .and_then(|rest| rest.strip_suffix(".flv"))
                    .is_some_and(|ts| !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|p| {
                let mtime = fs::metadata(&p).and_then(|m| m.modified());
                (mtime.unwrap_or(SystemTime::UNIX_EPOCH), p)
            })
            .collect();
        found.sort();
        found.into_iter().map(|(_, p)| p).collect()
    }

    /// Does an HTTP/1.0 GET of `path_and_query` on the HTTP port and returns (status, body).
    pub fn http_get(&self, path_and_query: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.http_port))
            .unwrap_or_else(|e| self.process().fail(&format!("HTTP connect failed: {e}")));
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(
            stream,
            "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .unwrap_or_else(|e| self.process().fail(&format!("HTTP read failed: {e}")));
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, body.to_string())
    }

    /// The nginx-rtmp statistics page (`rtmp_stat all`) as XML.
    pub fn stat_xml(&self) -> String {
        let (status, body) = self.http_get("/stat");
        if status != 200 {
            self.process().fail(&format!("GET /stat answered {status}"));
        }
        body
    }

    /// The live streams listed on the stat page.
    pub fn stream_stats(&self) -> Vec<RtmpStreamStat> {
        parse_stream_stats(&self.stat_xml())
    }

    /// Whether `stream` currently has a publisher (according to the stat page).
    pub fn is_publishing(&self, stream: &str) -> bool {
        self.stream_stats()
            .iter()
            .any(|s| s.name == stream && s.publishing)
    }

    /// Waits until `stream` has a publisher.
    pub fn wait_for_publishing(&self, stream: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.is_publishing(stream))
    }

    /// Waits until `stream` has no publisher any more (its recording is then closed).
    pub fn wait_for_publish_end(&self, stream: &str, timeout: Duration) -> bool {
        wait_until(timeout, || !self.is_publishing(stream))
    }

    /// Disconnects the publisher of `stream` via the control API (simulates a server-side drop).
    pub fn drop_publisher(&self, stream: &str) -> bool {
        let (status, _) = self.http_get(&format!("/control/drop/publisher?app=live&name={stream}"));
        status == 200
    }

    /// Path of nginx's error log (which is also its captured output).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nginx.log")
    }

    /// nginx's error log.
    pub fn log(&self) -> String {
        self.process().log()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        self.process().log_tail(n)
    }

    /// Panics with `msg` and nginx's log tail.
    pub fn fail(&self, msg: &str) -> ! {
        self.process().fail(msg)
    }

    /// Kills nginx abruptly (SIGKILL, like a crash); RTMP connections are reset.
    pub fn kill(&mut self) {
        self.process_mut().kill();
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...) to nginx.
    pub fn signal(&mut self, signal: &str) {
        self.process_mut().signal(signal);
    }

    /// Stops nginx gracefully (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        self.process_mut().terminate();
    }

    /// Starts a stopped/killed nginx again on the same ports and directory; waits for readiness.
    pub fn restart(&mut self) {
        if let Some(mut old) = self.process.take() {
            old.terminate();
        }
        if !self.spawn(START_ATTEMPTS) {
            unreachable!("the last attempt panics instead of retrying");
        }
    }

    /// Stops nginx gracefully and starts it again on the same ports.
    pub fn stop_and_restart(&mut self) {
        self.stop();
        self.restart();
    }
}

/// One live stream from nginx-rtmp's stat page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RtmpStreamStat {
    /// Stream name.
    pub name: String,
    /// Whether a publisher is connected.
    pub publishing: bool,
    /// Bytes received from the publisher so far.
    pub bytes_in: u64,
    /// Connected clients (publisher and players).
    pub clients: u32,
    /// Audio codec from the stream metadata (`AAC`, ...), if announced.
    pub audio_codec: Option<String>,
    /// Video codec from the stream metadata (`H264`, ...), if announced.
    pub video_codec: Option<String>,
}

/// Extracts the `<stream>` entries of an nginx-rtmp stat XML (a tiny ad-hoc parser).
fn parse_stream_stats(xml: &str) -> Vec<RtmpStreamStat> {
    fn tag<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].trim())
    }
    xml.split("<stream>")
        .skip(1)
        .map(|block| {
            let block = block.split("</stream>").next().unwrap_or("");
            // The stream's own fields follow its clients; <meta> holds the codecs.
            let own = block.rsplit("</client>").next().unwrap_or(block);
            let meta = tag(block, "meta").unwrap_or("");
            RtmpStreamStat {
                name: tag(block, "name").unwrap_or("").to_string(),
                publishing: own.contains("<publishing/>"),
                bytes_in: tag(block, "bytes_in")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                clients: tag(own, "nclients")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                audio_codec: tag(meta, "audio")
                    .and_then(|a| tag(a, "codec"))
                    .map(str::to_string),
                video_codec: tag(meta, "video")
                    .and_then(|v| tag(v, "codec"))
                    .map(str::to_string),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// baresip
// ---------------------------------------------------------------------------------------------

/// baresip log fragment of an established call: `<user>@127.0.0.1: Call established: <peer>`.
pub const BARESIP_ESTABLISHED: &str = ": Call established: ";
/// baresip log line end when the remote side ended the call: `<peer>: session closed: ...`.
/// Both a BYE and a CANCEL give this; see [`Baresip::bye_count`] / [`Baresip::cancel_count`].
pub const BARESIP_REMOTE_BYE: &str = ": session closed: Connection reset by peer";
/// baresip log fragment of any closed SIP session (BYE received, or a failed outgoing call).
pub const BARESIP_SESSION_CLOSED: &str = ": session closed: ";
/// baresip log fragment when it hangs up itself (ctrl `hangup`): `call: terminate call '<id>' ..`.
pub const BARESIP_LOCAL_HANGUP: &str = "call: terminate call '";
/// baresip log line when the media of a call that had started is torn down (call ended, by
/// either side). (`<aor>: Call with <peer> terminated (duration: ..)` is only printed for calls
/// of 1 s or more, so it is not used.)
pub const BARESIP_CALL_ENDED: &str = "audio: destroyed (started=1)";
/// baresip log fragment when `rtp_timeout` fired on a stream (it then sends BYE): the full line
/// is `call: error in "audio" rtp stream (Connection timed out)`, or `"video"` when the video
/// stream was the silent one.
pub const BARESIP_RTP_TIMEOUT: &str = " rtp stream (Connection timed out)";
/// baresip log line start for a DTMF digit received as RFC 4733 telephone-event RTP:
/// `received event: '5' (end=0)` at the event's start, `received event: '5' (end=1)` at its end.
pub const BARESIP_DTMF_RTP: &str = "received event: '";
/// baresip log line start for a DTMF digit received by SIP INFO (`application/dtmf-relay`):
/// `call: received DTMF: '5' (duration=160)` (the digit upper-cased).
pub const BARESIP_DTMF_INFO: &str = "call: received DTMF: '";
/// baresip log line start when the first video frame was decoded:
/// `video: receiving with resolution 320 x 240 and format 'yuv420p'`.
pub const BARESIP_VIDEO_RECEIVING: &str = "video: receiving with resolution ";
/// baresip log line start when the first video RTP packet arrived:
/// `stream: incoming rtp for 'video' established, receiving from 127.0.0.1:PORT`.
pub const BARESIP_VIDEO_RTP: &str = "stream: incoming rtp for 'video' established";
/// baresip log line start naming the negotiated codec it sends:
/// `Set video encoder: H264 packetization-mode=1 (500000 bit/s, 25.00 fps)`, `Set video encoder: VP8  (..)`.
pub const BARESIP_VIDEO_ENCODER: &str = "Set video encoder: ";
/// baresip log line start naming the codec it expects: `Set video decoder: H264 packetization-mode=1`.
pub const BARESIP_VIDEO_DECODER: &str = "Set video decoder: ";
/// baresip log line start when it puts a call on hold (ctrl `hold`): `call: hold sip:peer..`.
pub const BARESIP_HOLD: &str = "call: hold ";
/// baresip log line start when it resumes a held call (ctrl `resume`): `call: resume sip:peer..`.
pub const BARESIP_RESUME: &str = "call: resume ";

/// What baresip sends as audio.
#[derive(Clone, Debug)]
pub enum AudioSource {
    /// An endless sine tone (`ausine` module) of this frequency in Hz.
    Sine(u32),
    /// A WAV file (`aufile` module), played once; baresip hangs up (BYE) when it ends. It must
    /// be 48 kHz stereo (= `ausrc_srate`/`ausrc_channels`), else the call fails at once with
    /// `session closed: No such device`.
    File(PathBuf),
}

/// What baresip sends as video (see [`BaresipOptions::video_source`]).
#[derive(Clone, Debug)]
pub enum VideoSource {
    /// A *video-only* media file read by the `avformat` module (make one with
    /// [`super::probe::make_test_video`] or [`super::probe::test_video`]); decoded and re-encoded
    /// with the negotiated codec, so the file's own codec does not matter. It loops: at the end it
    /// pauses about 1 s, then rewinds. The path must not contain a comma (`avformat,FORMAT,DEVICE`).
    File(PathBuf),
    /// The `fakevideo` module's still picture (three colour bars, `video_size` 320x240): no file
    /// needed.
    ColourBars,
}

/// A video codec baresip can negotiate (see [`BaresipOptions::video_codecs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264 by the `avcodec` module (libx264 / ffmpeg's decoder): offers and accepts
    /// packetization-mode 0 and 1, `profile-level-id=42e01f`. (The module also brings H263,
    /// MP4V-ES and H265, which baresip then offers too.)
    H264,
    /// VP8 by the `vp8` module (libvpx), `a=fmtp:PT max-fs=3600`.
    Vp8,
}

/// How baresip treats incoming calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerMode {
    /// Answer at once (200 OK after 180 Ringing).
    Auto,
    /// Ring until the `accept` command.
    Manual,
}

/// Settings of a [`Baresip`] user agent.
#[derive(Clone, Debug)]
pub struct BaresipOptions {
    /// SIP user name; baresip only accepts INVITEs whose Request-URI user is this.
    pub user: String,
    /// The audio it sends (default: 440 Hz sine).
    pub audio_source: AudioSource,
    /// Auto-answer (default) or manual.
    pub answer_mode: AnswerMode,
    /// Hang up (with BYE) after this many seconds without incoming RTP on *any* of the call's
    /// streams, video included (config `rtp_timeout`; counted from call establishment, checked
    /// once a second, and only while a stream is sendrecv: not while on hold).
    pub rtp_timeout_secs: Option<u32>,
    /// The video it sends; None (default): no video modules, so it rejects video streams
    /// (`m=video 0`) and offers none. Some: it offers/accepts sendrecv video with
    /// [`BaresipOptions::video_codecs`] (a `fakevideo` display swallows what it receives).
    pub video_source: Option<VideoSource>,
    /// Video codecs, in the order its offers list them (default H.264, then VP8). As answerer
    /// it keeps the offer's order and answers *every* offered format it supports, and sends
    /// with the first one.
    pub video_codecs: Vec<VideoCodec>,
    /// Print every SIP message it sends or receives into the log (`baresip -s`; default true);
    /// read them with [`Baresip::sip_trace`].
    pub sip_trace: bool,
    /// Account `audio_codecs` (default `PCMU,PCMA`).
    pub audio_codecs: String,
    /// Digest user name (account `auth_user`; baresip defaults to `user`).
    pub auth_user: Option<String>,
    /// Digest password (account `auth_pass`), answered to 401/407 challenges.
    pub auth_password: Option<String>,
    /// Send every request through this proxy (account `outbound`).
    pub outbound_proxy: Option<SocketAddr>,
    /// Register at this registrar (AOR domain = it, `regint=60`); None: no registration.
    pub registrar: Option<SocketAddr>,
    /// RTP/RTCP port range (baresip picks random free ports inside it).
    pub rtp_ports: (u16, u16),
    /// Extra `;key=value` parameters for the account line.
    pub extra_account_params: Vec<String>,
    /// Extra config file lines.
    pub extra_config: Vec<String>,
}

impl Default for BaresipOptions {
    fn default() -> Self {
        BaresipOptions {
            user: "callee".to_string(),
            audio_source: AudioSource::Sine(440),
            answer_mode: AnswerMode::Auto,
            rtp_timeout_secs: None,
            video_source: None,
            video_codecs: vec![VideoCodec::H264, VideoCodec::Vp8],
            sip_trace: true,
            audio_codecs: "PCMU,PCMA".to_string(),
            auth_user: None,
            auth_password: None,
            outbound_proxy: None,
            registrar: None,
            rtp_ports: (20000, 29999),
            extra_account_params: Vec::new(),
            extra_config: Vec::new(),
        }
    }
}

impl BaresipOptions {
    /// Defaults with this user name.
    pub fn new(user: &str) -> Self {
        BaresipOptions {
            user: user.to_string(),
            ..Default::default()
        }
    }

    /// These options with video: `source`, negotiating `codecs` (in this order).
    pub fn with_video(self, source: VideoSource, codecs: &[VideoCodec]) -> Self {
        BaresipOptions {
            video_source: Some(source),
            video_codecs: codecs.to_vec(),
            ..self
        }
    }
}

/// A headless baresip user agent (no stdio UI) controlled through `ctrl_tcp`.
pub struct Baresip {
    process: PeerProcess,
    options: BaresipOptions,
    sip_port: u16,
    ctrl_port: u16,
    dir: PeerDir,
}

impl Baresip {
    /// Starts baresip on fresh ports and waits until it is ready and ctrl_tcp listens.
    pub fn start(options: BaresipOptions) -> Baresip {
        let dir = PeerDir::new(&format!("baresip-{}", options.user));
        for attempt in 1..=START_ATTEMPTS {
            let sip_port = free_udp_tcp_port();
            let ctrl_port = free_tcp_port();
            fs::write(
                dir.path().join("config"),
                baresip_config(&options, sip_port, ctrl_port),
            )
            .unwrap();
            fs::write(
                dir.path().join("accounts"),
                baresip_account(&options, sip_port),
            )
            .unwrap();
            let log_offset = log_len(&dir.path().join("baresip.log"));
            let mut cmd = Command::new("baresip");
            cmd.arg("-f").arg(dir.path()).arg("-v");
            if options.sip_trace {
                cmd.arg("-s");
            }
            let mut process = PeerProcess::spawn(
                &format!("baresip[{}]", options.user),
                cmd,
                &dir.path().join("baresip.log"),
                Duration::from_secs(3),
            );
            process.cleaner = clean_baresip_log;
            let listening = format!("ctrl_tcp: TCP socket listening on 127.0.0.1:{ctrl_port}");
            // baresip goes on without ctrl_tcp when its port is taken.
            let ready = await_startup(&mut process, attempt, log_offset, |log| {
                if log.contains("ctrl_tcp: failed to listen") {
                    Probe::PortTaken
                } else if log.contains("baresip is ready.") && log.contains(&listening) {
                    Probe::Ready
                } else {
                    Probe::Pending
                }
            });
            if ready {
                return Baresip {
                    process,
                    options,
                    sip_port,
                    ctrl_port,
                    dir,
                };
            }
        }
        unreachable!()
    }

    /// The options it was started with.
    pub fn options(&self) -> &BaresipOptions {
        &self.options
    }

    /// Its SIP port (UDP and TCP) on 127.0.0.1.
    pub fn sip_port(&self) -> u16 {
        self.sip_port
    }

    /// Its SIP address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.sip_port))
    }

    /// `sip:USER@127.0.0.1:PORT`: where to send an INVITE directly.
    pub fn uri(&self) -> String {
        format!("sip:{}@127.0.0.1:{}", self.options.user, self.sip_port)
    }

    /// Its account's address of record: `sip:USER@REGISTRAR` when registering, else [`Baresip::uri`].
    pub fn aor(&self) -> String {
        match self.options.registrar {
            Some(reg) => format!("sip:{}@{reg}", self.options.user),
            None => self.uri(),
        }
    }

    /// Its ctrl_tcp port.
    pub fn ctrl_port(&self) -> u16 {
        self.ctrl_port
    }

    /// Its working directory (config, accounts, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The underlying process (signals, exit status).
    pub fn process(&mut self) -> &mut PeerProcess {
        &mut self.process
    }

    /// Path of the raw captured stdout+stderr.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// Its captured stdout+stderr without status lines and colour codes.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        self.process.log_tail(n)
    }

    /// Panics with `msg` and baresip's log tail.
    pub fn fail(&self, msg: &str) -> ! {
        self.process.fail(msg)
    }

    /// How many log lines contain `pattern`.
    pub fn count_log(&self, pattern: &str) -> usize {
        self.log().lines().filter(|l| l.contains(pattern)).count()
    }

    /// Waits until the log contains `pattern`.
    pub fn wait_for_log(&self, pattern: &str, timeout: Duration) -> bool {
        wait_for_text(timeout, pattern, || self.log())
    }

    /// Runs a ctrl_tcp command (`"dial sip:..."`, `"hangup"`, `"listcalls"`...): Ok(data) or
    /// Err(data) when baresip answered `ok:false`; panics when the control socket fails.
    pub fn try_command(&self, command: &str) -> Result<String, String> {
        static TOKEN: AtomicU64 = AtomicU64::new(1);
        let command = command.trim().trim_start_matches('/');
        let (name, params) = command.split_once(' ').unwrap_or((command, ""));
        let token = format!("t{}", TOKEN.fetch_add(1, Ordering::Relaxed));
        let body = serde_json::json!({"command": name, "params": params.trim(), "token": token})
            .to_string();
        let io_fail = |e: std::io::Error| -> ! {
            self.fail(&format!("ctrl_tcp command {command:?} failed: {e}"))
        };
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.ctrl_port)).unwrap_or_else(|e| io_fail(e));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(format!("{}:{body},", body.len()).as_bytes())
            .unwrap_or_else(|e| io_fail(e));
        let mut reader = BufReader::new(stream);
        loop {
            let message = read_netstring(&mut reader).unwrap_or_else(|e| io_fail(e));
            let value: serde_json::Value = serde_json::from_slice(&message).unwrap_or_else(|e| {
                self.fail(&format!("ctrl_tcp sent bad JSON ({e}): {message:?}"))
            });
            if value["response"] == true && value["token"] == token.as_str() {
                let data = value["data"].as_str().unwrap_or("").to_string();
                return if value["ok"] == true {
                    Ok(data)
                } else {
                    Err(data)
                };
            }
        }
    }

    /// Runs a ctrl_tcp command and returns its data; panics (with the log) if it failed.
    pub fn command(&self, command: &str) -> String {
        self.try_command(command)
            .unwrap_or_else(|data| self.fail(&format!("command {command:?} failed: {data}")))
    }

    /// Places a call to `uri` (ctrl `dial`).
    pub fn dial(&self, uri: &str) {
        self.command(&format!("dial {uri}"));
    }

    /// Hangs up the current call (ctrl `hangup`; baresip sends BYE or CANCEL).
    pub fn hangup(&self) {
        self.command("hangup");
    }

    /// Answers a ringing incoming call (ctrl `accept`, for [`AnswerMode::Manual`]).
    pub fn accept(&self) {
        self.command("accept");
    }

    /// Number of calls currently active, according to ctrl `listcalls`.
    pub fn active_calls(&self) -> usize {
        let listing = self.command("listcalls");
        listing
            .split("Active calls (")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Number of calls that got established so far (log `... Call established: <peer>`).
    pub fn established_calls(&self) -> usize {
        self.count_log(BARESIP_ESTABLISHED)
    }

    /// Waits until at least one call got established.
    pub fn wait_for_established(&self, timeout: Duration) -> bool {
        self.wait_for_established_calls(1, timeout)
    }

    /// Waits until at least `n` calls got established.
    pub fn wait_for_established_calls(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.established_calls() >= n)
    }

    /// Whether the remote side ended an established call with BYE (not baresip itself).
    pub fn received_bye(&self) -> bool {
        self.bye_count() > 0
    }

    /// Number of established calls the remote side ended with BYE.
    pub fn bye_count(&self) -> usize {
        self.remote_closes().0
    }

    /// Number of unanswered incoming calls the remote side cancelled (CANCEL).
    pub fn cancel_count(&self) -> usize {
        self.remote_closes().1
    }

    /// (BYEs, CANCELs) received. baresip logs both as `<peer>: session closed: Connection reset
    /// by peer`; the `audio: destroyed (started=1|0)` line right after tells them apart.
    fn remote_closes(&self) -> (usize, usize) {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let (mut byes, mut cancels) = (0, 0);
        for (i, line) in lines.iter().enumerate() {
            if !line.ends_with(BARESIP_REMOTE_BYE) {
                continue;
            }
            // (With video, `video: stopping video source ..` lines come in between.)
            let destroyed = lines[i + 1..]
                .iter()
                .take(20)
                .take_while(|l| !l.contains(BARESIP_SESSION_CLOSED))
                .find(|l| l.starts_with("audio: destroyed (started="));
            // Not counted until the audio line is written (right after, in the same handler).
            match destroyed {
                Some(l) if l.ends_with("started=1)") => byes += 1,
                Some(_) => cancels += 1,
                None => {}
            }
        }
        (byes, cancels)
    }

    /// Waits until the remote side ended a call with BYE.
    pub fn wait_for_bye(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.received_bye())
    }

    /// Reasons of all closed SIP sessions (`Connection reset by peer` = BYE received,
    /// `407 Proxy Authentication Required` = outgoing call failed, ...).
    pub fn closed_reasons(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once(BARESIP_SESSION_CLOSED))
            .map(|(_, reason)| reason.trim().to_string())
            .collect()
    }

    /// Number of calls with started media that ended (by either side).
    pub fn ended_calls(&self) -> usize {
        self.count_log(BARESIP_CALL_ENDED)
    }

    /// Number of calls baresip hung up itself (ctrl `hangup`).
    pub fn local_hangups(&self) -> usize {
        self.count_log(BARESIP_LOCAL_HANGUP)
    }

    /// Whether `rtp_timeout` made baresip hang up.
    pub fn rtp_timed_out(&self) -> bool {
        self.count_log(BARESIP_RTP_TIMEOUT) > 0
    }

    /// Waits until a registration was answered with 200 OK.
    pub fn wait_for_registered(&self, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.log()
                .lines()
                .any(|l| l.contains("} 200 OK") && l.contains(" binding"))
        })
    }

    /// Sends DTMF digits (`0-9`, `*`, `#`) in the current call as RFC 4733 telephone-event RTP
    /// (ctrl `sndcode`), all at once; each gets its own start and end. baresip 1.0 cannot send
    /// SIP INFO DTMF (no `dtmfmode` account parameter): use [`RawSipCall::send_dtmf_info`].
    /// Panics outside a call (`command not found (sndcode)`).
    pub fn send_digits(&self, digits: &str) {
        self.command(&format!("sndcode {digits}"));
    }

    /// DTMF digits received so far, in order, with how they came (log [`BARESIP_DTMF_RTP`] with
    /// `(end=0)`, [`BARESIP_DTMF_INFO`]).
    pub fn received_dtmf(&self) -> Vec<(char, DtmfVia)> {
        self.log()
            .lines()
            .filter_map(|l| {
                if let Some(rest) = text_after(l, BARESIP_DTMF_RTP) {
                    rest.ends_with("(end=0)")
                        .then(|| rest.chars().next())
                        .flatten()
                        .map(|d| (d, DtmfVia::Rtp))
                } else {
                    text_after(l, BARESIP_DTMF_INFO)
                        .and_then(|rest| rest.chars().next())
                        .map(|d| (d, DtmfVia::Info))
                }
            })
            .collect()
    }

    /// The DTMF digits received so far, in order (RTP telephone-event and SIP INFO alike).
    pub fn received_digits(&self) -> String {
        self.received_dtmf().into_iter().map(|(d, _)| d).collect()
    }

    /// Waits until the digits received so far are exactly `expected`.
    pub fn wait_for_digits(&self, expected: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.received_digits() == expected)
    }

    /// Puts the current call on hold (ctrl `hold`): logs [`BARESIP_HOLD`] and sends a re-INVITE
    /// with every stream `a=sendonly` (baresip as the held peer answers `a=recvonly`). Panics
    /// outside a call (`command not found (hold)`).
    pub fn hold(&self) {
        self.command("hold");
    }

    /// Resumes the held call (ctrl `resume`): logs [`BARESIP_RESUME`] and sends a re-INVITE
    /// with every stream `a=sendrecv`.
    pub fn resume(&self) {
        self.command("resume");
    }

    /// Sizes (width, height) of the incoming video, one entry per call whose first video frame
    /// was decoded (log [`BARESIP_VIDEO_RECEIVING`]).
    pub fn received_video_sizes(&self) -> Vec<(u32, u32)> {
        self.log()
            .lines()
            .filter_map(|l| {
                let rest = text_after(l, BARESIP_VIDEO_RECEIVING)?;
                let mut words = rest.split_whitespace();
                let w = words.next()?.parse().ok()?;
                let h = words.nth(1)?.parse().ok()?;
                Some((w, h))
            })
            .collect()
    }

    /// Waits until a video frame from the peer was decoded (RTP arrived and made a picture).
    pub fn wait_for_video(&self, timeout: Duration) -> bool {
        wait_for_text(timeout, BARESIP_VIDEO_RECEIVING, || self.log())
    }

    /// Video codecs it started sending with, e.g. `H264 packetization-mode=1` or `VP8` (log
    /// [`BARESIP_VIDEO_ENCODER`], without the bitrate part).
    pub fn video_encoders(&self) -> Vec<String> {
        self.codec_lines(BARESIP_VIDEO_ENCODER)
    }

    /// Video codecs it set up for receiving, e.g. `H264 packetization-mode=1` (log
    /// [`BARESIP_VIDEO_DECODER`]).
    pub fn video_decoders(&self) -> Vec<String> {
        self.codec_lines(BARESIP_VIDEO_DECODER)
    }

    fn codec_lines(&self, prefix: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| text_after(l, prefix))
            .map(|rest| rest.split(" (").next().unwrap_or(rest).trim().to_string())
            .collect()
    }

    /// The SIP messages it sent and received so far, in order (from its `-s` trace in the raw
    /// log; empty unless [`BaresipOptions::sip_trace`]).
    pub fn sip_trace(&self) -> Vec<SipTraceMessage> {
        let raw = fs::read(self.log_path()).unwrap_or_default();
        parse_sip_trace(&String::from_utf8_lossy(&raw), self.addr())
    }
}

/// How a DTMF digit reached baresip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtmfVia {
    /// RFC 4733 telephone-event RTP.
    Rtp,
    /// SIP INFO with `application/dtmf-relay`.
    Info,
}

/// The text after the first `pattern` in `line`.
fn text_after<'a>(line: &'a str, pattern: &str) -> Option<&'a str> {
    line.find(pattern).map(|i| &line[i + pattern.len()..])
}

/// One SIP message from baresip's trace (`baresip -s`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipTraceMessage {
    /// True when baresip sent it, false when it received it.
    pub sent: bool,
    /// Transport, e.g. `UDP`.
    pub transport: String,
    /// Source address as printed (`127.0.0.1:5060`).
    pub src: String,
    /// Destination address as printed.
    pub dst: String,
    /// The message as on the wire (CRLF line ends, body included).
    pub text: String,
}

impl SipTraceMessage {
    /// The request or status line.
    pub fn start_line(&self) -> &str {
        self.text.lines().next().unwrap_or("").trim_end()
    }

    /// Whether this is a `method` request (`INVITE`, `INFO`, ...).
    pub fn is_request(&self, method: &str) -> bool {
        self.start_line()
            .strip_prefix(method)
            .is_some_and(|rest| rest.starts_with(' '))
    }

    /// The status code if this is a response.
    pub fn status(&self) -> Option<u16> {
        let rest = self.start_line().strip_prefix("SIP/2.0 ")?;
        rest.split_whitespace().next()?.parse().ok()
    }

    /// The first value of header `name` (case-insensitive; no compact forms).
    pub fn header(&self, name: &str) -> Option<&str> {
        sip_header(&self.text, name)
    }

    /// The method in the CSeq header (`INVITE` for a 200 answering an INVITE).
    pub fn cseq_method(&self) -> Option<&str> {
        self.header("CSeq")?.split_whitespace().nth(1)
    }

    /// The body (empty when none).
    pub fn body(&self) -> &str {
        sip_body(&self.text)
    }

    /// The body's `m=<kind>` section (`audio`, `video`), from its `m=` line up to the next one.
    pub fn media_section(&self, kind: &str) -> Option<&str> {
        sdp_media_section(self.body(), kind)
    }
}

/// The first value of header `name` in a SIP message (case-insensitive; no compact forms).
fn sip_header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message
        .split("\r\n\r\n")
        .next()?
        .lines()
        .skip(1)
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

/// The body of a SIP message (empty when none).
fn sip_body(message: &str) -> &str {
    message.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// An SDP's `m=<kind>` section, from its `m=` line up to the next one.
fn sdp_media_section<'a>(sdp: &'a str, kind: &str) -> Option<&'a str> {
    let start = sdp.find(&format!("m={kind} "))?;
    let rest = &sdp[start..];
    let end = rest[1..].find("\nm=").map_or(rest.len(), |i| i + 2);
    Some(&rest[..end])
}

/// Extracts the messages of baresip's SIP trace from its raw log: each is printed as
/// `ESC[36;1m#\n<TP> <src> -> <dst>\n<message>ESC[;m\n` (stdout is unbuffered, so a message
/// is not interleaved with other main-thread output).
fn parse_sip_trace(raw: &str, own: SocketAddr) -> Vec<SipTraceMessage> {
    const START: &str = "\u{1b}[36;1m#\n";
    const END: &str = "\u{1b}[;m";
    let own = own.to_string();
    raw.split(START)
        .skip(1)
        .filter_map(|chunk| {
            let (head, rest) = chunk.split_once('\n')?;
            // Not yet complete when the end marker is missing.
            let (text, _) = rest.split_once(END)?;
            let mut words = head.split_whitespace();
            let transport = words.next()?.to_string();
            let src = words.next()?.to_string();
            let dst = words.nth(1)?.to_string();
            Some(SipTraceMessage {
                sent: src == own,
                transport,
                src,
                dst,
                text: text.to_string(),
            })
        })
        .collect()
}

/// The baresip config file.
fn baresip_config(o: &BaresipOptions, sip_port: u16, ctrl_port: u16) -> String {
    let (source, source_module) = match &o.audio_source {
        AudioSource::Sine(hz) => (format!("ausine,{hz}"), "ausine.so"),
        AudioSource::File(path) => (format!("aufile,{}", path.display()), "aufile.so"),
    };
    let mut c = format!(
        "poll_method epoll
sip_listen 127.0.0.1:{sip_port}
net_interface 127.0.0.1
audio_player null
audio_alert null
audio_source {source}
ausrc_srate 48000
ausrc_channels 2
rtp_ports {}-{}
module_path /usr/lib/baresip/modules
module g711.so
module {source_module}
module_app account.so
module_app menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:{ctrl_port}
",
        o.rtp_ports.0, o.rtp_ports.1
    );
    if let Some(secs) = o.rtp_timeout_secs {
        c.push_str(&format!("rtp_timeout {secs}\n"));
    }
    if let Some(video) = &o.video_source {
        assert!(
            !o.video_codecs.is_empty(),
            "baresip with a video source needs at least one video codec"
        );
        for codec in &o.video_codecs {
            c.push_str(match codec {
                VideoCodec::H264 => "module avcodec.so\n",
                VideoCodec::Vp8 => "module vp8.so\n",
            });
        }
        // fakevideo is the display (without one baresip offers/answers video sendonly or
        // inactive) and, for ColourBars, the source.
        c.push_str("module fakevideo.so\nvideo_display fakevideo,nil\n");
        match video {
            VideoSource::File(path) => {
                let path = path.display().to_string();
                assert!(
                    !path.contains(','),
                    "baresip's avformat splits the video source at ',': {path}"
                );
                c.push_str(&format!(
                    "module avformat.so\nvideo_source avformat,{path}\n"
                ));
            }
            VideoSource::ColourBars => c.push_str("video_source fakevideo,nil\n"),
        }
        c.push_str("video_size 320x240\nvideo_fps 25\nvideo_bitrate 500000\n");
    }
    for line in &o.extra_config {
        c.push_str(line);
        c.push('\n');
    }
    c
}

/// The baresip accounts file (one account).
fn baresip_account(o: &BaresipOptions, sip_port: u16) -> String {
    let mut line = match o.registrar {
        Some(reg) => format!("<sip:{}@{reg}>;regint=60", o.user),
        None => format!("<sip:{}@127.0.0.1:{sip_port}>;regint=0", o.user),
    };
    let answer = match o.answer_mode {
        AnswerMode::Auto => "auto",
        AnswerMode::Manual => "manual",
    };
    line.push_str(&format!(
        ";answermode={answer};audio_codecs={}",
        o.audio_codecs
    ));
    if let Some(user) = &o.auth_user {
        line.push_str(&format!(";auth_user={user}"));
    }
    if let Some(pass) = &o.auth_password {
        line.push_str(&format!(";auth_pass={pass}"));
    }
    if let Some(proxy) = o.outbound_proxy {
        line.push_str(&format!(";outbound=\"sip:{proxy}\""));
    }
    for param in &o.extra_account_params {
        line.push(';');
        line.push_str(param);
    }
    line.push('\n');
    line
}

/// Reads one netstring (`LEN:DATA,`).
fn read_netstring(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut len = Vec::new();
    reader.read_until(b':', &mut len)?;
    let len: usize = std::str::from_utf8(&len)
        .ok()
        .and_then(|s| s.trim_end_matches(':').trim().parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad netstring length {len:?}")))?;
    let mut data = vec![0; len + 1];
    reader.read_exact(&mut data)?;
    if data.pop() != Some(b',') {
        return Err(std::io::Error::other("netstring without trailing ','"));
    }
    Ok(data)
}

/// Drops baresip's `\r`-framed call status lines, blank padding and ANSI colour codes.
fn clean_baresip_log(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() / 2);
    for line in raw.split('\n') {
        for part in line.split('\r') {
            let part = strip_ansi(part);
            let trimmed = part.trim();
            // `[0:00:03] audio=64000/64000 (bit/s)`, with video `... (bit/s) efps=25.0/25.0`.
            let is_status = trimmed.starts_with('[') && trimmed.contains("(bit/s)");
            if !trimmed.is_empty() && !is_status {
                out.push_str(part.trim_end());
                out.push('\n');
            }
        }
    }
    out
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A raw SIP caller (for what baresip cannot do as caller)
// ---------------------------------------------------------------------------------------------

/// One video format of a [`RawSipCall`] offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferedVideo {
    /// RTP payload type.
    pub pt: u8,
    /// `a=rtpmap` encoding, e.g. `H264/90000`.
    pub rtpmap: String,
    /// `a=fmtp` parameters, if any.
    pub fmtp: Option<String>,
}

impl OfferedVideo {
    /// H.264 with this packetization mode, `profile-level-id=42e01f` (constrained baseline 3.1).
    pub fn h264(pt: u8, packetization_mode: u8) -> Self {
        OfferedVideo {
            pt,
            rtpmap: "H264/90000".into(),
            fmtp: Some(format!(
                "packetization-mode={packetization_mode};profile-level-id=42e01f"
            )),
        }
    }

    /// VP8.
    pub fn vp8(pt: u8) -> Self {
        OfferedVideo {
            pt,
            rtpmap: "VP8/90000".into(),
            fmtp: None,
        }
    }

    /// What the gateway offers: H.264 packetization-mode 1 (96) and 0 (97), then VP8 (98).
    pub fn gateway_offer() -> Vec<OfferedVideo> {
        vec![Self::h264(96, 1), Self::h264(97, 0), Self::vp8(98)]
    }
}

/// RTP packets counted by [`RawSipCall::count_rtp`], per payload type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RtpCounts {
    /// Packets to the audio port, by payload type.
    pub audio: std::collections::BTreeMap<u8, usize>,
    /// Packets to the video port, by payload type.
    pub video: std::collections::BTreeMap<u8, usize>,
}

/// A minimal SIP caller over UDP for probing a peer without the gateway: it sends an INVITE
/// with a chosen offer (PCMU + telephone-event audio, optional video), ACKs the 200, sends
/// in-dialog INFO (DTMF) and BYE, answers the peer's requests with 200, and counts the RTP the
/// peer sends. No auth, no retransmissions (loopback), and it sends no RTP itself (so a peer
/// with `rtp_timeout` hangs up on it). BYE on drop if the call is still up.
pub struct RawSipCall {
    sip: UdpSocket,
    target: SocketAddr,
    call_id: String,
    from: String,
    to: String,
    remote_target: String,
    cseq: u32,
    answer: String,
    audio_rtp: UdpSocket,
    video_rtp: UdpSocket,
    /// Set by a BYE either way.
    ended: Cell<bool>,
}

impl RawSipCall {
    /// Calls `request_uri` at `target` (e.g. `callee.addr()`, `callee.uri()`) offering `video`
    /// (empty: audio only) with direction `video_direction` (`sendrecv`, `recvonly`, ...), and
    /// waits up to 10 s for the answer. Err: the final non-2xx status line, or a timeout.
    pub fn invite(
        target: SocketAddr,
        request_uri: &str,
        video: &[OfferedVideo],
        video_direction: &str,
    ) -> Result<RawSipCall, String> {
        static SEQ: AtomicU64 = AtomicU64::new(1);
        let bind = || UdpSocket::bind("127.0.0.1:0").expect("cannot bind a UDP socket");
        let (sip, audio_rtp, video_rtp) = (bind(), bind(), bind());
        let local = sip.local_addr().unwrap();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", std::process::id());
        let mut call = RawSipCall {
            target,
            call_id: format!("raw-{id}@127.0.0.1"),
            from: format!("<sip:raw@{local}>;tag=raw-{id}"),
            to: format!("<{request_uri}>"),
            remote_target: request_uri.to_string(),
            cseq: 1,
            answer: String::new(),
            audio_rtp,
            video_rtp,
            ended: Cell::new(true),
            sip,
        };
        let mut sdp = format!(
            "v=0\r\no=- {n} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n",
            call.audio_rtp.local_addr().unwrap().port()
        );
        if !video.is_empty() {
            let pts: Vec<String> = video.iter().map(|v| v.pt.to_string()).collect();
            sdp.push_str(&format!(
                "m=video {} RTP/AVP {}\r\n",
                call.video_rtp.local_addr().unwrap().port(),
                pts.join(" ")
            ));
            for v in video {
                sdp.push_str(&format!("a=rtpmap:{} {}\r\n", v.pt, v.rtpmap));
                if let Some(fmtp) = &v.fmtp {
                    sdp.push_str(&format!("a=fmtp:{} {fmtp}\r\n", v.pt));
                }
            }
            sdp.push_str(&format!("a=rtcp-fb:* nack pli\r\na={video_direction}\r\n"));
        }
        let invite = call.request("INVITE", Some(("application/sdp", &sdp)));
        let response = call.transact(&invite)?;
        call.to = sip_header(&response, "To").unwrap_or_default().to_string();
        if let Some(contact) = sip_header(&response, "Contact") {
            let uri = contact.trim_start_matches('<');
            call.remote_target = uri.split('>').next().unwrap_or(uri).to_string();
        }
        call.answer = response;
        // The ACK has the INVITE's CSeq number.
        call.cseq -= 1;
        let ack = call.request("ACK", None);
        call.send(&ack);
        call.ended.set(false);
        Ok(call)
    }

    /// Whether the call ended: BYE sent, or the peer's BYE seen (during [`RawSipCall::count_rtp`]
    /// or a transaction).
    pub fn ended(&self) -> bool {
        self.ended.get()
    }

    /// The peer's 200 OK to the INVITE.
    pub fn answer(&self) -> &str {
        &self.answer
    }

    /// The SDP answer (the 200's body).
    pub fn answer_sdp(&self) -> &str {
        sip_body(&self.answer)
    }

    /// The answer's `m=<kind>` section (`audio`, `video`).
    pub fn answer_media(&self, kind: &str) -> Option<&str> {
        sdp_media_section(self.answer_sdp(), kind)
    }

    /// Sends an in-dialog INFO with this body and returns the response status.
    pub fn send_info(&mut self, content_type: &str, body: &str) -> Result<u16, String> {
        let info = self.request("INFO", Some((content_type, body)));
        self.transact(&info).map(|r| response_status(&r))
    }

    /// Sends one DTMF digit by SIP INFO `application/dtmf-relay` (`Signal=5\r\nDuration=160`).
    pub fn send_dtmf_info(&mut self, digit: char, duration_ms: u32) -> Result<u16, String> {
        self.send_info(
            "application/dtmf-relay",
            &format!("Signal={digit}\r\nDuration={duration_ms}\r\n"),
        )
    }

    /// Ends the call with BYE and returns the response status.
    pub fn bye(&mut self) -> Result<u16, String> {
        self.ended.set(true);
        let bye = self.request("BYE", None);
        self.transact(&bye).map(|r| response_status(&r))
    }

    /// Counts the RTP packets (not RTCP) that arrive at the offer's audio/video ports during
    /// `duration`, answering the peer's SIP requests meanwhile.
    pub fn count_rtp(&self, duration: Duration) -> RtpCounts {
        let mut counts = RtpCounts::default();
        let deadline = Instant::now() + duration;
        let mut buf = [0u8; 2048];
        for socket in [&self.audio_rtp, &self.video_rtp, &self.sip] {
            socket.set_nonblocking(true).unwrap();
        }
        while Instant::now() < deadline {
            let mut idle = true;
            for (socket, map) in [
                (&self.audio_rtp, &mut counts.audio),
                (&self.video_rtp, &mut counts.video),
            ] {
                while let Ok(len) = socket.recv(&mut buf) {
                    idle = false;
                    // RTP version 2; payload types 72..=76 are RTCP (200..=204 without the marker bit).
                    let pt = buf[1] & 0x7f;
                    if len >= 12 && buf[0] >> 6 == 2 && !(72..=76).contains(&pt) {
                        *map.entry(pt).or_default() += 1;
                    }
                }
            }
            while let Ok(len) = self.sip.recv(&mut buf) {
                self.answer_request(&String::from_utf8_lossy(&buf[..len]));
            }
            if idle {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        for socket in [&self.audio_rtp, &self.video_rtp, &self.sip] {
            socket.set_nonblocking(false).unwrap();
        }
        counts
    }

    /// A request in this dialog (the next CSeq).
    fn request(&mut self, method: &str, body: Option<(&str, &str)>) -> String {
        static BRANCH: AtomicU64 = AtomicU64::new(1);
        let local = self.sip.local_addr().unwrap();
        let branch = BRANCH.fetch_add(1, Ordering::Relaxed);
        let cseq = self.cseq;
        self.cseq += 1;
        let uri = if method == "INVITE" {
            self.to.trim_matches(['<', '>'])
        } else {
            &self.remote_target
        };
        let mut m = format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-raw-{}-{branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:raw@{local}>\r\n",
            std::process::id(),
            self.from,
            self.to,
            self.call_id
        );
        match body {
            Some((content_type, body)) => m.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )),
            None => m.push_str("Content-Length: 0\r\n\r\n"),
        }
        m
    }

    fn send(&self, message: &str) {
        self.sip
            .send_to(message.as_bytes(), self.target)
            .expect("cannot send SIP over UDP");
    }

    /// Sends `request` and waits up to 10 s for its final response: Ok for 2xx, else Err with
    /// the status line. Provisional responses are skipped, the peer's requests answered.
    fn transact(&self, request: &str) -> Result<String, String> {
        let cseq = sip_header(request, "CSeq").unwrap_or_default().to_string();
        self.send(request);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no final response to {cseq}"));
            }
            self.sip.set_read_timeout(Some(left)).unwrap();
            let Ok(len) = self.sip.recv(&mut buf) else {
                continue;
            };
            let message = String::from_utf8_lossy(&buf[..len]).into_owned();
            if !message.starts_with("SIP/2.0 ") {
                self.answer_request(&message);
                continue;
            }
            let status = response_status(&message);
            if sip_header(&message, "CSeq") != Some(cseq.as_str()) || status < 200 {
                continue;
            }
            return if status < 300 {
                Ok(message)
            } else {
                Err(message.lines().next().unwrap_or("").to_string())
            };
        }
    }

    /// Answers a request from the peer (a BYE, an INFO; no re-INVITEs) with 200 OK.
    fn answer_request(&self, request: &str) {
        if request.starts_with("SIP/2.0 ") || request.starts_with("ACK ") {
            return;
        }
        if request.starts_with("BYE ") {
            self.ended.set(true);
        }
        let mut reply = String::from("SIP/2.0 200 OK\r\n");
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            if let Some(value) = sip_header(request, name) {
                reply.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        reply.push_str("Content-Length: 0\r\n\r\n");
        self.send(&reply);
    }
}

impl Drop for RawSipCall {
    fn drop(&mut self) {
        if !self.ended.get() {
            let bye = self.request("BYE", None);
            self.send(&bye);
        }
    }
}

/// The status code of a SIP response (0 if unparsable).
fn response_status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// kamailio
// ---------------------------------------------------------------------------------------------

/// kamailio log marker: a request was challenged (no or wrong credentials).
pub const KAM_CHALLENGED: &str = "sipcast-kam: challenge";
/// kamailio log marker: an INVITE/REGISTER carried valid credentials.
pub const KAM_AUTH_OK: &str = "sipcast-kam: auth ok";
/// kamailio log marker: credentials were present but wrong.
pub const KAM_AUTH_FAILED: &str = "sipcast-kam: auth failed";
/// kamailio log marker: an authenticated INVITE was relayed.
pub const KAM_RELAYED: &str = "sipcast-kam: relay";
/// kamailio log marker: a REGISTER (expires > 0) was saved to the location table.
pub const KAM_REGISTERED: &str = "sipcast-kam: registered";
/// kamailio log marker: a de-REGISTER (expires 0) was processed.
pub const KAM_UNREGISTERED: &str = "sipcast-kam: unregistered";

/// Settings of a [`Kamailio`] proxy.
#[derive(Clone, Debug)]
pub struct KamailioOptions {
    /// Known users and their passwords (no `"` or `\`).
    pub users: Vec<(String, String)>,
    /// Digest realm of the challenges.
    pub realm: String,
    /// Relay every authenticated INVITE to this next hop; None: act as registrar and route
    /// INVITEs to registered contacts.
    pub forward_to: Option<SocketAddr>,
    /// Registrar `min_expires` (kamailio's default is 60 s); lower it for refresh tests.
    pub min_expires: Option<u32>,
}

impl Default for KamailioOptions {
    fn default() -> Self {
        KamailioOptions {
            users: Vec::new(),
            realm: "sipcast.test".to_string(),
            forward_to: None,
            min_expires: None,
        }
    }
}

/// A kamailio proxy that digest-challenges INVITEs (407) and, without `forward_to`, REGISTERs (401).
pub struct Kamailio {
    process: PeerProcess,
    options: KamailioOptions,
    port: u16,
    dir: PeerDir,
}

impl Kamailio {
    /// Starts kamailio on a fresh UDP port and waits until it answers an OPTIONS ping.
    pub fn start(options: KamailioOptions) -> Kamailio {
        for (user, pass) in &options.users {
            assert!(
                !format!("{user}{pass}{}", options.realm).contains(['"', '\\', '\n']),
                "kamailio users, passwords and realm must not contain quotes or backslashes"
            );
        }
        let dir = PeerDir::new("kamailio");
        let run_dir = dir.path().join("run");
        fs::create_dir_all(&run_dir).unwrap();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_udp_port();
            let cfg = dir.path().join("kamailio.cfg");
            let instance = format!("{}-{port}", std::process::id());
            fs::write(&cfg, kamailio_config(&options, port, &instance)).unwrap();
            let log_offset = log_len(&dir.path().join("kamailio.log"));
            let mut cmd = Command::new("kamailio");
            cmd.arg("-f")
                .arg(&cfg)
                .args(["-DD", "-E", "-Y"])
                .arg(&run_dir);
            cmd.arg("-P").arg(run_dir.join("kamailio.pid"));
            cmd.args(["-m", "64", "-M", "8"]);
            let mut process = PeerProcess::spawn(
                "kamailio",
                cmd,
                &dir.path().join("kamailio.log"),
                Duration::from_secs(3),
            );
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            // The 200 carries this instance's id: another SIP server on a reused port won't.
            let id_header = format!("X-Sipcast-Instance: {instance}");
            let ready = await_startup(
                &mut process,
                attempt,
                log_offset,
                |_| match sip_options_ping(addr, Duration::from_millis(200)) {
                    Some(r) if r.starts_with("SIP/2.0 200") && r.contains(&id_header) => {
                        Probe::Ready
                    }
                    Some(_) => Probe::PortTaken,
                    None => Probe::Pending,
                },
            );
            if ready {
                return Kamailio {
                    process,
                    options,
                    port,
                    dir,
                };
            }
        }
        unreachable!()
    }

    /// The options it was started with.
    pub fn options(&self) -> &KamailioOptions {
        &self.options
    }

    /// Its UDP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its SIP address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `sip:USER@127.0.0.1:PORT`: a Request-URI for `user` routed through this proxy.
    pub fn uri_for(&self, user: &str) -> String {
        format!("sip:{user}@127.0.0.1:{}", self.port)
    }

    /// Its working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The underlying process.
    pub fn process(&mut self) -> &mut PeerProcess {
        &mut self.process
    }

    /// Path of its captured stderr log.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// Its log (stderr; the script logs `sipcast-kam: ...` markers, see `KAM_*`).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        self.process.log_tail(n)
    }

    /// Panics with `msg` and kamailio's log tail.
    pub fn fail(&self, msg: &str) -> ! {
        self.process.fail(msg)
    }

    /// How many log lines contain `pattern`.
    pub fn count_log(&self, pattern: &str) -> usize {
        self.log().lines().filter(|l| l.contains(pattern)).count()
    }

    /// Waits until the log contains `pattern`.
    pub fn wait_for_log(&self, pattern: &str, timeout: Duration) -> bool {
        wait_for_text(timeout, pattern, || self.log())
    }
}

/// The kamailio routing script.
fn kamailio_config(o: &KamailioOptions, port: u16, instance: &str) -> String {
    let mpath = [
        "/usr/lib/x86_64-linux-gnu/kamailio/modules/",
        "/usr/lib/aarch64-linux-gnu/kamailio/modules/",
        "/usr/lib/kamailio/modules/",
        "/usr/lib64/kamailio/modules/",
    ]
    .into_iter()
    .find(|p| Path::new(p).join("tm.so").exists())
    .unwrap_or("/usr/lib/x86_64-linux-gnu/kamailio/modules/");
    let users: String = o
        .users
        .iter()
        .map(|(u, p)| format!("    $sht(users=>{u}) = \"{p}\";\n"))
        .collect();
    let invite_target = match o.forward_to {
        Some(addr) => format!("    $du = \"sip:{addr}\";\n"),
        None => "    if (!lookup(\"location\")) {\n        \
                 xlog(\"L_NOTICE\", \"sipcast-kam: not found $ru\\n\");\n        \
                 sl_send_reply(\"404\", \"Not Found\");\n        exit;\n    }\n"
            .to_string(),
    };
    let register = if o.forward_to.is_none() {
        r#"    if (is_method("REGISTER")) {
        if (!is_present_hf("Authorization")) {
            xlog("L_INFO", "sipcast-kam: challenge REGISTER from $fU\n");
            www_challenge("@REALM@", "1");
            exit;
        }
        if (!pv_www_authenticate("@REALM@", "$sht(users=>$au)", "0")) {
            xlog("L_NOTICE", "sipcast-kam: auth failed REGISTER from $fU (user $au)\n");
            xlog("L_INFO", "sipcast-kam: challenge REGISTER from $fU\n");
            www_challenge("@REALM@", "1");
            exit;
        }
        xlog("L_INFO", "sipcast-kam: auth ok REGISTER from $fU\n");
        consume_credentials();
        if (!save("location")) { sl_reply_error(); exit; }
        if ($ct =~ ";expires=0($|;)" || $hdr(Expires) == "0") {
            xlog("L_INFO", "sipcast-kam: unregistered $tU at $ct\n");
        } else {
            xlog("L_INFO", "sipcast-kam: registered $tU at $ct\n");
        }
        exit;
    }
"#
    } else {
        ""
    };
    let min_expires = o
        .min_expires
        .map(|m| format!("modparam(\"registrar\", \"min_expires\", {m})\n"))
        .unwrap_or_default();
    KAMAILIO_TEMPLATE
        .replace("@MIN_EXPIRES@", &min_expires)
        .replace("@REGISTER@", register)
        .replace("@INVITE_TARGET@", &invite_target)
        .replace("@USERS@", &users)
        .replace("@MPATH@", mpath)
        .replace("@PORT@", &port.to_string())
        .replace("@REALM@", &o.realm)
        .replace("@INSTANCE@", instance)
}

const KAMAILIO_TEMPLATE: &str = r#"#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=2
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:@PORT@
alias="127.0.0.1:@PORT@"
mpath="@MPATH@"

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "htable.so"

modparam("usrloc", "db_mode", 0)
modparam("htable", "htable", "users=>size=4;")
@MIN_EXPIRES@
event_route[htable:mod-init] {
    $var(users) = "loaded";
@USERS@}

request_route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    if (!sanity_check()) { xlog("L_NOTICE", "sipcast-kam: malformed $rm from $si:$sp\n"); exit; }

    if (has_totag()) {
        if (loose_route()) {
            xlog("L_INFO", "sipcast-kam: in-dialog $rm to $ru via $du\n");
            if (!t_relay()) { sl_reply_error(); }
            exit;
        }
        if (is_method("ACK")) {
            if (t_check_trans()) { t_relay(); }
            exit;
        }
        sl_send_reply("404", "Not here");
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) { t_relay(); }
        exit;
    }
    if (is_method("OPTIONS")) {
        append_to_reply("X-Sipcast-Instance: @INSTANCE@\r\n");
        sl_send_reply("200", "OK");
        exit;
    }
    t_check_trans();
@REGISTER@
    if (!is_method("INVITE")) { sl_send_reply("405", "Method Not Allowed"); exit; }
    if (!is_present_hf("Proxy-Authorization")) {
        xlog("L_INFO", "sipcast-kam: challenge INVITE from $fU\n");
        proxy_challenge("@REALM@", "1");
        exit;
    }
    if (!pv_proxy_authenticate("@REALM@", "$sht(users=>$au)", "0")) {
        xlog("L_NOTICE", "sipcast-kam: auth failed INVITE from $fU (user $au)\n");
        xlog("L_INFO", "sipcast-kam: challenge INVITE from $fU\n");
        proxy_challenge("@REALM@", "1");
        exit;
    }
    xlog("L_INFO", "sipcast-kam: auth ok INVITE from $fU (user $au)\n");
    consume_credentials();
    remove_hf("Route");
    record_route();
@INVITE_TARGET@
    xlog("L_INFO", "sipcast-kam: relay INVITE $ru via $du\n");
    if (!t_relay()) { sl_reply_error(); }
    exit;
}
"#;

/// Sends a SIP OPTIONS over UDP to `addr` and returns the first response (None on timeout).
pub fn sip_options_ping(addr: SocketAddr, timeout: Duration) -> Option<String> {
    static SEQ: AtomicU64 = AtomicU64::new(1);
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    let local = socket.local_addr().ok()?;
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}-{n}", std::process::id());
    let request = format!(
        "OPTIONS sip:{addr} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-ping-{id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:ping@{local}>;tag=ping-{id}\r\n\
         To: <sip:{addr}>\r\n\
         Call-ID: ping-{id}@127.0.0.1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    socket.send_to(request.as_bytes(), addr).ok()?;
    socket.set_read_timeout(Some(timeout)).ok()?;
    let mut buf = [0u8; 4096];
    let (len, _) = socket.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

// ---------------------------------------------------------------------------------------------
// GStreamer publisher (for tests that need an RTMP stream without the gateway)
// ---------------------------------------------------------------------------------------------

/// A `gst-launch-1.0` process publishing a sine tone as AAC/FLV over RTMP.
pub struct GstPublisher {
    process: PeerProcess,
    dir: PeerDir,
}

impl GstPublisher {
    /// Starts publishing `duration` of a `freq_hz` tone to `url` (rtmp://.../live/stream), in real time.
    pub fn tone(url: &str, freq_hz: u32, duration: Duration) -> GstPublisher {
        let dir = PeerDir::new("gst");
        // 441 samples at 44.1 kHz = 10 ms per buffer.
        let buffers = (duration.as_millis() / 10).max(1);
        let mut cmd = Command::new("gst-launch-1.0");
        cmd.arg("-e");
        cmd.args(
            format!(
                "audiotestsrc freq={freq_hz} num-buffers={buffers} samplesperbuffer=441 \
             ! audio/x-raw,rate=44100,channels=1 ! audioconvert ! voaacenc ! aacparse \
             ! flvmux streamable=true ! rtmp2sink location={url}"
            )
            .split_whitespace(),
        );
        let process = PeerProcess::spawn(
            "gst-publisher",
            cmd,
            &dir.path().join("gst.log"),
            Duration::from_secs(3),
        );
        GstPublisher { process, dir }
    }

    /// Waits for the publisher to finish; panics with its log if it fails or takes too long.
    pub fn wait(&mut self, timeout: Duration) {
        match self.process.wait_exit(timeout) {
            Some(status) if status.success() => {}
            Some(status) => self.process.fail(&format!("failed: {status}")),
            None => self
                .process
                .fail(&format!("still running after {timeout:?}")),
        }
    }

    /// The underlying process.
    pub fn process(&mut self) -> &mut PeerProcess {
        &mut self.process
    }

    /// Its captured output.
    pub fn log(&self) -> String {
        self.process.log()
    }
}
