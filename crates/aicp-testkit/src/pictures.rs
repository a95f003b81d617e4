//! Held-out digits as the pictures people send: PNG and JPEG, light on dark or dark on light,
//! off-centre, scaled up, or drawn on the drawing page's pad.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::{self, FilterType};
use image::{GrayImage, ImageFormat};

/// How a held-out digit is turned into a picture.
#[derive(Debug, Clone, Copy)]
pub enum Variant {
    /// The 28x28 digit as it is, light on dark, PNG.
    Png,
    /// Dark ink on white paper, PNG.
    Inverted,
    /// JPEG at quality 85.
    Jpeg,
    /// In a corner of a 90x70 picture, PNG.
    OffCentre,
    /// Three times larger, dark on light, in a 110x100 picture, JPEG: a photo-like input.
    Scaled,
    /// What the drawing page sends for a dropped picture: drawn to fill its 280x280 white pad
    /// (smoothed, as a canvas scales), dark on light, PNG.
    Page,
}

pub const VARIANTS: [Variant; 6] = [
    Variant::Png,
    Variant::Inverted,
    Variant::Jpeg,
    Variant::OffCentre,
    Variant::Scaled,
    Variant::Page,
];

/// The digit (784 values in [0, 1]) as an 8-bit picture.
pub fn gray(pixels: &[f32]) -> GrayImage {
    let bytes = pixels.iter().map(|&p| (p * 255.0).round() as u8).collect();
    GrayImage::from_raw(28, 28, bytes).unwrap()
}

/// `image` encoded as `format` (JPEG at quality 85).
pub fn encode(image: &GrayImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    match format {
        ImageFormat::Jpeg => image
            .write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, 85))
            .unwrap(),
        _ => image.write_to(&mut bytes, format).unwrap(),
    }
    bytes.into_inner()
}

fn on_canvas(digit: &GrayImage, width: u32, height: u32, x: i64, y: i64) -> GrayImage {
    let mut canvas = GrayImage::new(width, height);
    imageops::overlay(&mut canvas, digit, x, y);
    canvas
}

/// The digit (784 values in [0, 1]) as a picture file of `variant`.
pub fn picture(pixels: &[f32], variant: Variant) -> Vec<u8> {
    let digit = gray(pixels);
    match variant {
        Variant::Png => encode(&digit, ImageFormat::Png),
        Variant::Inverted => {
            let mut inverted = digit;
            imageops::invert(&mut inverted);
            encode(&inverted, ImageFormat::Png)
        }
        Variant::Jpeg => encode(&digit, ImageFormat::Jpeg),
        Variant::OffCentre => encode(&on_canvas(&digit, 90, 70, 55, 4), ImageFormat::Png),
        Variant::Scaled => {
            let large = imageops::resize(&digit, 84, 84, FilterType::Triangle);
            let mut photo = on_canvas(&large, 110, 100, 6, 9);
            imageops::invert(&mut photo);
            encode(&photo, ImageFormat::Jpeg)
        }
        Variant::Page => {
            let mut pad = imageops::resize(&digit, 280, 280, FilterType::Triangle);
            imageops::invert(&mut pad);
            encode(&pad, ImageFormat::Png)
        }
    }
}

/// A real decompression bomb: a PNG of 8193 x 8193 blank pixels, 67 MB decoded from a few
/// hundred kB, and one pixel a side over the decoder's limit.
pub fn bomb() -> Vec<u8> {
    encode(&GrayImage::new(8193, 8193), ImageFormat::Png)
}
