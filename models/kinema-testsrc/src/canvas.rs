//! A mutable view of one RGB f32 frame with clipped rectangle fills.

pub(crate) type Rgb = [f32; 3];

pub(crate) const BLACK: Rgb = [0.0; 3];
pub(crate) const WHITE: Rgb = [1.0; 3];

/// One frame, `[row][column][channel]`.
pub(crate) struct Canvas<'a> {
    data: &'a mut [f32],
    width: usize,
    height: usize,
}

impl<'a> Canvas<'a> {
    pub(crate) fn new(data: &'a mut [f32], width: usize, height: usize) -> Self {
        assert_eq!(data.len(), width * height * 3, "canvas size mismatch");
        Self {
            data,
            width,
            height,
        }
    }

    /// Fills the rectangle at `(x, y)` of `w` x `h` pixels, clipped to the frame; parts
    /// (or all) of it may lie outside.
    pub(crate) fn fill_rect(&mut self, x: i64, y: i64, w: i64, h: i64, rgb: Rgb) {
        let x0 = x.clamp(0, self.width as i64) as usize;
        let y0 = y.clamp(0, self.height as i64) as usize;
        let x1 = x.saturating_add(w).clamp(0, self.width as i64) as usize;
        let y1 = y.saturating_add(h).clamp(0, self.height as i64) as usize;
        if x0 >= x1 {
            return;
        }
        for row in y0..y1 {
            let start = (row * self.width + x0) * 3;
            let end = (row * self.width + x1) * 3;
            for pixel in self.data[start..end].chunks_exact_mut(3) {
                pixel.copy_from_slice(&rgb);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_clipped_on_every_side() {
        let mut data = vec![0.5; 4 * 3 * 3];
        let mut canvas = Canvas::new(&mut data, 4, 3);
        canvas.fill_rect(-2, -2, 3, 3, WHITE); // covers (0,0) only
        canvas.fill_rect(3, 2, 10, 10, BLACK); // covers (3,2) only
        canvas.fill_rect(100, 100, 5, 5, BLACK); // fully outside
        canvas.fill_rect(1, 1, -5, 2, BLACK); // negative size: nothing
        let px = |x: usize, y: usize| data[(y * 4 + x) * 3];
        assert_eq!(px(0, 0), 1.0);
        assert_eq!(px(1, 0), 0.5);
        assert_eq!(px(0, 1), 0.5);
        assert_eq!(px(3, 2), 0.0);
        assert_eq!(data.iter().filter(|&&v| v == 0.5).count(), (12 - 2) * 3);
    }
}
