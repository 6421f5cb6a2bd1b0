//! The moving background: diagonal colour bars scrolling with the frame index, hued
//! from the prompt, shaded by a vertical gradient and lightly modulated by the
//! bilinearly upsampled latent.

use crate::canvas::Rgb;
use crate::latent::{LatentShape, CHANNELS, LATENT_SCALE};

const BARS: usize = 8;
/// Hue step between neighbouring bars.
const HUE_STEP: f32 = 0.06;
const SATURATION: f32 = 0.65;
/// Brightness of even and odd bars.
const VALUES: [f32; 2] = [0.95, 0.7];
/// Each bar brightens by this much across its width (the scrolling gradient).
const BAR_RAMP: f32 = 0.15;
/// Vertical gradient: rows darken by up to this much toward the bottom.
const ROW_FALLOFF: f32 = 0.2;
/// The latent scales brightness within `[LATENT_BASE, LATENT_BASE + LATENT_DEPTH]`.
const LATENT_BASE: f32 = 0.8;
const LATENT_DEPTH: f32 = 0.2;

/// One output pixel's bilinear taps along one axis: latent cells `lo`, `hi` and the
/// weight of `hi`.
#[derive(Clone, Copy)]
struct Tap {
    lo: usize,
    hi: usize,
    weight: f32,
}

fn taps(pixels: usize, cells: usize) -> Vec<Tap> {
    let last = cells.saturating_sub(1);
    (0..pixels)
        .map(|i| {
            // Cell centres sit at pixel (8 * j + 3.5).
            let s = ((i as f32 + 0.5) / LATENT_SCALE as f32 - 0.5).max(0.0);
            let lo = (s as usize).min(last);
            Tap {
                lo,
                hi: (lo + 1).min(last),
                weight: (s - lo as f32).clamp(0.0, 1.0),
            }
        })
        .collect()
}

/// Clamps to `[0, 1]`, mapping NaN to 0 (a foreign latent must not poison the frame).
fn unit(v: f32) -> f32 {
    if v >= 0.0 {
        v.min(1.0)
    } else {
        0.0
    }
}

fn hsv_to_rgb(hue: f32, saturation: f32, value: f32) -> Rgb {
    let h = hue.rem_euclid(1.0) * 6.0;
    let sector = (h as usize).min(5);
    let f = h - sector as f32;
    let p = value * (1.0 - saturation);
    let q = value * (1.0 - saturation * f);
    let t = value * (1.0 - saturation * (1.0 - f));
    match sector {
        0 => [value, t, p],
        1 => [q, value, p],
        2 => [p, value, t],
        3 => [p, q, value],
        4 => [t, p, value],
        _ => [value, p, q],
    }
}

/// Everything about the background that does not change from frame to frame.
pub(crate) struct Pattern {
    width: usize,
    height: usize,
    latent: LatentShape,
    palette: [Rgb; BARS],
    bar_width: usize,
    scroll: usize,
    row_gain: Vec<f32>,
    cols: Vec<Tap>,
    rows: Vec<Tap>,
}

/// Per-frame working buffers, reused across frames.
pub(crate) struct Scratch {
    /// Colour of each diagonal `x + y` for the current frame.
    diagonal: Vec<Rgb>,
    /// The current row's latent, interpolated vertically, as brightness factors.
    latent_row: Vec<f32>,
}

impl Pattern {
    pub(crate) fn new(width: usize, height: usize, latent: LatentShape, hue: f32) -> Self {
        let palette = std::array::from_fn(|k| {
            hsv_to_rgb(hue + HUE_STEP * k as f32, SATURATION, VALUES[k % 2])
        });
        let bar_width = ((width + height) / 16).max(4);
        let denom = height.saturating_sub(1).max(1) as f32;
        Self {
            width,
            height,
            latent,
            palette,
            bar_width,
            scroll: (bar_width / 8).max(1),
            row_gain: (0..height)
                .map(|y| 1.0 - ROW_FALLOFF * y as f32 / denom)
                .collect(),
            cols: taps(width, latent.width),
            rows: taps(height, latent.height),
        }
    }

