use serde::{Deserialize, Serialize};

use crate::InputImage;

/// A job's generation parameters with every default resolved: what the ledger quotes,
/// the store keeps and the pipeline runs. Built once from a request (the server
/// resolves the requested form against the model's manifest) and then only read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationParams {
    pub model: String,
    pub prompt: String,
    pub negative_prompt: String,
    /// The first frame to animate (image-to-video), already fitted to exactly
    /// `width` x `height`.
    pub image: Option<InputImage>,
    /// The last frame (first-last-frame models), fitted like `image`.
    pub last_image: Option<InputImage>,
    pub width: u32,
    pub height: u32,
    pub num_frames: u32,
    pub fps: u32,
    pub steps: u32,
    pub guidance_scale: f32,
    /// The second expert's guidance scale (two-expert models); `None`: the model
    /// uses `guidance_scale` for both.
    pub guidance_scale_2: Option<f32>,
    pub seed: u64,
    /// How the video is encoded, in `kinema_media::VideoOutput`'s text form.
    pub output: String,
    /// The animated preview, in `kinema_media::PreviewOptions`' text form; `None`: no
    /// preview.
    pub preview: Option<String>,
}

impl GenerationParams {
    /// The conditioning images the job carries, with the field each came from.
    pub fn images(&self) -> impl Iterator<Item = (ImageSlot, &InputImage)> {
        [
            (ImageSlot::Image, self.image.as_ref()),
            (ImageSlot::LastImage, self.last_image.as_ref()),
        ]
        .into_iter()
        .filter_map(|(slot, image)| image.map(|i| (slot, i)))
    }

    /// The image in `slot`, mutably (to attach its bytes once loaded).
    pub fn image_mut(&mut self, slot: ImageSlot) -> &mut Option<InputImage> {
        match slot {
            ImageSlot::Image => &mut self.image,
            ImageSlot::LastImage => &mut self.last_image,
        }
    }

    /// True when the job is conditioned on an image (first or last frame).
    pub fn has_images(&self) -> bool {
        self.image.is_some() || self.last_image.is_some()
    }
}

/// Which conditioning image: the request field's name is its stored name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ImageSlot {
    #[serde(rename = "image")]
    Image,
    #[serde(rename = "last_image")]
    LastImage,
}

impl ImageSlot {
    pub const ALL: [ImageSlot; 2] = [ImageSlot::Image, ImageSlot::LastImage];

    /// The request field (and the stored `job_inputs.name`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::LastImage => "last_image",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}
