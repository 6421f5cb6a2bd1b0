/// Decoded video: `num_frames` frames of `height` x `width` RGB, f32 in [0, 1], laid out
/// `[frame][row][column][channel]` (the layout diffusers returns with `output_type="np"`).
#[derive(Debug, Clone, PartialEq)]
pub struct VideoFrames {
    pub num_frames: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl VideoFrames {
    pub fn frame_len(&self) -> usize {
        self.height * self.width * 3
    }

    pub fn frame(&self, index: usize) -> &[f32] {
        let len = self.frame_len();
        &self.data[index * len..(index + 1) * len]
    }

    /// One frame as packed RGB24 bytes, rounding and clamping each channel.
    pub fn frame_rgb8(&self, index: usize) -> Vec<u8> {
        self.frame(index)
            .iter()
            .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect()
    }
}
