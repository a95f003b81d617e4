//! Data augmentation for `--augment`: each training image is redrawn through a small random
//! affine transform (shift, rotation, scale) each time it is used, so the network sees digits
//! that are not all centred and upright, as digits drawn on the page are not.
//!
//! The random numbers come from the training loop's seeded generator, so a run stays
//! reproducible.

use rand::Rng;
use serde::Serialize;

/// How far the transform may go, each drawn uniformly from its range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Augmentation {
    /// Largest shift along each axis, in pixels.
    pub max_shift: f32,
    /// Largest rotation either way, in degrees.
    pub max_rotation_degrees: f32,
    /// Largest relative change of size either way (0.1: 90% to 110%).
    pub max_scale: f32,
}

impl Default for Augmentation {
    /// Small enough that every digit stays itself (a 6 rotated 10 degrees is still a 6).
    fn default() -> Self {
        Self {
            max_shift: 2.0,
            max_rotation_degrees: 10.0,
            max_scale: 0.1,
        }
    }
}

impl Augmentation {
    /// Appends `image` (`rows x cols` pixels, 0-255) transformed at random to `out`, scaled to
    /// [0, 1]. Pixels the transform brings in from outside the image are background (0).
    pub fn distort(
        &self,
        image: &[u8],
        rows: usize,
        cols: usize,
        rng: &mut impl Rng,
        out: &mut Vec<f32>,
    ) {
        let shift = [self.max_shift, self.max_shift].map(|m| uniform(rng, m));
        let angle = uniform(rng, self.max_rotation_degrees).to_radians();
        let scale = 1.0 + uniform(rng, self.max_scale);
        // The inverse map, output pixel -> source position, about the image centre.
        let (sin, cos) = angle.sin_cos();
        let centre = [(cols as f32 - 1.0) / 2.0, (rows as f32 - 1.0) / 2.0];
        let pixel = |r: isize, c: isize| -> f32 {
            if r < 0 || c < 0 || r >= rows as isize || c >= cols as isize {
                0.0
            } else {
                f32::from(image[r as usize * cols + c as usize])
            }
        };
        out.reserve(rows * cols);
        for r in 0..rows {
            for c in 0..cols {
                let dx = c as f32 - centre[0] - shift[0];
                let dy = r as f32 - centre[1] - shift[1];
                let sx = (cos * dx + sin * dy) / scale + centre[0];
                let sy = (-sin * dx + cos * dy) / scale + centre[1];
                // Bilinear interpolation between the four nearest source pixels.
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let (x0, y0) = (x0 as isize, y0 as isize);
                let top = pixel(y0, x0) * (1.0 - fx) + pixel(y0, x0 + 1) * fx;
                let bottom = pixel(y0 + 1, x0) * (1.0 - fx) + pixel(y0 + 1, x0 + 1) * fx;
                out.push((top * (1.0 - fy) + bottom * fy) / 255.0);
            }
        }
    }
}

/// A value drawn uniformly from `[-max, max]`.
fn uniform(rng: &mut impl Rng, max: f32) -> f32 {
    if max > 0.0 {
        rng.random_range(-max..=max)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn square() -> Vec<u8> {
        let mut image = vec![0u8; 28 * 28];
        for r in 10..18 {
            for c in 10..18 {
                image[r * 28 + c] = 255;
            }
        }
        image
    }

    #[test]
    fn no_transform_gives_the_image_back() {
        let none = Augmentation {
            max_shift: 0.0,
            max_rotation_degrees: 0.0,
            max_scale: 0.0,
        };
        let mut out = Vec::new();
        none.distort(&square(), 28, 28, &mut StdRng::seed_from_u64(1), &mut out);
        let expected: Vec<f32> = square().iter().map(|&p| f32::from(p) / 255.0).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn a_shift_moves_the_ink_and_keeps_it() {
        let shift_only = Augmentation {
            max_shift: 2.0,
            max_rotation_degrees: 0.0,
            max_scale: 0.0,
        };
        let mut rng = StdRng::seed_from_u64(3);
        let mut moved = 0;
        for _ in 0..20 {
            let mut out = Vec::new();
            shift_only.distort(&square(), 28, 28, &mut rng, &mut out);
            let ink: f32 = out.iter().sum();
            // A sub-pixel shift spreads the 64 ink pixels but keeps their total.
            assert!((ink - 64.0).abs() < 1e-3, "ink {ink}");
            let original: Vec<f32> = square().iter().map(|&p| f32::from(p) / 255.0).collect();
            moved += usize::from(out != original);
        }
        assert_eq!(moved, 20);
    }

    #[test]
    fn the_same_seed_gives_the_same_images() {
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut out = Vec::new();
            for _ in 0..5 {
                Augmentation::default().distort(&square(), 28, 28, &mut rng, &mut out);
            }
            out
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
        assert!(run(9).iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
