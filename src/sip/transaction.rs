//! RFC 3261 section 17.1 client transactions over an unreliable transport, sans-IO.
//!
//! A transaction owns its request bytes and its timers; the user agent feeds it responses and time and
//! sends whatever it returns.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The RFC 3261 timer base values (section 17.1.1.1 and Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate, default 500 ms.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests, default 4 s.
    pub t2: Duration,
    /// Maximum duration a message remains in the network, default 5 s.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// Timer B and Timer F: 64*T1.
    pub fn transaction_timeout(&self) -> Duration {
        self.t1 * 64
    }

    /// Timer D: at least 32 s for unreliable transports.
    pub fn timer_d(&self) -> Duration {
        Duration::from_secs(32).max(self.t1 * 64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Invite,
    NonInvite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// INVITE: "Calling"; non-INVITE: "Trying".
    Initial,
    Proceeding,
    Completed,
    Terminated,
}

/// What to do with a response the transaction has seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseAction {
    /// Hand it to the transaction user; `send` holds the ACK an INVITE transaction sends for a non-2xx.
    PassUp { send: Option<Vec<u8>> },
    /// A retransmission the transaction absorbs; `send` re-sends the ACK where RFC 3261 17.1.1.2 says so.
    Absorb { send: Option<Vec<u8>> },
}

/// What a timer firing produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerAction {
    Retransmit(Vec<u8>),
    /// Timer B or F: the request got no final response; the TU sees a 408 (RFC 3261 8.1.3.1).
    TimedOut,
    /// Timer D or K: the transaction is over.
    Terminated,
}

#[derive(Debug, Clone)]
pub struct ClientTransaction {
    pub kind: Kind,
    pub branch: String,
    pub destination: SocketAddr,
    request: Vec<u8>,
    state: State,
    timers: Timers,
    /// Timer A (INVITE) or Timer E (non-INVITE), and its current interval.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer B (INVITE) or Timer F (non-INVITE).
    timeout_at: Option<Instant>,
    /// Timer D (INVITE) or Timer K (non-INVITE).
    linger_until: Option<Instant>,
    /// The ACK for a non-2xx final response, kept to answer its retransmissions.
    ack: Option<Vec<u8>>,
    /// Sent over a reliable transport (TCP): no retransmissions, Timers D and K are zero (17.1.1.2, 17.1.2.2).
    reliable: bool,
}

impl ClientTransaction {
    /// Starts the transaction; the caller sends `request` now (RFC 3261 17.1.1.2 / 17.1.2.2 start timers A/B or E/F).
    pub fn start(
        kind: Kind,
        now: Instant,
        timers: Timers,
        branch: String,
        destination: SocketAddr,
        request: Vec<u8>,
    ) -> Self {
        Self {
            kind,
            branch,
            destination,
            request,
            state: State::Initial,
            timers,
            retransmit_at: Some(now + timers.t1),
            interval: timers.t1,
            timeout_at: Some(now + timers.transaction_timeout()),
            linger_until: None,
            ack: None,
            reliable: false,
        }
    }

