//! RTP port pairs from the configured range: RTP on an even port, RTCP on the next one (RFC 3550 11).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("no free RTP port pair in {min}..={max}")]
    Exhausted { min: u16, max: u16 },
}

/// Hands out even ports whose pair is free both in our books and on the host (another process may hold one).
#[derive(Debug)]
pub struct PortAllocator {
    bind: IpAddr,
    min: u16,
    max: u16,
    next: u16,
    in_use: BTreeSet<u16>,
}

impl PortAllocator {
    /// `min` must be even and below `max` (the config checks it).
    pub fn new(bind: IpAddr, min: u16, max: u16) -> Self {
        Self {
            bind,
            min,
            max,
            next: min,
            in_use: BTreeSet::new(),
        }
    }

    /// Number of pairs in the range.
    pub fn capacity(&self) -> usize {
        usize::from((self.max - self.min).div_ceil(2))
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    /// The next free pair's RTP port. Round-robin, so a port just released is not reused at once (late
    /// packets of the old call must not reach the new one).
    pub fn allocate(&mut self) -> Result<u16, PortError> {
        for _ in 0..self.capacity() {
            let port = self.next;
            self.next = if port.saturating_add(3) > self.max {
                self.min
            } else {
                port + 2
            };
            if self.in_use.contains(&port) || !self.host_has_free(port) {
                continue;
            }
            self.in_use.insert(port);
            return Ok(port);
        }
        Err(PortError::Exhausted {
            min: self.min,
            max: self.max,
        })
    }

    pub fn release(&mut self, port: u16) {
        self.in_use.remove(&port);
    }

    fn host_has_free(&self, port: u16) -> bool {
        let probe = |p: u16| UdpSocket::bind(SocketAddr::new(self.bind, p)).is_ok();
        probe(port) && probe(port + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_distinct_and_come_back() {
        let mut ports = PortAllocator::new("127.0.0.1".parse().unwrap(), 41000, 41007);
        assert_eq!(ports.capacity(), 4);
        let got: Vec<u16> = (0..4).map(|_| ports.allocate().unwrap()).collect();
        assert!(
            got.iter()
                .all(|p| p % 2 == 0 && (41000..=41006).contains(p)),
            "{got:?}"
        );
        let distinct: BTreeSet<u16> = got.iter().copied().collect();
        assert_eq!(distinct.len(), 4);
        assert_eq!(
            ports.allocate(),
            Err(PortError::Exhausted {
                min: 41000,
                max: 41007
            })
        );
        ports.release(got[1]);
        assert_eq!(ports.allocate(), Ok(got[1]));
        assert_eq!(ports.in_use(), 4);
    }

    #[test]
    fn ports_held_by_another_socket_are_skipped() {
        let held = UdpSocket::bind("127.0.0.1:41101").unwrap();
        let mut ports = PortAllocator::new("127.0.0.1".parse().unwrap(), 41100, 41103);
        assert_eq!(
            ports.allocate(),
            Ok(41102),
            "41100's RTCP port 41101 is taken"
        );
        drop(held);
    }
}
