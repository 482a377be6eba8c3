//! Pipeline templates: gst-launch descriptions in `pipelines/*.pipeline` with `{placeholders}` and a contract
//! of element names the gateway drives. Checked at start-up so a broken template stops the gateway with a
//! message naming the file and the problem, not a call at 3 a.m.
//!
//! Two kinds: call templates (depayloaded from `audio_in`/`video_in`, FLV out of an element named `mux`; the
//! gateway owns the RTP/RTCP side in front of them) and output templates (FLV in through an appsrc named
//! `flv_in`, out to one RTMP target or one file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gst::prelude::*;

use crate::sdp::AudioCodec;

/// Element names of the contracts.
pub const AUDIO_IN: &str = "audio_in";
pub const VIDEO_IN: &str = "video_in";
pub const MUX: &str = "mux";
pub const FLV_IN: &str = "flv_in";
pub const RTMP_OUT: &str = "rtmp_out";
pub const FILE_OUT: &str = "file_out";

/// What a template must contain: (element name, why, properties the gateway sets on it).
type Contract = &'static [(&'static str, &'static str, &'static [&'static str])];

const AUDIO_CONTRACT: Contract = &[
    (
        AUDIO_IN,
        "the audio depayloader the gateway feeds the call's audio RTP to",
        &[],
    ),
    (
        MUX,
        "the flvmux whose output the gateway fans out to the call's targets",
        &["streamable"],
    ),
];
const AV_CONTRACT: Contract = &[
    (
        AUDIO_IN,
        "the audio depayloader the gateway feeds the call's audio RTP to",
        &[],
    ),
    (
        VIDEO_IN,
        "the video depayloader the gateway feeds the call's video RTP to",
        &[],
    ),
    (
        MUX,
        "the flvmux whose output the gateway fans out to the call's targets",
        &["streamable"],
    ),
];
const RTMP_OUTPUT_CONTRACT: Contract = &[
    (
        FLV_IN,
        "the appsrc the call's FLV enters by",
        &["caps", "is-live"],
    ),
    (
        RTMP_OUT,
        "the RTMP sink the gateway points at rtmpUrl/rtmpStream",
        &["location"],
    ),
];
const FILE_OUTPUT_CONTRACT: Contract = &[
    (
        FLV_IN,
        "the appsrc the call's FLV enters by",
        &["caps", "is-live"],
    ),
    (
        FILE_OUT,
        "the file sink the gateway points at the recording's path",
        &["location"],
    ),
];

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
    #[error("pipeline template {path}: {name:?} must have its {pad} pad, unlinked: the gateway links it")]
    PadLinked {
        path: PathBuf,
        name: &'static str,
        pad: &'static str,
    },
    #[error("pipeline template {path}: not found in {dir} (config media.{setting})")]
    NotFound {
        path: PathBuf,
        dir: PathBuf,
        setting: &'static str,
    },
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
    contract: Contract,
}

