//! `testsrc`: a procedural **video test source** for smoke-testing a Kinema deployment
//! without a GPU or model weights.
//!
//! This is *not* a generative model and makes no attempt to follow the prompt. It
//! renders scrolling diagonal colour bars whose hue comes from a hash of the prompt,
//! stamps a frame counter in the top-left corner and the first 8 hex digits of the
//! SHA-256 of `prompt + "\0" + negative_prompt` in the bottom-right corner (left out on
//! frames too small for both), so a viewer can tell at a glance which request and which
//! frame they are looking at.
//!
//! It still runs the three stages of the [`kinema_diffusion::Pipeline`] trait with real
//! work proportional to the request, so every engine path is exercised:
//!
//! * `encode_prompt` hashes the prompt and negative prompt;
//! * `denoise` walks seeded noise at 1/8 resolution toward a procedural target latent,
//!   one step at a time, reporting progress and honouring cancellation after each step;
//! * `decode` renders the full-resolution frames, lightly modulated by the latent.
//!
//! An input image (image-to-video requests) is blended into the frames: the first frame
//! is the image, later frames show it at half weight.
//!
//! Output is deterministic: the same request (seed included) gives bit-identical frames.

mod canvas;
mod font;
mod latent;
mod overlay;
mod pattern;
mod prompt;
mod rng;
mod source;

#[cfg(test)]
mod tests;

pub use source::TestSource;

/// The model id the test source is registered under.
pub const MODEL_ID: &str = "testsrc";
