//! A built-in 5x7 bitmap font for the hex digits `0-9` and `A-F`, drawn white on a
//! black box at an integer scale.

use crate::canvas::{Canvas, BLACK, WHITE};

const GLYPH_W: i64 = 5;
const GLYPH_H: i64 = 7;
/// Glyph advance: the glyph plus one column of spacing.
const ADVANCE: i64 = GLYPH_W + 1;
/// Box padding around the text, in font pixels.
const PAD: i64 = 1;

/// Rows top to bottom; bit 4 is the leftmost column.
fn glyph(ch: char) -> Option<[u8; 7]> {
    Some(match ch.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        _ => return None,
    })
}

/// Size in pixels of the boxed label for `chars` characters at `scale`.
pub(crate) fn label_size(chars: usize, scale: i64) -> (i64, i64) {
    let text_w = (chars as i64 * ADVANCE - 1).max(0);
    ((text_w + 2 * PAD) * scale, (GLYPH_H + 2 * PAD) * scale)
}

/// Draws `text` white on a black box whose top-left corner is `(x, y)`, clipped to the
/// canvas. Characters without a glyph are left blank.
pub(crate) fn draw_label(canvas: &mut Canvas<'_>, x: i64, y: i64, text: &str, scale: i64) {
    let (w, h) = label_size(text.chars().count(), scale);
    canvas.fill_rect(x, y, w, h, BLACK);
    let top = y + PAD * scale;
    for (i, ch) in text.chars().enumerate() {
        let Some(rows) = glyph(ch) else { continue };
        let left = x + (PAD + i as i64 * ADVANCE) * scale;
        for (row, bits) in rows.iter().enumerate() {
            for col in 0..GLYPH_W {
                if bits & (0x10 >> col) != 0 {
                    let px = left + col * scale;
                    let py = top + row as i64 * scale;
                    canvas.fill_rect(px, py, scale, scale, WHITE);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789ABCDEF";

    #[test]
    fn every_hex_digit_has_a_distinct_five_bit_glyph() {
        let glyphs: Vec<[u8; 7]> = HEX.chars().map(|c| glyph(c).unwrap()).collect();
        for (i, g) in glyphs.iter().enumerate() {
            assert!(g.iter().all(|row| row & !0x1F == 0));
            assert!(g.iter().any(|&row| row != 0));
            assert!(glyphs[i + 1..].iter().all(|other| other != g));
        }
        assert_eq!(glyph('a'), glyph('A'));
        assert_eq!(glyph('x'), None);
    }

    #[test]
    fn label_draws_white_on_black_inside_its_box() {
        let (w, h) = label_size(2, 2);
        assert_eq!((w, h), (26, 18));
        let (cw, ch) = (40usize, 30usize);
        let mut data = vec![0.5; cw * ch * 3];
        draw_label(&mut Canvas::new(&mut data, cw, ch), 3, 4, "1F", 2);
        let mut white = 0;
        for y in 0..ch {
            for x in 0..cw {
                let v = data[(y * cw + x) * 3];
                let inside = (3..3 + w as usize).contains(&x) && (4..4 + h as usize).contains(&y);
                if inside {
                    assert!(v == 0.0 || v == 1.0);
                    white += usize::from(v == 1.0);
                } else {
                    assert_eq!(v, 0.5);
                }
            }
        }
        let lit: u32 = [glyph('1'), glyph('F')]
            .iter()
            .flat_map(|g| g.unwrap())
            .map(|row| row.count_ones())
            .sum();
        assert_eq!(white, lit as usize * 4);
    }

    #[test]
    fn label_partly_or_wholly_off_canvas_does_not_panic() {
        let mut data = vec![0.5; 8 * 8 * 3];
        let mut canvas = Canvas::new(&mut data, 8, 8);
        draw_label(&mut canvas, -20, -3, "DEADBEEF", 3);
        draw_label(&mut canvas, 5, 6, "0123", 1);
        draw_label(&mut canvas, 500, 500, "0", 1);
        draw_label(&mut canvas, 0, 0, "", 1);
    }
}
