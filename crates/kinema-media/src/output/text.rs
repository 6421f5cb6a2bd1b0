//! The compact text form of a [`VideoOutput`], and its errors.
//!
//! ```text
//! output := head (":" key "=" value)*
//! head   := "h264" | "avc" | "h265" | "hevc" | "av1" | "vp9"   a codec, with its defaults
//!         | "mp4"                                              = h264
//!         | "webm"                                             = vp9
//! key    := "crf" | "preset" | "pix" | "container" | "encoder"
//! ```
//!
//! Names are matched without regard to ASCII case; surrounding whitespace is
//! ignored. Each key may appear once. `Display` writes the canonical form: the
//! codec name, then only the keys that differ from the codec's defaults, in
//! the order above.

use std::fmt;
use std::str::FromStr;

use super::options::names;
use super::{Codec, Container, PixelFormat, Preset, VideoEncoder, VideoOutput};

/// Why an output string or an output combination was refused. Every message
/// names the offending part and what would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutputOptionError {
    #[error("the output format is empty; expected e.g. `h264` or `h265:crf=24`")]
    Empty,

    #[error("unknown output format `{name}`: expected one of h264, h265, av1, vp9 (or mp4, webm)")]
    UnknownFormat { name: String },

    #[error("`{part}` in the output format is not `key=value`")]
    NotKeyValue { part: String },

    #[error("unknown output option `{key}`: expected one of crf, preset, pix, container, encoder")]
    UnknownKey { key: String },

    #[error("output option `{key}` is given more than once")]
    DuplicateKey { key: String },

    #[error("output option `{key}={value}` is invalid: expected {expected}")]
    BadValue {
        key: &'static str,
        value: String,
        expected: String,
    },

    #[error("crf {crf} is out of range for {codec}: expected {min}..={max}")]
    CrfOutOfRange {
        codec: &'static str,
        crf: u32,
        min: u8,
        max: u8,
    },

    #[error("{codec} cannot be stored in {container}: expected container {allowed}")]
    ContainerMismatch {
        codec: &'static str,
        container: &'static str,
        allowed: String,
    },

    #[error("encoder {encoder} does not produce {codec}: expected {allowed}")]
    EncoderMismatch {
        codec: &'static str,
        encoder: &'static str,
        allowed: String,
    },
}

impl FromStr for VideoOutput {
    type Err = OutputOptionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim().to_ascii_lowercase();
        if text.is_empty() {
            return Err(OutputOptionError::Empty);
        }
        let mut parts = text.split(':');
        let head = parts.next().unwrap_or_default();
        let mut output = match head {
            "mp4" => VideoOutput::new(Codec::H264),
            "webm" => VideoOutput::new(Codec::Vp9),
            _ => match Codec::from_name(head) {
                Some(codec) => VideoOutput::new(codec),
                None => {
                    return Err(OutputOptionError::UnknownFormat {
                        name: head.to_string(),
                    })
                }
            },
        };

        let mut seen: Vec<&str> = Vec::new();
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .filter(|(key, value)| !key.is_empty() && !value.is_empty())
                .ok_or_else(|| OutputOptionError::NotKeyValue {
                    part: part.to_string(),
                })?;
            if seen.contains(&key) {
                return Err(OutputOptionError::DuplicateKey {
                    key: key.to_string(),
                });
            }
            seen.push(key);
            match key {
                "crf" => {
                    let range = output.codec.crf_range();
                    // Parse wide so that `crf=300` reports a range, not a syntax error.
                    let crf: u32 = value.parse().map_err(|_| OutputOptionError::BadValue {
                        key: "crf",
                        value: value.to_string(),
                        expected: format!("a whole number in {}..={}", range.start(), range.end()),
                    })?;
                    output.crf = u8::try_from(crf)
                        .ok()
                        .filter(|crf| range.contains(crf))
                        .ok_or(OutputOptionError::CrfOutOfRange {
                            codec: output.codec.name(),
                            crf,
                            min: *range.start(),
                            max: *range.end(),
                        })?;
                }
                "preset" => {
                    output.preset = Preset::from_name(value).ok_or_else(|| {
                        bad("preset", value, names(Preset::ALL.iter().map(|p| p.name())))
                    })?;
                }
                "pix" => {
                    output.pixel_format = PixelFormat::from_name(value).ok_or_else(|| {
                        bad(
                            "pix",
                            value,
                            names(PixelFormat::ALL.iter().map(|p| p.name())),
                        )
                    })?;
                }
                "container" => {
                    output.container = Container::from_name(value).ok_or_else(|| {
                        bad(
                            "container",
                            value,
                            names(Container::ALL.iter().map(|c| c.name())),
                        )
                    })?;
                }
                "encoder" => {
                    output.encoder = Some(VideoEncoder::from_name(value).ok_or_else(|| {
                        bad(
                            "encoder",
                            value,
                            names(VideoEncoder::ALL.iter().map(|e| e.name())),
                        )
                    })?);
                }
                _ => {
                    return Err(OutputOptionError::UnknownKey {
                        key: key.to_string(),
                    })
                }
            }
        }
        output.check()?;
        Ok(output)
    }
}

