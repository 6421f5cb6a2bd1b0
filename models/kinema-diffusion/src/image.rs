use std::sync::Arc;

/// A conditioning image as a pipeline receives it: packed RGB24, `[row][column][channel]`,
/// already fitted to the request's `width` x `height` by the caller (the server's
/// documented fit), so a pipeline never resizes it to the video's size itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Arc<[u8]>,
}

impl RgbImage {
    /// `None` when `data` is not `width * height * 3` bytes.
    pub fn new(width: u32, height: u32, data: impl Into<Arc<[u8]>>) -> Option<Self> {
        let data = data.into();
        (data.len() == width as usize * height as usize * 3).then_some(Self {
            width,
            height,
            data,
        })
    }
}
