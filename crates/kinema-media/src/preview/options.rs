//! [`PreviewOptions`]: format, size and rate of an animated preview, and
//! their compact text form.
//!
//! ```text
//! preview := ("webp" | "gif") (":" key "=" value)*
//! key     := "max"   longest side in pixels, 1..=2048      (default 320)
//!          | "fps"   highest frame rate, 1..=50            (default 16)
//!          | "q"     WebP quality 0..=100 (webp only)      (default 75)
//! ```

use std::fmt;
use std::str::FromStr;

/// Largest accepted `max_side`.
pub const MAX_PREVIEW_SIDE: u32 = 2048;
/// Largest accepted `max_fps`: GIF delays are whole hundredths of a second, and
/// browsers slow down delays under two hundredths.
pub const MAX_PREVIEW_FPS: u32 = 50;

/// The file format of an animated preview.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PreviewFormat {
    /// Animated WebP (libwebp_anim, lossy): small, full colour.
    Webp,
    /// Animated GIF with one 256-colour palette computed from the whole clip
    /// (FFmpeg's palettegen/paletteuse, Sierra-2-4A dithering).
    Gif,
}

impl PreviewFormat {
    /// Short name, as in the text form.
    pub fn name(self) -> &'static str {
        match self {
            PreviewFormat::Webp => "webp",
            PreviewFormat::Gif => "gif",
        }
    }

    /// File extension, without the dot.
    pub fn extension(self) -> &'static str {
        self.name()
    }

    /// MIME type of the file.
    pub fn mime(self) -> &'static str {
        match self {
            PreviewFormat::Webp => "image/webp",
            PreviewFormat::Gif => "image/gif",
        }
    }
}

/// How to make an animated preview of a clip: format, a bound on its size
/// and frame rate, and WebP's quality.
///
/// The preview keeps the clip's aspect ratio with its longest side at most
/// `max_side` (never upscaled; Lanczos downscaling), and keeps every k-th
/// frame, with k the smallest whole number that brings the rate to at most
/// `max_fps` (so timing stays exact: a 24 fps clip at `max_fps` 16 becomes 12
/// fps). It loops forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PreviewOptions {
    pub format: PreviewFormat,
    /// Longest side of the preview, in pixels: 1..=[`MAX_PREVIEW_SIDE`].
    pub max_side: u32,
    /// Highest frame rate: 1..=[`MAX_PREVIEW_FPS`].
    pub max_fps: u32,
    /// WebP quality, 0..=100 (ignored for GIF).
    pub quality: u8,
}

impl PreviewOptions {
    /// `format` with the defaults: 320 px, 16 fps, quality 75.
    pub fn new(format: PreviewFormat) -> Self {
        PreviewOptions {
            format,
            max_side: 320,
            max_fps: 16,
            quality: 75,
        }
    }

    /// Checks every field is in range.
    pub fn check(&self) -> Result<(), PreviewOptionError> {
        let out_of_range = |key, value: u32, min: u32, max: u32| {
            Err(PreviewOptionError::OutOfRange {
                key,
                value,
                min,
                max,
            })
        };
        if !(1..=MAX_PREVIEW_SIDE).contains(&self.max_side) {
            return out_of_range("max", self.max_side, 1, MAX_PREVIEW_SIDE);
        }
        if !(1..=MAX_PREVIEW_FPS).contains(&self.max_fps) {
            return out_of_range("fps", self.max_fps, 1, MAX_PREVIEW_FPS);
        }
        if self.quality > 100 {
            return out_of_range("q", u32::from(self.quality), 0, 100);
        }
        Ok(())
    }

    /// The preview's size for a `width` x `height` clip: the same aspect
    /// ratio, longest side at most `max_side`, each side at least 1.
    pub fn size_for(&self, width: u32, height: u32) -> (u32, u32) {
        let longest = width.max(height);
        if longest <= self.max_side {
            return (width, height);
        }
        let scale = |side: u32| {
            let scaled = (u64::from(side) * u64::from(self.max_side) + u64::from(longest) / 2)
                / u64::from(longest);
            u32::try_from(scaled).unwrap_or(u32::MAX).max(1)
        };
        (scale(width), scale(height))
    }

