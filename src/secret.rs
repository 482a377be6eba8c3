//! Values that must never reach a log line, an API response or a webhook.
//!
//! `Password` has no way to print itself. `StreamKey` prints only a redacted form; the full key is reachable
//! only through [`StreamKey::expose`], which the media room uses to build the RTMP location and nothing else.

use std::fmt;

/// A SIP password. `Debug` and `Display` print `***`; the value leaves only through [`Password::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The clear text, for computing a digest response. Never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How many leading characters of a stream key stay visible in redacted output.
pub const STREAM_KEY_VISIBLE_CHARS: usize = 4;

/// An RTMP stream name, which for a CDN is the secret stream key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StreamKey(String);

impl StreamKey {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The full key, for the RTMP sink's location and for uniqueness checks. Never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first few characters and "...", safe to show anywhere.
    pub fn redacted(&self) -> String {
        redact_key(&self.0)
    }

    /// Replaces every occurrence of the key in `text` (a GStreamer error message, say) by its redacted form.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            return text.to_owned();
        }
        text.replace(&self.0, &self.redacted())
    }
}

impl fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn redact_key(key: &str) -> String {
    let visible: String = key.chars().take(STREAM_KEY_VISIBLE_CHARS).collect();
    if visible.len() == key.len() && key.chars().count() <= STREAM_KEY_VISIBLE_CHARS {
        // A key this short would be shown whole; show nothing of it instead.
        return "...".to_owned();
    }
    format!("{visible}...")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_never_formats() {
        let p = Password::new("hunter2");
        assert_eq!(format!("{p:?}"), "***");
        assert_eq!(p.expose(), "hunter2");
    }

    #[test]
    fn stream_key_shows_only_its_prefix() {
        let k = StreamKey::new("abcd-efgh-ijkl");
        assert_eq!(k.to_string(), "abcd...");
        assert_eq!(format!("{k:?}"), "abcd...");
        assert!(!k.to_string().contains("efgh"));
    }

    #[test]
    fn short_stream_key_is_hidden_whole() {
        assert_eq!(StreamKey::new("abc").redacted(), "...");
        assert_eq!(StreamKey::new("abcd").redacted(), "...");
        assert_eq!(StreamKey::new("").redacted(), "...");
    }

    #[test]
    fn scrub_replaces_every_occurrence() {
        let k = StreamKey::new("secretkey123");
        let msg = "Could not connect to rtmp://h/live/secretkey123 (secretkey123)";
        let scrubbed = k.scrub(msg);
        assert!(!scrubbed.contains("secretkey123"));
        assert_eq!(
            scrubbed,
            "Could not connect to rtmp://h/live/secr... (secr...)"
        );
    }

    #[test]
    fn multibyte_keys_do_not_panic() {
        assert_eq!(StreamKey::new("ключ-секрет").redacted(), "ключ...");
    }
}
