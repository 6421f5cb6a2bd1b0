//! The video codecs Kinema can produce, and what each allows.

use std::ops::RangeInclusive;

use ffmpeg_next::codec::Id;

use super::{Container, VideoEncoder};

/// A video compression format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 / AVC. Yuv420p in MP4 plays in every browser and player.
    H264,
    /// H.265 / HEVC, tagged `hvc1` in MP4 so Apple players accept it.
    H265,
    /// AV1: the smallest files; modern browsers decode it.
    Av1,
    /// VP9, in WebM.
    Vp9,
}

impl Codec {
    /// Every codec Kinema knows.
    pub const ALL: [Codec; 4] = [Codec::H264, Codec::H265, Codec::Av1, Codec::Vp9];

    /// Short name, as used in the output string (`h264`, `h265`, `av1`, `vp9`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
            Codec::Av1 => "av1",
            Codec::Vp9 => "vp9",
        }
    }

    /// Parses [`Codec::name`], and the aliases `avc` and `hevc`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "h264" | "avc" => Codec::H264,
            "h265" | "hevc" => Codec::H265,
            "av1" => Codec::Av1,
            "vp9" => Codec::Vp9,
            _ => return None,
        })
    }

    /// The quality values (CRF: lower is better and larger) this codec accepts.
    ///
    /// x264 and x265 take 0..=51; libvpx-vp9 0..=63; AV1 1..=63 (FFmpeg's
    /// libsvtav1 wrapper treats 0 as "not set").
    pub fn crf_range(self) -> RangeInclusive<u8> {
        match self {
            Codec::H264 | Codec::H265 => 0..=51,
            Codec::Av1 => 1..=63,
            Codec::Vp9 => 0..=63,
        }
    }

    /// The quality used when none is given: visually near-transparent for
    /// generated video at a compact size. H.264's 20 is the historical default
    /// of Kinema's MP4 output.
    pub fn default_crf(self) -> u8 {
        match self {
            Codec::H264 => 20,
            Codec::H265 => 24,
            Codec::Av1 => 30,
            Codec::Vp9 => 31,
        }
    }

    /// The containers this codec may be stored in; the first is the default.
    pub fn containers(self) -> &'static [Container] {
        match self {
            Codec::H264 | Codec::H265 => &[Container::Mp4],
            Codec::Av1 => &[Container::Mp4, Container::Webm],
            Codec::Vp9 => &[Container::Webm],
        }
    }

    /// The container used when none is given.
    pub fn default_container(self) -> Container {
        self.containers()[0]
    }

    /// The FFmpeg encoders for this codec, most preferred first. Without an
    /// explicit `encoder=`, the first one that is present and can encode the
    /// request is used.
    pub fn encoders(self) -> &'static [VideoEncoder] {
        match self {
            Codec::H264 => &[VideoEncoder::Libx264],
            Codec::H265 => &[VideoEncoder::Libx265],
            Codec::Av1 => &[VideoEncoder::LibsvtAv1, VideoEncoder::LibaomAv1],
            Codec::Vp9 => &[VideoEncoder::LibvpxVp9],
        }
    }

    /// FFmpeg's codec id (what an encoder found by name must produce).
    pub(crate) fn id(self) -> Id {
        match self {
            Codec::H264 => Id::H264,
            Codec::H265 => Id::HEVC,
            Codec::Av1 => Id::AV1,
            Codec::Vp9 => Id::VP9,
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
