//! Shared integration-test helpers: real test peers on loopback ([`peers`]), media probing of
//! recordings ([`probe`]) and small utilities (free ports, polling).
//!
//! Every test binary includes this with `mod common;`; not every test uses every helper.
#![allow(dead_code)]

pub mod calls;
pub mod gateway;
pub mod peers;
pub mod probe;
pub mod receiver;

use std::collections::HashSet;
use std::net::{TcpListener, UdpSocket};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Ports already handed out by this test process (tests in one binary run in parallel threads).
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Asks the OS for a free port with `bind` and never returns the same port twice in this process.
fn unique_port(bind: impl Fn() -> std::io::Result<u16>) -> u16 {
    for _ in 0..100 {
        let port = bind().expect("cannot bind an ephemeral port on 127.0.0.1");
        if handed_out().lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("no fresh free port found after 100 tries");
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
pub fn free_tcp_port() -> u16 {
    unique_port(|| Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()))
}

/// A UDP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
pub fn free_udp_port() -> u16 {
    unique_port(|| Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port()))
}

/// A port free for both UDP and TCP on 127.0.0.1 (SIP user agents listen on both).
pub fn free_udp_tcp_port() -> u16 {
    unique_port(|| loop {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    })
}

/// Polls `cond` every 20 ms until it returns true (-> true) or `timeout` has passed (-> false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
