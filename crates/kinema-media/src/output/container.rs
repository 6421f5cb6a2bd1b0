//! The file formats a video stream is stored in.

/// The container a video stream is muxed into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Container {
    /// ISO-BMFF MP4 with the `moov` index at the front (`+faststart`), so a
    /// browser can start playing before the whole file has arrived.
    Mp4,
    /// WebM (Matroska subset) for VP9 and AV1.
    Webm,
}

impl Container {
    /// Every container Kinema can write.
    pub const ALL: [Container; 2] = [Container::Mp4, Container::Webm];

    /// Short name, as used in the output string (`mp4`, `webm`).
    pub fn name(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
            Container::Webm => "webm",
        }
    }

    /// Parses [`Container::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Container::ALL.into_iter().find(|c| c.name() == name)
    }

    /// File extension, without the dot.
    pub fn extension(self) -> &'static str {
        self.name()
    }

    /// MIME type of a file in this container.
    pub fn mime(self) -> &'static str {
        match self {
            Container::Mp4 => "video/mp4",
            Container::Webm => "video/webm",
        }
    }

    /// FFmpeg's muxer name.
    pub(crate) fn muxer(self) -> &'static str {
        self.name()
    }
}

impl std::fmt::Display for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
