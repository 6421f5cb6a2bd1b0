//! A smooth synthetic scene standing in for generated video when measuring
//! encoder fidelity: a sky-to-ground gradient with gentle hills and fine
//! ripples, two soft coloured blobs drifting across, and a slow camera pan.
//!
//! Random noise would be the wrong test content: no 4:2:0 encode of it gets
//! much above 26 dB, whatever the codec. Everything here is band-limited, as
//! decoded diffusion output is.

/// Frame `index` of a `count`-frame clip, packed RGB24, rows top to bottom.
/// The same arguments always give the same bytes.
pub fn scene_frame(width: u32, height: u32, index: u32, count: u32) -> Vec<u8> {
    let t = if count > 1 {
        index as f32 / (count - 1) as f32
    } else {
        0.0
    };
    let size = height.max(1) as f32;
    // Camera pan, in scene units (one unit = the frame height): right and
    // slightly down, about 0.4 px per frame at any size.
    let (pan_x, pan_y) = (index as f32 * 0.004, index as f32 * 0.0015);
    // Two blobs in screen units, with radius and colour.
    let blobs = [
        (
            0.25 + 0.5 * t,
            0.35 + 0.1 * (t * std::f32::consts::TAU).sin(),
            0.18,
            [235.0, 90.0, 60.0],
        ),
        (
            (width as f32 / size) * 0.8 - 0.4 * t,
            0.65,
            0.22,
            [60.0, 190.0, 130.0],
        ),
    ];
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height {
        for x in 0..width {
            let (sx, sy) = (x as f32 / size, y as f32 / size);
            let (u, v) = (sx + pan_x, sy + pan_y);
            // Horizon height varies with gentle hills.
            let horizon = 0.55 + 0.08 * (u * 4.1).sin() + 0.04 * (u * 9.3 + 1.0).sin();
            let sky = [90.0 + 80.0 * v, 140.0 + 60.0 * v, 220.0 - 30.0 * v];
            let ground = [120.0 + 40.0 * (u * 3.0).sin(), 150.0 - 50.0 * v, 80.0];
            // Soft horizon over a few pixels' width.
            let w = ((sy + pan_y - horizon) * 40.0).clamp(-6.0, 6.0);
            let land = 1.0 / (1.0 + (-w).exp());
            let ripple = 6.0 * (u * 37.0).sin() * (v * 29.0).sin();
            let mut rgb = [0f32; 3];
            for c in 0..3 {
                rgb[c] = sky[c] * (1.0 - land) + ground[c] * land + ripple;
            }
            for (bx, by, radius, colour) in blobs {
                let d2 = (sx - bx).powi(2) + (sy - by).powi(2);
                let alpha = 0.85 * (-d2 / (2.0 * radius * radius / 4.0)).exp();
                for c in 0..3 {
                    rgb[c] = rgb[c] * (1.0 - alpha) + colour[c] * alpha;
                }
            }
            out.extend(rgb.iter().map(|v| v.round().clamp(0.0, 255.0) as u8));
        }
    }
    out
}

/// All frames of a `count`-frame clip.
pub fn scene_frames(width: u32, height: u32, count: u32) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| scene_frame(width, height, i, count))
        .collect()
}
