//! The FFmpeg encoders behind each codec: names, size limits, and how the
//! shared quality and preset knobs map onto each one's own options.

use ffmpeg_next::Dictionary;

use super::{Codec, PixelFormat, Preset};

/// An FFmpeg encoder Kinema knows how to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoEncoder {
    Libx264,
    Libx265,
    /// SVT-AV1: the fast AV1 encoder, preferred for AV1. 4:2:0 only.
    LibsvtAv1,
    /// libaom: the reference AV1 encoder; slower, but also does 4:4:4 and
    /// small sizes.
    LibaomAv1,
    LibvpxVp9,
}

impl VideoEncoder {
    /// Every encoder Kinema knows.
    pub const ALL: [VideoEncoder; 5] = [
        VideoEncoder::Libx264,
        VideoEncoder::Libx265,
        VideoEncoder::LibsvtAv1,
        VideoEncoder::LibaomAv1,
        VideoEncoder::LibvpxVp9,
    ];

    /// FFmpeg's name for the encoder (`libx264`, `libaom-av1`, ...).
    pub fn name(self) -> &'static str {
        match self {
            VideoEncoder::Libx264 => "libx264",
            VideoEncoder::Libx265 => "libx265",
            VideoEncoder::LibsvtAv1 => "libsvtav1",
            VideoEncoder::LibaomAv1 => "libaom-av1",
            VideoEncoder::LibvpxVp9 => "libvpx-vp9",
        }
    }

    /// Parses [`VideoEncoder::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        VideoEncoder::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The codec this encoder produces.
    pub fn codec(self) -> Codec {
        match self {
            VideoEncoder::Libx264 => Codec::H264,
            VideoEncoder::Libx265 => Codec::H265,
            VideoEncoder::LibsvtAv1 | VideoEncoder::LibaomAv1 => Codec::Av1,
            VideoEncoder::LibvpxVp9 => Codec::Vp9,
        }
    }

    /// Smallest width and height this encoder accepts (it refuses to open below).
    pub fn min_side(self) -> u32 {
        match self {
            VideoEncoder::Libx265 => 16,
            VideoEncoder::LibsvtAv1 => 64,
            _ => 1,
        }
    }

    /// Whether `width` x `height` needs to be even for this encoder and format.
    /// 4:2:0 always does. x265 3.5 does for 4:4:4 too: an odd size corrupts its
    /// heap (seen as a glibc abort at 33x17).
    pub fn needs_even_size(self, pix: PixelFormat) -> bool {
        pix.subsamples_chroma() || self == VideoEncoder::Libx265
    }

    /// Why this encoder cannot take a `width` x `height` picture in `pix`, if it cannot.
    pub(crate) fn size_problem(
        self,
        pix: PixelFormat,
        width: u32,
        height: u32,
    ) -> Option<&'static str> {
        let odd = !width.is_multiple_of(2) || !height.is_multiple_of(2);
        if odd && pix.subsamples_chroma() {
            return Some(match pix {
                PixelFormat::Yuv420p10le => {
                    "yuv420p10le needs even width and height; resize or pad the frames"
                }
                _ => "yuv420p needs even width and height; resize or pad the frames",
            });
        }
        if odd && self.needs_even_size(pix) {
            return Some("libx265 needs even width and height, also in 4:4:4");
        }
        if width.min(height) < self.min_side() {
            return Some(match self {
                VideoEncoder::Libx265 => "libx265 needs width and height of at least 16",
                _ => {
                    "libsvtav1 needs width and height of at least 64 \
                     (encoder=libaom-av1 takes smaller sizes)"
                }
            });
        }
        None
    }

    /// The encoder's own speed setting for `preset`, as (option, value) pairs.
    ///
    /// | preset    | x264/x265 | svt-av1 `preset` | aom `cpu-used` | vpx-vp9 `deadline`/`cpu-used` |
    /// |-----------|-----------|------------------|----------------|-------------------------------|
    /// | ultrafast | ultrafast | 13               | 8              | realtime / 8                  |
    /// | superfast | superfast | 12               | 7              | realtime / 7                  |
    /// | veryfast  | veryfast  | 11               | 6              | realtime / 6                  |
    /// | faster    | faster    | 10               | 5              | good / 5                      |
    /// | fast      | fast      | 9                | 4              | good / 4                      |
    /// | medium    | medium    | 8                | 3              | good / 3                      |
    /// | slow      | slow      | 6                | 2              | good / 2                      |
    /// | slower    | slower    | 5                | 1              | good / 1                      |
    /// | veryslow  | veryslow  | 4                | 0              | good / 0                      |
    pub fn preset_options(self, preset: Preset) -> Vec<(&'static str, String)> {
        // Position on the scale: 0 = ultrafast ... 8 = veryslow.
        let step = preset as u8;
        match self {
            VideoEncoder::Libx264 | VideoEncoder::Libx265 => {
                vec![("preset", preset.name().to_string())]
            }
            VideoEncoder::LibsvtAv1 => {
                const SVT: [u8; 9] = [13, 12, 11, 10, 9, 8, 6, 5, 4];
                vec![("preset", SVT[usize::from(step)].to_string())]
            }
            VideoEncoder::LibaomAv1 => vec![("cpu-used", (8 - step).to_string())],
            VideoEncoder::LibvpxVp9 => {
                let deadline = if preset <= Preset::Veryfast {
                    "realtime"
                } else {
                    "good"
                };
                vec![
                    ("deadline", deadline.to_string()),
                    ("cpu-used", (8 - step).to_string()),
                ]
            }
        }
    }

    /// The encoder's private options for a constant-quality encode at `crf`.
    pub(crate) fn options(self, crf: u8, preset: Preset) -> Dictionary<'static> {
        let mut options = Dictionary::new();
        for (key, value) in self.preset_options(preset) {
            options.set(key, &value);
        }
        options.set("crf", &crf.to_string());
        match self {
            VideoEncoder::Libx264 => {
                if let Some(params) = x264_params() {
                    options.set("x264-params", params);
                }
            }
            // x265 logs its whole configuration to stderr at info level.
            VideoEncoder::Libx265 => options.set("x265-params", "log-level=error"),
            VideoEncoder::LibaomAv1 | VideoEncoder::LibvpxVp9 => options.set("row-mt", "1"),
            VideoEncoder::LibsvtAv1 => {}
        }
        options
    }

    /// Whether FFmpeg's default 200 kb/s target must be cleared for the CRF to
    /// mean constant quality (libvpx and libaom would otherwise cap the rate).
    /// x264 ignores the target when a CRF is set; its settings stay as they were
    /// so that its output stays byte for byte what it has been.
    pub(crate) fn clears_bit_rate(self) -> bool {
        self != VideoEncoder::Libx264
    }

    /// Whether to let FFmpeg pick a thread count (libaom and libvpx otherwise
    /// use one thread). x264 keeps FFmpeg's default, as above.
    pub(crate) fn auto_threads(self) -> bool {
        self != VideoEncoder::Libx264
    }
}