impl Template {
    fn load(path: &Path, contract: Contract) -> Result<Self, TemplateError> {
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
            contract,
        })
    }

    /// The description with placeholders filled.
    pub fn fill(&self, values: &BTreeMap<&'static str, String>) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(self.text.len());
        let mut rest = self.text.as_str();
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let end = after.find('}').ok_or_else(|| TemplateError::Unclosed {
                path: self.path.clone(),
            })?;
            let name = &after[..end];
            let value = values
                .get(name)
                .ok_or_else(|| TemplateError::UnknownPlaceholder {
                    path: self.path.clone(),
                    name: name.to_owned(),
                    known: values.keys().copied().collect::<Vec<_>>().join(", "),
                })?;
            out.push_str(value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Fills and parses the template into a pipeline, and checks its contract.
    fn instantiate_with(
        &self,
        values: &BTreeMap<&'static str, String>,
    ) -> Result<gst::Pipeline, TemplateError> {
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
        for (name, why, properties) in self.contract {
            let element = pipeline
                .by_name(name)
                .ok_or_else(|| TemplateError::MissingElement {
                    path: self.path.clone(),
                    name,
                    why,
                })?;
            for property in *properties {
                if element.find_property(property).is_none() {
                    return Err(TemplateError::MissingProperty {
                        path: self.path.clone(),
                        name,
                        property,
                    });
                }
            }
            let (pad, must_exist) = match *name {
                MUX => ("src", false),
                AUDIO_IN | VIDEO_IN => ("sink", true),
                _ => continue,
            };
            match element.static_pad(pad) {
                Some(p) if p.is_linked() => {
                    return Err(TemplateError::PadLinked {
                        path: self.path.clone(),
                        name,
                        pad,
                    });
                }
                None if must_exist => {
                    return Err(TemplateError::PadLinked {
                        path: self.path.clone(),
                        name,
                        pad,
                    })
                }
                _ => {}
            }
        }
        Ok(pipeline)
    }

    /// A call pipeline for these values.
    pub fn instantiate(&self, values: &Values) -> Result<gst::Pipeline, TemplateError> {
        self.instantiate_with(&values.map())
    }

    /// An output pipeline (output templates have no placeholders).
    pub fn instantiate_output(&self) -> Result<gst::Pipeline, TemplateError> {
        self.instantiate_with(&BTreeMap::new())
    }
}

/// Every template the gateway uses, loaded and checked.
#[derive(Debug, Clone)]
pub struct Templates {
    /// Audio-only calls.
    pub audio_g711: Template,
    /// Calls with H.264 video.
    pub h264: Template,
    /// Calls with VP8 video.
    pub vp8: Template,
    pub rtmp_output: Template,
    pub file_output: Template,
}

/// Which files to load (config `media.*_template`).
pub struct TemplateNames<'a> {
    pub audio_g711: &'a str,
    pub h264: &'a str,
    pub vp8: &'a str,
    pub rtmp_output: &'a str,
    pub file_output: &'a str,
}

