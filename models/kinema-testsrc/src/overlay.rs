//! Where the labels go: the frame counter top-left, the prompt hash bottom-right.

use crate::canvas::Canvas;
use crate::font::{draw_label, label_size};

/// The counter text for frame `index` (0-based), e.g. `"0007"`.
pub(crate) fn counter_text(index: usize) -> String {
    format!("{index:04}")
}

/// Font scale for a frame: one font pixel per 120 pixels of the shorter side, at least 1.
pub(crate) fn label_scale(width: usize, height: usize) -> i64 {
    (width.min(height) / 120).max(1) as i64
}

fn margin(scale: i64) -> i64 {
    2 * scale
}

/// The counter's box as `(x, y, w, h)`, possibly extending past the frame.
pub(crate) fn counter_box(width: usize, height: usize, chars: usize) -> (i64, i64, i64, i64) {
    let scale = label_scale(width, height);
    let (w, h) = label_size(chars, scale);
    (margin(scale), margin(scale), w, h)
}

/// The hash label's box as `(x, y, w, h)`, possibly extending past the frame.
pub(crate) fn hash_box(width: usize, height: usize, chars: usize) -> (i64, i64, i64, i64) {
    let scale = label_scale(width, height);
    let (w, h) = label_size(chars, scale);
    let x = width as i64 - margin(scale) - w;
    let y = height as i64 - margin(scale) - h;
    (x, y, w, h)
}

fn overlaps(a: (i64, i64, i64, i64), b: (i64, i64, i64, i64)) -> bool {
    a.0 < b.0 + b.2 && b.0 < a.0 + a.2 && a.1 < b.1 + b.3 && b.1 < a.1 + a.3
}

/// Stamps the frame counter and the prompt-hash label onto one frame.
pub(crate) fn draw_overlays(
    canvas: &mut Canvas<'_>,
    width: usize,
    height: usize,
    index: usize,
    hash: &str,
) {
    let scale = label_scale(width, height);
    let counter = counter_text(index);
    let counter_at = counter_box(width, height, counter.len());
    let hash_at = hash_box(width, height, hash.chars().count());
    // On frames too small for both, the counter wins and the hash is left out.
    if !overlaps(counter_at, hash_at) {
        draw_label(canvas, hash_at.0, hash_at.1, hash, scale);
    }
    draw_label(canvas, counter_at.0, counter_at.1, &counter, scale);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_is_zero_padded() {
        assert_eq!(counter_text(7), "0007");
        assert_eq!(counter_text(12345), "12345");
    }

    #[test]
    fn scale_follows_the_shorter_side() {
        assert_eq!(label_scale(16, 16), 1);
        assert_eq!(label_scale(832, 480), 4);
        assert_eq!(label_scale(1920, 1080), 9);
    }

    #[test]
    fn boxes_sit_in_opposite_corners_of_large_frames() {
        let (cx, cy, cw, ch) = counter_box(832, 480, 4);
        let (hx, hy, hw, hh) = hash_box(832, 480, 8);
        assert!(cx >= 0 && cy >= 0);
        assert!(hx + hw <= 832 && hy + hh <= 480);
        assert!(cx + cw < hx && cy + ch < hy);
        assert!(!overlaps((cx, cy, cw, ch), (hx, hy, hw, hh)));
    }

    #[test]
    fn tiny_frames_keep_the_counter_and_drop_a_clashing_hash() {
        let (w, h) = (48, 16);
        assert!(overlaps(counter_box(w, h, 4), hash_box(w, h, 8)));
        let mut data = vec![0.5; w * h * 3];
        draw_overlays(&mut Canvas::new(&mut data, w, h), w, h, 0, "FFFFFFFF");
        // Only the counter's box (top-left) is drawn; the bottom-right corner is untouched.
        assert_eq!(data[(h * w - 1) * 3], 0.5);
        assert_eq!(data[(2 * w + 2) * 3], 0.0);
    }
}