    /// The same transaction over a reliable transport: Timer A/E never fire, Timers D/K are zero.
    pub fn over_reliable(mut self, reliable: bool) -> Self {
        if reliable {
            self.reliable = true;
            self.retransmit_at = None;
        }
        self
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn request(&self) -> &[u8] {
        &self.request
    }

    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// The earliest timer still running.
    pub fn deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.timeout_at, self.linger_until]
            .into_iter()
            .flatten()
            .min()
    }

    /// Feeds a response. `make_ack` builds the ACK for a non-2xx final response to an INVITE (17.1.1.3).
    pub fn on_response(
        &mut self,
        now: Instant,
        code: u16,
        make_ack: impl FnOnce() -> Vec<u8>,
    ) -> ResponseAction {
        let provisional = (100..200).contains(&code);
        match (self.kind, self.state) {
            (_, State::Terminated) => ResponseAction::Absorb { send: None },
            (Kind::Invite, State::Completed) => {
                // A retransmitted final response: send the ACK again, tell nobody.
                ResponseAction::Absorb {
                    send: if code >= 300 { self.ack.clone() } else { None },
                }
            }
            (Kind::NonInvite, State::Completed) => ResponseAction::Absorb { send: None },
            (_, State::Initial | State::Proceeding) if provisional => {
                self.state = State::Proceeding;
                match self.kind {
                    // 17.1.1.2: Timer A stops in Proceeding; Timer B only guards Calling.
                    Kind::Invite => {
                        self.retransmit_at = None;
                        self.timeout_at = None;
                    }
                    // 17.1.2.2: in Proceeding, retransmit every T2; Timer F keeps running.
                    Kind::NonInvite if self.reliable => {}
                    Kind::NonInvite => {
                        self.interval = self.timers.t2;
                        self.retransmit_at = Some(now + self.interval);
                    }
                }
                ResponseAction::PassUp { send: None }
            }
            (Kind::Invite, _) if code < 300 => {
                // 2xx: the transaction ends; the TU ACKs (13.2.2.4) and absorbs retransmissions.
                self.terminate();
                ResponseAction::PassUp { send: None }
            }
            (Kind::Invite, _) => {
                let ack = make_ack();
                self.ack = Some(ack.clone());
                self.state = State::Completed;
                self.retransmit_at = None;
                self.timeout_at = None;
                self.linger_until = Some(if self.reliable {
                    now
                } else {
                    now + self.timers.timer_d()
                });
                ResponseAction::PassUp { send: Some(ack) }
            }
            (Kind::NonInvite, _) => {
                self.state = State::Completed;
                self.retransmit_at = None;
                self.timeout_at = None;
                self.linger_until = Some(if self.reliable {
                    now
                } else {
                    now + self.timers.t4
                });
                ResponseAction::PassUp { send: None }
            }
        }
    }

    /// Fires whatever timers are due at `now`.
    pub fn on_timeout(&mut self, now: Instant) -> Option<TimerAction> {
        if self.linger_until.is_some_and(|t| t <= now) {
            self.terminate();
            return Some(TimerAction::Terminated);
        }
        if self.timeout_at.is_some_and(|t| t <= now) {
            self.terminate();
            return Some(TimerAction::TimedOut);
        }
        if self.retransmit_at.is_some_and(|t| t <= now) {
            self.interval = match self.kind {
                Kind::Invite => self.interval * 2,
                Kind::NonInvite => (self.interval * 2).min(self.timers.t2),
            };
            self.retransmit_at = Some(now + self.interval);
            return Some(TimerAction::Retransmit(self.request.clone()));
        }
        None
    }

    /// Ends the transaction without further output (its TU is gone).
    pub fn terminate(&mut self) {
        self.state = State::Terminated;
        self.retransmit_at = None;
        self.timeout_at = None;
        self.linger_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:5060".parse().unwrap()
    }

    fn run_until_quiet(
        tx: &mut ClientTransaction,
        start: Instant,
    ) -> (Vec<Duration>, Option<TimerAction>) {
        let mut retransmits = Vec::new();
        while let Some(at) = tx.deadline() {
            match tx.on_timeout(at) {
                Some(TimerAction::Retransmit(_)) => retransmits.push(at - start),
                other => return (retransmits, other),
            }
        }
        (retransmits, None)
    }

    #[test]
    fn invite_retransmits_with_timer_a_doubling_until_timer_b() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::start(
            Kind::Invite,
            t0,
            Timers::default(),
            "b".into(),
            addr(),
            b"INVITE".to_vec(),
        );
        let (retransmits, end) = run_until_quiet(&mut tx, t0);
        let ms: Vec<u128> = retransmits.iter().map(|d| d.as_millis()).collect();
        // A fires at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; B at 32 s.
        assert_eq!(ms, vec![500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(end, Some(TimerAction::TimedOut));
        assert!(tx.is_terminated());
    }

    #[test]
    fn non_invite_retransmits_capped_at_t2_until_timer_f() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::start(
            Kind::NonInvite,
            t0,
            Timers::default(),
            "b".into(),
            addr(),
            b"BYE".to_vec(),
        );
        let (retransmits, end) = run_until_quiet(&mut tx, t0);
        let ms: Vec<u128> = retransmits.iter().map(|d| d.as_millis()).collect();
        assert_eq!(
            &ms[..5],
            &[500, 1500, 3500, 7500, 11500],
            "E doubles to T2 then stays"
        );
        assert!(ms.iter().all(|&m| m < 32_000));
        assert_eq!(end, Some(TimerAction::TimedOut), "Timer F at 64*T1");
    }

    #[test]
    fn provisional_stops_timer_a_and_b() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::start(
            Kind::Invite,
            t0,
            Timers::default(),
            "b".into(),
            addr(),
            b"INVITE".to_vec(),
        );
        assert_eq!(
            tx.on_response(t0, 180, Vec::new),
            ResponseAction::PassUp { send: None }
        );
        assert_eq!(tx.state(), State::Proceeding);
        assert_eq!(
            tx.deadline(),
            None,
            "in Proceeding the INVITE waits for the TU"
        );
    }

    #[test]
    fn non_2xx_final_is_acked_then_retransmissions_reack_until_timer_d() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::start(
            Kind::Invite,
            t0,
            Timers::default(),
            "b".into(),
            addr(),
            b"INVITE".to_vec(),
        );
        assert_eq!(
            tx.on_response(t0, 486, || b"ACK".to_vec()),
            ResponseAction::PassUp {
                send: Some(b"ACK".to_vec())
            }
        );
        assert_eq!(
            tx.on_response(t0, 486, || unreachable!()),
            ResponseAction::Absorb {
                send: Some(b"ACK".to_vec())
            }
        );
        assert_eq!(tx.deadline(), Some(t0 + Duration::from_secs(32)));
        assert_eq!(
            tx.on_timeout(t0 + Duration::from_secs(32)),
            Some(TimerAction::Terminated)
        );
    }

    #[test]
    fn non_invite_final_lingers_for_timer_k() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::start(
            Kind::NonInvite,
            t0,
            Timers::default(),
            "b".into(),
            addr(),
            b"BYE".to_vec(),
        );
        assert!(matches!(
            tx.on_response(t0, 200, Vec::new),
            ResponseAction::PassUp { .. }
        ));
        assert!(matches!(
            tx.on_response(t0, 200, Vec::new),
            ResponseAction::Absorb { send: None }
        ));
        assert_eq!(tx.deadline(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(
            tx.on_timeout(t0 + Duration::from_secs(5)),
            Some(TimerAction::Terminated)
        );
    }

    #[test]
    fn reliable_transport_never_retransmits_and_does_not_linger() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::start(
            Kind::NonInvite,
            t0,
            Timers::default(),
            "b".into(),
            addr(),
            b"BYE".to_vec(),
        )
        .over_reliable(true);
        let (retransmits, end) = run_until_quiet(&mut tx, t0);
        assert!(retransmits.is_empty());
        assert_eq!(end, Some(TimerAction::TimedOut), "Timer F still runs");
        let mut tx = ClientTransaction::start(
            Kind::Invite,
            t0,
            Timers::default(),
            "b".into(),
            addr(),
            b"INVITE".to_vec(),
        )
        .over_reliable(true);
        tx.on_response(t0, 486, || b"ACK".to_vec());
        assert_eq!(tx.deadline(), Some(t0), "Timer D is zero on TCP");
    }

    #[test]
    fn invite_2xx_terminates_at_once() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::start(
            Kind::Invite,
            t0,
            Timers::default(),
            "b".into(),
            addr(),
            b"INVITE".to_vec(),
        );
        assert!(matches!(
            tx.on_response(t0, 200, Vec::new),
            ResponseAction::PassUp { send: None }
        ));
        assert!(tx.is_terminated());
        assert_eq!(tx.deadline(), None);
    }
}