impl Templates {
    /// Loads the configured templates from `dir` and checks each one. Requires `media::init()`.
    pub fn load(
        dir: &Path,
        names: &TemplateNames<'_>,
        jitter_latency_ms: u32,
        aac_bitrate: u32,
    ) -> Result<Self, TemplateError> {
        let load = |name: &str, setting: &'static str, contract: Contract| {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(TemplateError::NotFound {
                    path,
                    dir: dir.to_owned(),
                    setting,
                });
            }
            Template::load(&path, contract)
        };
        let audio_g711 = load(names.audio_g711, "audio_g711_template", AUDIO_CONTRACT)?;
        let h264 = load(names.h264, "h264_template", AV_CONTRACT)?;
        let vp8 = load(names.vp8, "vp8_template", AV_CONTRACT)?;
        for template in [&audio_g711, &h264, &vp8] {
            for codec in [AudioCodec::Pcmu, AudioCodec::Pcma] {
                template.instantiate(&Values {
                    codec,
                    jitter_latency_ms,
                    aac_bitrate,
                })?;
            }
        }
        let rtmp_output = load(
            names.rtmp_output,
            "rtmp_output_template",
            RTMP_OUTPUT_CONTRACT,
        )?;
        rtmp_output.instantiate_output()?;
        let file_output = load(
            names.file_output,
            "file_output_template",
            FILE_OUTPUT_CONTRACT,
        )?;
        file_output.instantiate_output()?;
        Ok(Self {
            audio_g711,
            h264,
            vp8,
            rtmp_output,
            file_output,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: TemplateNames<'static> = TemplateNames {
        audio_g711: "audio-g711-aac.pipeline",
        h264: "av-g711-h264.pipeline",
        vp8: "av-g711-vp8.pipeline",
        rtmp_output: "output-rtmp.pipeline",
        file_output: "output-file.pipeline",
    };

    fn call_template(text: &str) -> (tempfile::TempDir, Template) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pipeline");
        std::fs::write(&path, text).unwrap();
        let t = Template::load(&path, AUDIO_CONTRACT).unwrap();
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
        crate::media::init().unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        Templates::load(&dir, &NAMES, 200, 64000).unwrap_or_else(|e| panic!("{e}"));
        // The alternatives operators can switch to are valid audio-only call templates too.
        for alternative in [
            "audio-g711-passthrough.pipeline",
            "audio-g711-aac-black-video.pipeline",
        ] {
            let t = Template::load(&dir.join(alternative), AUDIO_CONTRACT).unwrap();
            t.instantiate(&values()).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn fill_replaces_placeholders_and_drops_comments() {
        let (_d, t) =
            call_template("# comment {nope}\n{depay} name=audio_in ! {decoder} ! fakesink");
        assert_eq!(
            t.fill(&values().map()).unwrap(),
            "rtppcmadepay name=audio_in ! alawdec ! fakesink"
        );
    }

    #[test]
    fn unknown_placeholder_names_the_file_and_the_name() {
        let (_d, t) = call_template("udpsrc ! {rtmp_key} ! fakesink");
        let err = t.fill(&values().map()).unwrap_err().to_string();
        assert!(
            err.contains("t.pipeline") && err.contains("{rtmp_key}") && err.contains("depay"),
            "{err}"
        );
        let (_d, t) = call_template("udpsrc ! {depay ! fakesink");
        assert!(matches!(
            t.fill(&values().map()),
            Err(TemplateError::Unclosed { .. })
        ));
    }

    #[test]
    fn parse_errors_and_broken_contracts_are_reported() {
        crate::media::init().unwrap();
        let (_d, t) = call_template("rtppcmudepay name=audio_in ! nosuchelement ! flvmux name=mux");
        let err = t.instantiate(&values()).unwrap_err();
        assert!(matches!(err, TemplateError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("nosuchelement"), "{err}");

        let (_d, t) = call_template("rtppcmudepay name=audio_in ! fakesink");
        let err = t.instantiate(&values()).unwrap_err().to_string();
        assert!(err.contains("\"mux\""), "{err}");

        let (_d, t) = call_template("audiotestsrc name=audio_in ! voaacenc ! flvmux name=mux");
        let err = t.instantiate(&values()).unwrap_err().to_string();
        assert!(
            err.contains("audio_in") && err.contains("sink"),
            "a source cannot be fed RTP: {err}"
        );

        let (_d, t) = call_template(
            "rtppcmudepay name=audio_in ! mulawdec ! voaacenc ! flvmux name=mux ! fakesink",
        );
        let err = t.instantiate(&values()).unwrap_err().to_string();
        assert!(err.contains("unlinked"), "{err}");

        let (_d, t) = call_template(
            "udpsrc ! rtppcmudepay name=audio_in ! mulawdec ! voaacenc ! flvmux name=mux",
        );
        let err = t.instantiate(&values()).unwrap_err().to_string();
        assert!(
            err.contains("audio_in") && err.contains("unlinked"),
            "{err}"
        );
    }

    #[test]
    fn output_templates_need_their_names() {
        crate::media::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.pipeline");
        std::fs::write(&path, "appsrc name=flv_in ! fakesink name=rtmp_out").unwrap();
        let err = Template::load(&path, RTMP_OUTPUT_CONTRACT)
            .unwrap()
            .instantiate_output()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("location"),
            "a fakesink cannot be pointed at an RTMP URL: {err}"
        );
        std::fs::write(&path, "appsrc name=flv_in ! filesink name=file_out").unwrap();
        Template::load(&path, FILE_OUTPUT_CONTRACT)
            .unwrap()
            .instantiate_output()
            .unwrap();
        assert!(Template::load(&path, RTMP_OUTPUT_CONTRACT)
            .unwrap()
            .instantiate_output()
            .is_err());
    }

    #[test]
    fn missing_configured_template_names_the_setting() {
        crate::media::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = Templates::load(dir.path(), &NAMES, 50, 32000)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("audio-g711-aac.pipeline") && err.contains("audio_g711_template"),
            "{err}"
        );
    }
}