fn bad(key: &'static str, value: &str, expected: String) -> OutputOptionError {
    OutputOptionError::BadValue {
        key,
        value: value.to_string(),
        expected: format!("one of {expected}"),
    }
}

impl fmt::Display for VideoOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let defaults = VideoOutput::new(self.codec);
        f.write_str(self.codec.name())?;
        if self.crf != defaults.crf {
            write!(f, ":crf={}", self.crf)?;
        }
        if self.preset != defaults.preset {
            write!(f, ":preset={}", self.preset)?;
        }
        if self.pixel_format != defaults.pixel_format {
            write!(f, ":pix={}", self.pixel_format)?;
        }
        if self.container != defaults.container {
            write!(f, ":container={}", self.container)?;
        }
        if let Some(encoder) = self.encoder {
            write!(f, ":encoder={encoder}")?;
        }
        Ok(())
    }
}

impl TryFrom<String> for VideoOutput {
    type Error = OutputOptionError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<VideoOutput> for String {
    fn from(output: VideoOutput) -> String {
        output.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<VideoOutput, OutputOptionError> {
        text.parse()
    }

    #[test]
    fn heads_give_codec_defaults() {
        assert_eq!(parse("h264").unwrap(), VideoOutput::default());
        assert_eq!(parse("mp4").unwrap(), VideoOutput::default());
        assert_eq!(parse(" H264 ").unwrap(), VideoOutput::default());
        assert_eq!(parse("avc").unwrap(), VideoOutput::default());
        assert_eq!(parse("hevc").unwrap(), VideoOutput::new(Codec::H265));
        let webm = parse("webm").unwrap();
        assert_eq!(webm, VideoOutput::new(Codec::Vp9));
        assert_eq!(webm.container, Container::Webm);
        let av1 = parse("av1").unwrap();
        assert_eq!((av1.container, av1.crf), (Container::Mp4, 30));
    }

    #[test]
    fn keys_set_fields() {
        let out = parse("h265:crf=22:preset=slow:pix=yuv444p10le").unwrap();
        assert_eq!(
            out,
            VideoOutput {
                codec: Codec::H265,
                container: Container::Mp4,
                pixel_format: PixelFormat::Yuv444p10le,
                crf: 22,
                preset: Preset::Slow,
                encoder: None,
            }
        );
        let out = parse("av1:container=webm:encoder=libaom-av1:pix=yuv420p10").unwrap();
        assert_eq!(out.container, Container::Webm);
        assert_eq!(out.encoder, Some(VideoEncoder::LibaomAv1));
        assert_eq!(out.pixel_format, PixelFormat::Yuv420p10le);
        assert_eq!((out.mime(), out.extension()), ("video/webm", "webm"));
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        for text in [
            "h264",
            "h264:crf=18:preset=veryslow",
            "h265:pix=yuv420p10le",
            "av1:crf=40:preset=fast:pix=yuv420p10le:container=webm:encoder=libsvtav1",
            "vp9:pix=yuv444p",
        ] {
            let out = parse(text).unwrap();
            assert_eq!(out.to_string(), text);
            assert_eq!(parse(&out.to_string()).unwrap(), out);
        }
        // Defaults spelled out are dropped; order is fixed.
        assert_eq!(
            parse("mp4:pix=yuv420p:crf=20:preset=medium")
                .unwrap()
                .to_string(),
            "h264"
        );
        assert_eq!(
            parse("webm:preset=fast").unwrap().to_string(),
            "vp9:preset=fast"
        );
    }

    #[test]
    fn every_combination_round_trips() {
        for codec in Codec::ALL {
            for &container in codec.containers() {
                for pixel_format in PixelFormat::ALL {
                    for preset in Preset::ALL {
                        for crf in [*codec.crf_range().start(), *codec.crf_range().end()] {
                            let out = VideoOutput {
                                codec,
                                container,
                                pixel_format,
                                crf,
                                preset,
                                encoder: codec.encoders().last().copied(),
                            };
                            assert_eq!(parse(&out.to_string()), Ok(out), "{out}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let cases: &[(&str, OutputOptionError, &str)] = &[
            ("", OutputOptionError::Empty, "empty"),
            (
                "h266",
                OutputOptionError::UnknownFormat { name: "h266".into() },
                "h264, h265, av1, vp9",
            ),
            (
                "h264:crf",
                OutputOptionError::NotKeyValue { part: "crf".into() },
                "key=value",
            ),
            (
                "h264:crf=",
                OutputOptionError::NotKeyValue { part: "crf=".into() },
                "key=value",
            ),
            (
                "h264:",
                OutputOptionError::NotKeyValue { part: "".into() },
                "key=value",
            ),
            (
                "h264:quality=3",
                OutputOptionError::UnknownKey { key: "quality".into() },
                "crf, preset, pix",
            ),
            (
                "h264:crf=20:crf=21",
                OutputOptionError::DuplicateKey { key: "crf".into() },
                "more than once",
            ),
            (
                "h264:crf=52",
                OutputOptionError::CrfOutOfRange { codec: "h264", crf: 52, min: 0, max: 51 },
                "0..=51",
            ),
            (
                "av1:crf=0",
                OutputOptionError::CrfOutOfRange { codec: "av1", crf: 0, min: 1, max: 63 },
                "1..=63",
            ),
            (
                "vp9:crf=4000000000",
                OutputOptionError::CrfOutOfRange { codec: "vp9", crf: 4_000_000_000, min: 0, max: 63 },
                "0..=63",
            ),
            (
                "h264:crf=-1",
                OutputOptionError::BadValue {
                    key: "crf",
                    value: "-1".into(),
                    expected: "a whole number in 0..=51".into(),
                },
                "whole number",
            ),
            (
                "h264:preset=ludicrous",
                OutputOptionError::BadValue {
                    key: "preset",
                    value: "ludicrous".into(),
                    expected: "one of ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, veryslow".into(),
                },
                "ultrafast",
            ),
            (
                "h264:pix=rgb24",
                OutputOptionError::BadValue {
                    key: "pix",
                    value: "rgb24".into(),
                    expected: "one of yuv420p, yuv444p, yuv420p10le, yuv444p10le".into(),
                },
                "yuv444p10le",
            ),
            (
                "vp9:container=mp4",
                OutputOptionError::ContainerMismatch {
                    codec: "vp9",
                    container: "mp4",
                    allowed: "webm".into(),
                },
                "cannot be stored in mp4",
            ),
            (
                "h264:container=webm",
                OutputOptionError::ContainerMismatch {
                    codec: "h264",
                    container: "webm",
                    allowed: "mp4".into(),
                },
                "expected container mp4",
            ),
            (
                "h264:encoder=libx265",
                OutputOptionError::EncoderMismatch {
                    codec: "h264",
                    encoder: "libx265",
                    allowed: "libx264".into(),
                },
                "does not produce h264",
            ),
            (
                "av1:encoder=librav1e",
                OutputOptionError::BadValue {
                    key: "encoder",
                    value: "librav1e".into(),
                    expected: "one of libx264, libx265, libsvtav1, libaom-av1, libvpx-vp9".into(),
                },
                "libsvtav1",
            ),
        ];
        for (text, expected, fragment) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(&err, expected, "{text:?}");
            assert!(err.to_string().contains(fragment), "{text:?}: {err}");
        }
    }

    #[test]
    fn check_refuses_inconsistent_structs() {
        let mut out = VideoOutput::new(Codec::Vp9);
        out.container = Container::Mp4;
        assert!(matches!(
            out.check(),
            Err(OutputOptionError::ContainerMismatch { .. })
        ));
        let out = VideoOutput {
            crf: 60,
            ..VideoOutput::default()
        };
        assert!(matches!(
            out.check(),
            Err(OutputOptionError::CrfOutOfRange { crf: 60, .. })
        ));
        let out = VideoOutput {
            encoder: Some(VideoEncoder::LibvpxVp9),
            ..VideoOutput::default()
        };
        assert!(matches!(
            out.check(),
            Err(OutputOptionError::EncoderMismatch { .. })
        ));
    }
}