    /// Which frames the preview keeps: every `frame_step(fps)`-th, starting
    /// with the first.
    pub fn frame_step(&self, fps: u32) -> u32 {
        fps.div_ceil(self.max_fps.max(1)).max(1)
    }
}

impl Default for PreviewOptions {
    /// Animated WebP, at most 320 px and 16 fps, quality 75.
    fn default() -> Self {
        PreviewOptions::new(PreviewFormat::Webp)
    }
}

/// Why a preview string or combination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PreviewOptionError {
    #[error("the preview format is empty; expected `webp` or `gif`")]
    Empty,

    #[error("unknown preview format `{name}`: expected webp or gif")]
    UnknownFormat { name: String },

    #[error("`{part}` in the preview format is not `key=value`")]
    NotKeyValue { part: String },

    #[error("unknown preview option `{key}`: expected one of max, fps, q")]
    UnknownKey { key: String },

    #[error("preview option `{key}` is given more than once")]
    DuplicateKey { key: String },

    #[error("preview option `{key}={value}` is not a whole number")]
    NotANumber { key: &'static str, value: String },

    #[error("preview option {key}={value} is out of range: expected {min}..={max}")]
    OutOfRange {
        key: &'static str,
        value: u32,
        min: u32,
        max: u32,
    },

    #[error("preview option `q` applies to webp only")]
    QualityForGif,
}

impl FromStr for PreviewOptions {
    type Err = PreviewOptionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim().to_ascii_lowercase();
        if text.is_empty() {
            return Err(PreviewOptionError::Empty);
        }
        let mut parts = text.split(':');
        let head = parts.next().unwrap_or_default();
        let mut options = match head {
            "webp" => PreviewOptions::new(PreviewFormat::Webp),
            "gif" => PreviewOptions::new(PreviewFormat::Gif),
            _ => {
                return Err(PreviewOptionError::UnknownFormat {
                    name: head.to_string(),
                })
            }
        };
        let mut seen: Vec<&str> = Vec::new();
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .filter(|(key, value)| !key.is_empty() && !value.is_empty())
                .ok_or_else(|| PreviewOptionError::NotKeyValue {
                    part: part.to_string(),
                })?;
            if seen.contains(&key) {
                return Err(PreviewOptionError::DuplicateKey {
                    key: key.to_string(),
                });
            }
            seen.push(key);
            let key: &'static str = match key {
                "max" => "max",
                "fps" => "fps",
                "q" => "q",
                _ => {
                    return Err(PreviewOptionError::UnknownKey {
                        key: key.to_string(),
                    })
                }
            };
            let number: u32 = value.parse().map_err(|_| PreviewOptionError::NotANumber {
                key,
                value: value.to_string(),
            })?;
            match key {
                "max" => options.max_side = number,
                "fps" => options.max_fps = number,
                _ if options.format == PreviewFormat::Gif => {
                    return Err(PreviewOptionError::QualityForGif)
                }
                _ => {
                    options.quality =
                        u8::try_from(number).map_err(|_| PreviewOptionError::OutOfRange {
                            key: "q",
                            value: number,
                            min: 0,
                            max: 100,
                        })?
                }
            }
        }
        options.check()?;
        Ok(options)
    }
}

impl fmt::Display for PreviewOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let defaults = PreviewOptions::new(self.format);
        f.write_str(self.format.name())?;
        if self.max_side != defaults.max_side {
            write!(f, ":max={}", self.max_side)?;
        }
        if self.max_fps != defaults.max_fps {
            write!(f, ":fps={}", self.max_fps)?;
        }
        if self.format == PreviewFormat::Webp && self.quality != defaults.quality {
            write!(f, ":q={}", self.quality)?;
        }
        Ok(())
    }
}

