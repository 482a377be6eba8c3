//! Pipeline templates: gst-launch descriptions in `pipelines/*.pipeline` with `{placeholders}` and a contract
//! of element names the gateway drives. Checked at start-up so a broken template stops the gateway with a
//! message naming the file and the problem, not a call at 3 a.m.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gst::prelude::*;

use crate::sdp::AudioCodec;

/// The element names every template must declare, and what the gateway does with them.
pub const RTP_IN: &str = "rtp_in";
pub const RTMP_OUT: &str = "rtmp_out";

/// Properties the gateway sets on the named elements; the template must not depend on them being absent.
const RTP_IN_PROPERTIES: &[&str] = &["address", "port", "caps", "reuse"];
const RTMP_OUT_PROPERTIES: &[&str] = &["location"];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read pipeline template {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pipeline template {path}: unknown placeholder {{{name}}}; known: {known}")]
    UnknownPlaceholder {
        path: PathBuf,
        name: String,
        known: String,
    },
    #[error("pipeline template {path}: unclosed '{{'")]
    Unclosed { path: PathBuf },
    #[error("pipeline template {path} does not parse: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("pipeline template {path}: no element named {name:?} ({why})")]
    MissingElement {
        path: PathBuf,
        name: &'static str,
        why: &'static str,
    },
    #[error("pipeline template {path}: element {name:?} has no property {property:?} (is it the right element?)")]
    MissingProperty {
        path: PathBuf,
        name: &'static str,
        property: &'static str,
    },
    #[error("pipeline template {path}: not found in {dir} (config media.audio_g711_template)")]
    NotFound { path: PathBuf, dir: PathBuf },
}

/// Values for the placeholders of one call.
#[derive(Debug, Clone)]
pub struct Values {
    pub codec: AudioCodec,
    pub jitter_latency_ms: u32,
    pub aac_bitrate: u32,
}

impl Values {
    fn map(&self) -> BTreeMap<&'static str, String> {
        let (depay, decoder) = match self.codec {
            AudioCodec::Pcmu => ("rtppcmudepay", "mulawdec"),
            AudioCodec::Pcma => ("rtppcmadepay", "alawdec"),
        };
        BTreeMap::from([
            ("depay", depay.to_owned()),
            ("decoder", decoder.to_owned()),
            ("jitter_latency_ms", self.jitter_latency_ms.to_string()),
            ("aac_bitrate", self.aac_bitrate.to_string()),
        ])
    }
}

/// A loaded template.
#[derive(Debug, Clone)]
pub struct Template {
    pub path: PathBuf,
    text: String,
}