    pub(crate) fn scratch(&self) -> Scratch {
        Scratch {
            diagonal: vec![[0.0; 3]; self.width + self.height],
            latent_row: vec![0.0; self.latent.width * CHANNELS],
        }
    }

    /// Renders frame `index` into `out` (`height * width * 3`) from that frame's latent.
    pub(crate) fn render(
        &self,
        index: usize,
        latent_frame: &[f32],
        out: &mut [f32],
        scratch: &mut Scratch,
    ) {
        let row_len = self.latent.width * CHANNELS;
        debug_assert_eq!(latent_frame.len(), self.latent.height * row_len);
        debug_assert_eq!(out.len(), self.height * self.width * 3);

        let period = BARS * self.bar_width;
        let shift = (index % period) * self.scroll % period;
        for (d, slot) in scratch.diagonal.iter_mut().enumerate() {
            let s = d + shift;
            let bar = (s / self.bar_width) % BARS;
            let frac = (s % self.bar_width) as f32 / self.bar_width as f32;
            let shade = 1.0 - BAR_RAMP + BAR_RAMP * frac;
            *slot = self.palette[bar].map(|c| c * shade);
        }

        let out_rows = out.chunks_exact_mut(self.width * 3);
        for (y, (out_row, row_tap)) in out_rows.zip(&self.rows).enumerate() {
            let upper = &latent_frame[row_tap.lo * row_len..][..row_len];
            let lower = &latent_frame[row_tap.hi * row_len..][..row_len];
            let gain = self.row_gain[y];
            for ((slot, &a), &b) in scratch.latent_row.iter_mut().zip(upper).zip(lower) {
                let v = unit(a + (b - a) * row_tap.weight);
                *slot = gain * (LATENT_BASE + LATENT_DEPTH * v);
            }
            let latent_row = &scratch.latent_row;
            let diagonal = &scratch.diagonal[y..y + self.width];
            for ((pixel, colour), tap) in out_row.chunks_exact_mut(3).zip(diagonal).zip(&self.cols)
            {
                let lo = &latent_row[tap.lo * CHANNELS..][..CHANNELS];
                let hi = &latent_row[tap.hi * CHANNELS..][..CHANNELS];
                for c in 0..CHANNELS {
                    pixel[c] = colour[c] * (lo[c] + (hi[c] - lo[c]) * tap.weight);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsv_primaries() {
        assert_eq!(hsv_to_rgb(0.0, 1.0, 1.0), [1.0, 0.0, 0.0]);
        assert_eq!(hsv_to_rgb(1.0 / 3.0, 1.0, 1.0), [0.0, 1.0, 0.0]);
        assert_eq!(hsv_to_rgb(2.0 / 3.0, 1.0, 1.0), [0.0, 0.0, 1.0]);
        assert_eq!(hsv_to_rgb(0.5, 0.0, 0.25), [0.25; 3]);
    }

    #[test]
    fn taps_stay_in_bounds_for_ragged_sizes() {
        for (pixels, cells) in [(17, 3), (16, 2), (8, 1), (1, 1), (832, 104)] {
            for t in taps(pixels, cells) {
                assert!(t.lo < cells && t.hi < cells && (0.0..=1.0).contains(&t.weight));
            }
        }
    }

    fn render(width: usize, height: usize, index: usize, fill: f32) -> Vec<f32> {
        let shape = LatentShape::for_video(1, height, width);
        let pattern = Pattern::new(width, height, shape, 0.3);
        let latent = vec![fill; shape.frame_len()];
        let mut out = vec![f32::NAN; width * height * 3];
        pattern.render(index, &latent, &mut out, &mut pattern.scratch());
        out
    }

    #[test]
    fn output_is_in_range_and_scrolls() {
        let a = render(50, 19, 0, 0.5);
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_ne!(a, render(50, 19, 1, 0.5));
        assert_eq!(a, render(50, 19, 0, 0.5));
    }

    #[test]
    fn latent_modulates_and_is_clamped() {
        let dark = render(24, 24, 0, 0.0);
        let bright = render(24, 24, 0, 1.0);
        assert!(dark.iter().zip(&bright).all(|(d, b)| d < b));
        assert_eq!(render(24, 24, 0, 7.0), bright);
        assert_eq!(render(24, 24, 0, f32::NAN), dark);
    }
}
