//! What the API asks of a live call besides start and terminate: DTMF and the republishing targets
//! ("push"). Validated values built by the API room; the driver carries them out and answers through a
//! [`Reply`]. No I/O here.

use tokio::sync::oneshot;

use super::RtmpStatus;
use crate::secret::StreamKey;
use crate::sip::ua::LegId;

/// The driver's answer to a command that expects one.
pub type Reply<T> = oneshot::Sender<Result<T, CommandError>>;

/// Why the driver did not carry out a command. The API maps each to an HTTP status in one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("{0} is not supported yet")]
    NotSupported(&'static str),
    #[error("no live call has this callId")]
    NoSuchCall,
    #[error("the call is not established")]
    NotEstablished,
    #[error("no push target has this mediaSessionId")]
    NoSuchTarget,
    #[error("the call already publishes to this rtmpUrl and stream")]
    TargetExists,
    #[error("the gateway did not answer in time; retry")]
    Unavailable,
}

/// How DTMF digits are sent: in the RTP stream (RFC 4733, "RFC2833" in WCS) or as SIP INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfKind {
    Rfc2833,
    Info,
}

impl DtmfKind {
    pub fn wcs_name(self) -> &'static str {
        match self {
            Self::Rfc2833 => "RFC2833",
            Self::Info => "INFO",
        }
    }

    pub fn from_wcs_name(name: &str) -> Option<Self> {
        [Self::Rfc2833, Self::Info]
            .into_iter()
            .find(|k| k.wcs_name().eq_ignore_ascii_case(name))
    }
}

/// Most digits one send_dtmf request may carry.
pub const MAX_DTMF_DIGITS: usize = 32;

/// Validated DTMF digits: 0-9, *, #, A-D (upper case), 1 to [`MAX_DTMF_DIGITS`] of them.
#[derive(Clone, PartialEq, Eq)]
pub struct Dtmf {
    digits: String,
    pub kind: DtmfKind,
}

impl Dtmf {
    /// `None` unless every character is a DTMF event and there are 1..=MAX_DTMF_DIGITS of them.
    pub fn new(digits: &str, kind: DtmfKind) -> Option<Self> {
        let digits = digits.to_ascii_uppercase();
        let valid = (1..=MAX_DTMF_DIGITS).contains(&digits.len())
            && digits
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D'));
        valid.then_some(Self { digits, kind })
    }

    /// The digits, for the media or SIP layer that sends them. Digits can be a PIN: never log them.
    pub fn digits(&self) -> &str {
        &self.digits
    }
}

impl std::fmt::Debug for Dtmf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A conference PIN is a secret: only the count is shown.
        write!(
            f,
            "Dtmf({} digits, {})",
            self.digits.len(),
            self.kind.wcs_name()
        )
    }
}

/// Another RTMP destination for a live call's media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    /// rtmp:// or rtmps:// URL without the stream name.
    pub rtmp_url: String,
    pub stream: StreamKey,
    /// Start muted (silence instead of the call's audio).
    pub muted: bool,
}

/// A push target as push/find shows it. The stream key is redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSnapshot {
    pub media_session_id: String,
    pub call_id: String,
    pub rtmp_url: String,
    pub rtmp_stream_redacted: String,
    pub rtmp_status: RtmpStatus,
    pub muted: bool,
}

/// A push/find filter: every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushFilter {
    pub media_session_id: Option<String>,
    /// The call, by callId or toStream (`streamName`).
    pub leg: Option<LegId>,
    pub rtmp_url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtmf_accepts_only_dtmf_events() {
        assert_eq!(
            Dtmf::new("12*#abcd", DtmfKind::Info).unwrap().digits(),
            "12*#ABCD"
        );
        for bad in ["", "1 2", "E", "١", &"1".repeat(MAX_DTMF_DIGITS + 1)] {
            assert!(Dtmf::new(bad, DtmfKind::Rfc2833).is_none(), "{bad:?}");
        }
        assert_eq!(DtmfKind::from_wcs_name("rfc2833"), Some(DtmfKind::Rfc2833));
        assert_eq!(DtmfKind::from_wcs_name("SIP"), None);
    }

    #[test]
    fn dtmf_digits_never_format() {
        let d = Dtmf::new("4711", DtmfKind::Rfc2833).unwrap();
        assert!(!format!("{d:?}").contains("4711"));
    }
}