impl Template {
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let raw = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
            path: path.to_owned(),
            source,
        })?;
        // `#` starts a comment line; the rest is one gst-launch description.
        let text = raw
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        Ok(Self {
            path: path.to_owned(),
            text,
        })
    }

    /// The description with placeholders filled. Never log it: it is built to hold no secret, but it is
    /// the operator's tuning, not ours to print.
    pub fn fill(&self, values: &Values) -> Result<String, TemplateError> {
        let map = values.map();
        let mut out = String::with_capacity(self.text.len());
        let mut rest = self.text.as_str();
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let end = after.find('}').ok_or_else(|| TemplateError::Unclosed {
                path: self.path.clone(),
            })?;
            let name = &after[..end];
            let value = map
                .get(name)
                .ok_or_else(|| TemplateError::UnknownPlaceholder {
                    path: self.path.clone(),
                    name: name.to_owned(),
                    known: map.keys().copied().collect::<Vec<_>>().join(", "),
                })?;
            out.push_str(value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Fills and parses the template into a pipeline, and checks the element contract.
    pub fn instantiate(&self, values: &Values) -> Result<gst::Pipeline, TemplateError> {
        let description = self.fill(values)?;
        let parsed = gst::parse::launch(&description).map_err(|e| TemplateError::Parse {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let pipeline = parsed
            .downcast::<gst::Pipeline>()
            .map_err(|_| TemplateError::Parse {
                path: self.path.clone(),
                message: "the description must be a pipeline of several elements".to_owned(),
            })?;
        self.check_contract(&pipeline)?;
        Ok(pipeline)
    }

    fn check_contract(&self, pipeline: &gst::Pipeline) -> Result<(), TemplateError> {
        for (name, why, properties) in [
            (
                RTP_IN,
                "the udpsrc the call's RTP arrives on",
                RTP_IN_PROPERTIES,
            ),
            (
                RTMP_OUT,
                "the RTMP sink the gateway points at rtmpUrl/rtmpStream",
                RTMP_OUT_PROPERTIES,
            ),
        ] {
            let element = pipeline
                .by_name(name)
                .ok_or_else(|| TemplateError::MissingElement {
                    path: self.path.clone(),
                    name,
                    why,
                })?;
            for property in properties {
                if element.find_property(property).is_none() {
                    return Err(TemplateError::MissingProperty {
                        path: self.path.clone(),
                        name,
                        property,
                    });
                }
            }
        }
        Ok(())
    }

    /// Start-up check: the template instantiates for every codec it may be used with.
    pub fn check(&self, jitter_latency_ms: u32, aac_bitrate: u32) -> Result<(), TemplateError> {
        for codec in [AudioCodec::Pcmu, AudioCodec::Pcma] {
            let pipeline = self.instantiate(&Values {
                codec,
                jitter_latency_ms,
                aac_bitrate,
            })?;
            drop(pipeline);
        }
        Ok(())
    }
}

/// Every template the gateway uses, loaded and checked.
#[derive(Debug, Clone)]
pub struct Templates {
    pub audio_g711: Template,
}

impl Templates {
    /// Loads the configured templates from `dir` and checks them. Requires `gst::init()`.
    pub fn load(
        dir: &Path,
        audio_g711: &str,
        jitter_latency_ms: u32,
        aac_bitrate: u32,
    ) -> Result<Self, TemplateError> {
        let path = dir.join(audio_g711);
        if !path.is_file() {
            return Err(TemplateError::NotFound {
                path,
                dir: dir.to_owned(),
            });
        }
        let audio_g711 = Template::load(&path)?;
        audio_g711.check(jitter_latency_ms, aac_bitrate)?;
        Ok(Self { audio_g711 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(text: &str) -> (tempfile::TempDir, Template) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pipeline");
        std::fs::write(&path, text).unwrap();
        let t = Template::load(&path).unwrap();
        (dir, t)
    }

    fn values() -> Values {
        Values {
            codec: AudioCodec::Pcma,
            jitter_latency_ms: 50,
            aac_bitrate: 32000,
        }
    }

    #[test]
    fn shipped_templates_pass_the_start_up_check() {
        gst::init().unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "pipeline") {
                Template::load(&path)
                    .unwrap()
                    .check(200, 64000)
                    .unwrap_or_else(|e| panic!("{e}"));
                checked += 1;
            }
        }
        assert!(checked >= 1);
        Templates::load(&dir, "audio-g711-aac.pipeline", 200, 64000).unwrap();
    }

    #[test]
    fn fill_replaces_placeholders_and_drops_comments() {
        let (_d, t) =
            template("# comment {nope}\nudpsrc name=rtp_in ! {depay} ! {decoder} ! fakesink");
        assert_eq!(
            t.fill(&values()).unwrap(),
            "udpsrc name=rtp_in ! rtppcmadepay ! alawdec ! fakesink"
        );
    }

    #[test]
    fn unknown_placeholder_names_the_file_and_the_name() {
        let (_d, t) = template("udpsrc ! {rtmp_key} ! fakesink");
        let err = t.fill(&values()).unwrap_err().to_string();
        assert!(
            err.contains("t.pipeline") && err.contains("{rtmp_key}") && err.contains("depay"),
            "{err}"
        );
        let (_d, t) = template("udpsrc ! {depay ! fakesink");
        assert!(matches!(
            t.fill(&values()),
            Err(TemplateError::Unclosed { .. })
        ));
    }

    #[test]
    fn parse_errors_and_missing_names_are_reported() {
        gst::init().unwrap();
        let (_d, t) = template("udpsrc name=rtp_in ! nosuchelement ! fakesink name=rtmp_out");
        let err = t.check(50, 32000).unwrap_err();
        assert!(matches!(err, TemplateError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("nosuchelement"), "{err}");

        let (_d, t) = template("udpsrc name=rtp_in ! fakesink");
        let err = t.check(50, 32000).unwrap_err().to_string();
        assert!(err.contains("rtmp_out"), "{err}");

        let (_d, t) = template("udpsrc name=rtp_in ! fakesink name=rtmp_out");
        let err = t.check(50, 32000).unwrap_err().to_string();
        assert!(
            err.contains("location"),
            "a fakesink cannot be pointed at an RTMP URL: {err}"
        );

        let (_d, t) = template("audiotestsrc name=rtp_in ! filesink name=rtmp_out");
        let err = t.check(50, 32000).unwrap_err().to_string();
        assert!(err.contains("rtp_in") && err.contains("address"), "{err}");
    }

    #[test]
    fn missing_configured_template_is_reported() {
        gst::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = Templates::load(dir.path(), "audio-g711-aac.pipeline", 50, 32000)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("audio-g711-aac.pipeline") && err.contains("audio_g711_template"),
            "{err}"
        );
    }
}