impl std::fmt::Display for VideoEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Extra x264 settings for this CPU.
///
/// x264's AVX-512 kernels (core 164, as Debian 12 ships it) read memory x264
/// allocated but never wrote: with them the bitstream depends on whatever the heap
/// held before, so the same frames encode to different bytes within one
/// long-running process (a fresh `ffmpeg` process gets zeroed pages and looks
/// deterministic). Every AVX-512 CPU also has AVX2, FMA3, BMI1/2 and LZCNT, so
/// capping x264 at its `AVX2` level there is safe; its output then equals x264's
/// plain-C output. Other CPUs keep x264's own detection.
fn x264_params() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return Some("asm=AVX2");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_codecs_list_their_encoders() {
        for encoder in VideoEncoder::ALL {
            assert_eq!(VideoEncoder::from_name(encoder.name()), Some(encoder));
            assert!(encoder.codec().encoders().contains(&encoder), "{encoder}");
        }
    }

    #[test]
    fn presets_map_monotonically() {
        // Faster presets never ask for a slower encoder setting.
        let svt: Vec<u8> = Preset::ALL
            .iter()
            .map(|p| {
                VideoEncoder::LibsvtAv1.preset_options(*p)[0]
                    .1
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(svt.windows(2).all(|w| w[0] > w[1]), "{svt:?}");
        let aom: Vec<u8> = Preset::ALL
            .iter()
            .map(|p| {
                VideoEncoder::LibaomAv1.preset_options(*p)[0]
                    .1
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(aom, [8, 7, 6, 5, 4, 3, 2, 1, 0]);
        assert_eq!(
            VideoEncoder::LibvpxVp9.preset_options(Preset::Veryfast)[0].1,
            "realtime"
        );
        assert_eq!(
            VideoEncoder::LibvpxVp9.preset_options(Preset::Faster)[0].1,
            "good"
        );
    }

    #[test]
    fn size_rules() {
        use PixelFormat::*;
        let x264 = VideoEncoder::Libx264;
        assert!(x264.size_problem(Yuv420p, 64, 48).is_none());
        assert!(x264.size_problem(Yuv420p, 63, 48).unwrap().contains("even"));
        assert!(x264
            .size_problem(Yuv420p10le, 64, 47)
            .unwrap()
            .contains("even"));
        assert!(x264.size_problem(Yuv444p, 33, 17).is_none());
        assert!(x264.size_problem(Yuv444p10le, 1, 1).is_none());
        let x265 = VideoEncoder::Libx265;
        assert!(x265.size_problem(Yuv444p, 33, 17).unwrap().contains("even"));
        assert!(x265.size_problem(Yuv444p, 14, 16).unwrap().contains("16"));
        assert!(x265.size_problem(Yuv444p, 16, 16).is_none());
        let svt = VideoEncoder::LibsvtAv1;
        assert!(svt.size_problem(Yuv420p, 62, 64).unwrap().contains("64"));
        assert!(svt.size_problem(Yuv420p, 64, 64).is_none());
        assert!(VideoEncoder::LibaomAv1
            .size_problem(Yuv444p, 3, 5)
            .is_none());
    }
}