impl TryFrom<String> for PreviewOptions {
    type Error = PreviewOptionError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<PreviewOptions> for String {
    fn from(options: PreviewOptions) -> String {
        options.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PreviewOptions, PreviewOptionError> {
        text.parse()
    }

    #[test]
    fn parses_and_round_trips() {
        assert_eq!(parse("webp").unwrap(), PreviewOptions::default());
        let gif = parse("GIF:max=240:fps=10").unwrap();
        assert_eq!(
            gif,
            PreviewOptions {
                format: PreviewFormat::Gif,
                max_side: 240,
                max_fps: 10,
                quality: 75
            }
        );
        assert_eq!(gif.to_string(), "gif:max=240:fps=10");
        for text in [
            "webp",
            "webp:q=90",
            "webp:max=64:fps=50:q=0",
            "gif",
            "gif:fps=1",
        ] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
        assert_eq!(parse("webp:q=75:max=320").unwrap().to_string(), "webp");
    }

    #[test]
    fn errors_name_the_problem() {
        let cases: &[(&str, PreviewOptionError)] = &[
            ("", PreviewOptionError::Empty),
            (
                "png",
                PreviewOptionError::UnknownFormat { name: "png".into() },
            ),
            (
                "gif:max",
                PreviewOptionError::NotKeyValue { part: "max".into() },
            ),
            (
                "gif:size=3",
                PreviewOptionError::UnknownKey { key: "size".into() },
            ),
            (
                "gif:fps=3:fps=4",
                PreviewOptionError::DuplicateKey { key: "fps".into() },
            ),
            (
                "gif:fps=x",
                PreviewOptionError::NotANumber {
                    key: "fps",
                    value: "x".into(),
                },
            ),
            (
                "gif:fps=0",
                PreviewOptionError::OutOfRange {
                    key: "fps",
                    value: 0,
                    min: 1,
                    max: 50,
                },
            ),
            (
                "gif:fps=51",
                PreviewOptionError::OutOfRange {
                    key: "fps",
                    value: 51,
                    min: 1,
                    max: 50,
                },
            ),
            (
                "webp:max=0",
                PreviewOptionError::OutOfRange {
                    key: "max",
                    value: 0,
                    min: 1,
                    max: 2048,
                },
            ),
            (
                "webp:max=4096",
                PreviewOptionError::OutOfRange {
                    key: "max",
                    value: 4096,
                    min: 1,
                    max: 2048,
                },
            ),
            (
                "webp:q=101",
                PreviewOptionError::OutOfRange {
                    key: "q",
                    value: 101,
                    min: 0,
                    max: 100,
                },
            ),
            (
                "webp:q=1000",
                PreviewOptionError::OutOfRange {
                    key: "q",
                    value: 1000,
                    min: 0,
                    max: 100,
                },
            ),
            ("gif:q=80", PreviewOptionError::QualityForGif),
        ];
        for (text, expected) in cases {
            assert_eq!(&parse(text).unwrap_err(), expected, "{text:?}");
        }
    }

    #[test]
    fn size_keeps_aspect_and_never_upscales() {
        let o = PreviewOptions::new(PreviewFormat::Gif);
        assert_eq!(o.size_for(160, 96), (160, 96));
        assert_eq!(o.size_for(1280, 720), (320, 180));
        assert_eq!(o.size_for(720, 1280), (180, 320));
        assert_eq!(o.size_for(832, 480), (320, 185));
        let tiny = PreviewOptions { max_side: 4, ..o };
        assert_eq!(tiny.size_for(1000, 10), (4, 1));
    }

    #[test]
    fn frame_step_brings_the_rate_under_the_cap() {
        let o = PreviewOptions::new(PreviewFormat::Webp); // 16 fps cap
        assert_eq!(o.frame_step(8), 1);
        assert_eq!(o.frame_step(16), 1);
        assert_eq!(o.frame_step(24), 2);
        assert_eq!(o.frame_step(30), 2);
        assert_eq!(o.frame_step(60), 4);
        assert_eq!(o.frame_step(1000), 63);
    }
}
