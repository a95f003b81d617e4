//! Pictures to MNIST-style inputs, the way MNIST's digits were made: decode (PNG, JPEG, GIF,
//! BMP, WebP) within limits, grayscale, ink made light on a dark background, crop to the ink,
//! scale the longer side to 20 pixels (antialiased, aspect kept), and place the result in a
//! 28x28 field with its centre of mass at the centre. The server's image endpoint and `aicp
//! predict` share it; the model's own input range is applied by the caller.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageFormat, ImageReader, Limits};

/// The side of the field a digit is placed in.
pub const SIDE: u32 = 28;
/// The side of the box a digit's longer side is scaled to (MNIST's 20 in 28).
pub const BOX: u32 = 20;

/// What a picture may cost to decode: its dimensions, and the decoder's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    pub max_width: u32,
    pub max_height: u32,
    pub max_alloc_bytes: u64,
}

impl Default for DecodeLimits {
    /// 8192 x 8192 and 256 MiB: any photograph, and no decompression bomb.
    fn default() -> Self {
        Self {
            max_width: 8192,
            max_height: 8192,
            max_alloc_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Why a picture cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    /// Not a picture of a supported format, or a broken one (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// A picture without a stroke on it (HTTP 422).
    #[error("{0}")]
    Blank(String),
    /// A format this build does not decode (HTTP 415).
    #[error("{0}")]
    Unsupported(String),
    /// Larger than the limits (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
}

/// The formats accepted, as media types.
pub const MEDIA_TYPES: [&str; 5] = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/bmp",
    "image/webp",
];

/// The format a media type names, if it is one this crate decodes.
pub fn format_for_media_type(media_type: &str) -> Option<ImageFormat> {
    let essence = media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "image/png" => Some(ImageFormat::Png),
        "image/jpeg" | "image/jpg" => Some(ImageFormat::Jpeg),
        "image/gif" => Some(ImageFormat::Gif),
        "image/bmp" | "image/x-ms-bmp" => Some(ImageFormat::Bmp),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// Decodes `bytes`, whose format is read from the bytes themselves, within `limits`.
pub fn decode(bytes: &[u8], limits: DecodeLimits) -> Result<DynamicImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Invalid(
            "the picture is empty (0 bytes); send a PNG, JPEG, GIF, BMP or WebP file".into(),
        ));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Invalid(format!("cannot read the picture: {e}")))?;
    let Some(format) = reader.format() else {
        return Err(ImageError::Invalid(
            "not a picture: its first bytes are not those of a PNG, JPEG, GIF, BMP or WebP file"
                .into(),
        ));
    };
    if !format.reading_enabled() {
        return Err(ImageError::Unsupported(format!(
            "{format:?} pictures are not supported; send a PNG, JPEG, GIF, BMP or WebP file"
        )));
    }
    let mut reader = reader;
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_width);
    decoder_limits.max_image_height = Some(limits.max_height);
    decoder_limits.max_alloc = Some(limits.max_alloc_bytes);
    reader.limits(decoder_limits);
    reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => ImageError::TooLarge(format!(
            "the picture is too large to decode ({e}); the limit is {} x {} pixels",
            limits.max_width, limits.max_height
        )),
        image::ImageError::Unsupported(_) => {
            ImageError::Unsupported(format!("this {format:?} picture is not supported: {e}"))
        }
        _ => ImageError::Invalid(format!("the {format:?} picture is broken: {e}")),
    })
}

/// A picture as a model of MNIST digits sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digit {
    /// 28 x 28 intensities, row by row: 0 is background, 255 full ink.
    pub pixels: Vec<u8>,
    /// Whether the picture was dark ink on light paper (and so was inverted).
    pub inverted: bool,
}

/// Makes `image` an MNIST-style digit; fails when it holds no ink at all.
pub fn preprocess(image: &DynamicImage) -> Result<Digit, ImageError> {
    let (gray, inverted) = ink_on_dark(image);
    let Some((left, top, right, bottom)) = ink_bounds(&gray) else {
        return Err(ImageError::Blank(
            "the picture is blank: no stroke stands out from its background".into(),
        ));
    };
    let crop =
        image::imageops::crop_imm(&gray, left, top, right - left + 1, bottom - top + 1).to_image();
    let (width, height) = crop.dimensions();
    let scale = BOX as f32 / width.max(height) as f32;
    let scaled_width = ((width as f32 * scale).round() as u32).clamp(1, BOX);
    let scaled_height = ((height as f32 * scale).round() as u32).clamp(1, BOX);
    // Triangle widens with the reduction, so a large picture is averaged, not sampled.
    let scaled = image::imageops::resize(&crop, scaled_width, scaled_height, FilterType::Triangle);
    Ok(Digit {
        pixels: centre(&scaled),
        inverted,
    })
}

/// Below an eighth of the strongest ink is paper: a JPEG's ringing and a photo's grain, which
/// would otherwise widen the crop and shrink the digit. (On MNIST's test digits written as
/// JPEG, no floor costs 30 points of accuracy; this one, 0.15.)
const NOISE: u8 = 32;

/// The picture in grayscale with the ink light on a dark background, stretched so that the
/// background is 0 and the strongest ink 255, and paper noise (below [`NOISE`]) set to 0; and
/// whether it had to be inverted. Transparent pixels count as white paper.
fn ink_on_dark(image: &DynamicImage) -> (GrayImage, bool) {
    let with_alpha = image.to_luma_alpha8();
    let mut gray = GrayImage::from_fn(with_alpha.width(), with_alpha.height(), |x, y| {
        let [luma, alpha] = with_alpha.get_pixel(x, y).0;
        let (luma, alpha) = (u32::from(luma), u32::from(alpha));
        image::Luma([((luma * alpha + 255 * (255 - alpha)) / 255) as u8])
    });
    // The border is paper: light paper means dark ink.
    let background = border_median(&gray);
    let inverted = background > 127;
    if inverted {
        image::imageops::invert(&mut gray);
    }
    let background = if inverted {
        255 - background
    } else {
        background
    };
    let strongest = gray.pixels().map(|p| p.0[0]).max().unwrap_or(0);
    let span = f32::from(strongest.saturating_sub(background)).max(1.0);
    for pixel in gray.pixels_mut() {
        let above = f32::from(pixel.0[0].saturating_sub(background));
        let stretched = (above * 255.0 / span).round().min(255.0) as u8;
        pixel.0[0] = if stretched < NOISE { 0 } else { stretched };
    }
    (gray, inverted)
}

/// The median of the outermost rows and columns.
fn border_median(gray: &GrayImage) -> u8 {
    let (width, height) = gray.dimensions();
    let mut border: Vec<u8> = gray
        .enumerate_pixels()
        .filter(|(x, y, _)| *x == 0 || *y == 0 || *x + 1 == width || *y + 1 == height)
        .map(|(_, _, p)| p.0[0])
        .collect();
    border.sort_unstable();
    border.get(border.len() / 2).copied().unwrap_or(0)
}

/// The smallest box (inclusive) holding every pixel of ink (any that is not 0 once the paper
/// is); `None` when there is no ink.
fn ink_bounds(gray: &GrayImage) -> Option<(u32, u32, u32, u32)> {
    let mut bounds: Option<(u32, u32, u32, u32)> = None;
    for (x, y, pixel) in gray.enumerate_pixels() {
        if pixel.0[0] > 0 {
            let (l, t, r, b) = bounds.get_or_insert((x, y, x, y));
            *l = (*l).min(x);
            *t = (*t).min(y);
            *r = (*r).max(x);
            *b = (*b).max(y);
        }
    }
    bounds
}

/// `digit` placed in a 28 x 28 field so that its centre of mass falls on pixel (14, 14), as
/// near as it can while staying whole. Pixel (14, 14), not the field's geometric centre
/// (13.5, 13.5): that is where MNIST put it, and a model trained on MNIST loses points of
/// accuracy to a one-pixel shift.
fn centre(digit: &GrayImage) -> Vec<u8> {
    let (width, height) = digit.dimensions();
    let (mut mass, mut sum_x, mut sum_y) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y, pixel) in digit.enumerate_pixels() {
        let m = f64::from(pixel.0[0]);
        mass += m;
        sum_x += m * f64::from(x);
        sum_y += m * f64::from(y);
    }
    let (centre_x, centre_y) = if mass > 0.0 {
        (sum_x / mass, sum_y / mass)
    } else {
        (f64::from(width) / 2.0, f64::from(height) / 2.0)
    };
    let target = f64::from(SIDE / 2);
    let offset = |centre: f64, size: u32| {
        ((target - centre).round() as i64).clamp(0, i64::from(SIDE - size)) as u32
    };
    let (left, top) = (offset(centre_x, width), offset(centre_y, height));
    let mut field = vec![0u8; (SIDE * SIDE) as usize];
    for (x, y, pixel) in digit.enumerate_pixels() {
        field[((top + y) * SIDE + left + x) as usize] = pixel.0[0];
    }
    field
}

#[cfg(test)]
mod tests {
    use image::{ImageBuffer, Luma, LumaA};

    use super::*;

    /// A `width` x `height` picture of `paper` with a `ink` rectangle at (x, y, w, h).
    fn picture(
        width: u32,
        height: u32,
        paper: u8,
        ink: u8,
        rect: (u32, u32, u32, u32),
    ) -> GrayImage {
        let (rx, ry, rw, rh) = rect;
        ImageBuffer::from_fn(width, height, |x, y| {
            let inside = x >= rx && x < rx + rw && y >= ry && y < ry + rh;
            Luma([if inside { ink } else { paper }])
        })
    }

    fn encode(image: &GrayImage, format: ImageFormat) -> Vec<u8> {
        let mut bytes = Cursor::new(Vec::new());
        let rgb = DynamicImage::ImageLuma8(image.clone()).to_rgb8();
        rgb.write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    }

    fn bounds_in_field(pixels: &[u8]) -> (u32, u32, u32, u32) {
        let field = GrayImage::from_raw(SIDE, SIDE, pixels.to_vec()).unwrap();
        ink_bounds(&field).unwrap()
    }

    #[test]
    fn a_tall_stroke_is_scaled_to_20_pixels_and_centred() {
        // Dark ink on white paper, off in a corner of a large picture.
        let image = picture(300, 200, 250, 10, (20, 30, 40, 120));
        let digit = preprocess(&DynamicImage::ImageLuma8(image)).unwrap();
        assert!(digit.inverted);
        assert_eq!(digit.pixels.len(), 784);
        let (left, top, right, bottom) = bounds_in_field(&digit.pixels);
        assert_eq!(bottom - top + 1, 20, "the longer side is 20 pixels");
        let width = right - left + 1;
        assert!(
            (6..=8).contains(&width),
            "aspect kept: 40/120 of 20 is ~7, got {width}"
        );
        // A uniform rectangle's centre of mass is its centre: the field's centre.
        assert!((13..=14).contains(&((left + right) / 2)), "{left}..{right}");
        assert!((13..=14).contains(&((top + bottom) / 2)), "{top}..{bottom}");
        assert_eq!(digit.pixels[14 * 28 + 14], 255, "full ink stays full ink");
        assert_eq!(digit.pixels[0], 0, "paper becomes background");
    }

    #[test]
    fn light_ink_on_dark_paper_is_kept_and_every_format_decodes_alike() {
        let image = picture(56, 56, 0, 255, (10, 8, 12, 30));
        let reference = preprocess(&DynamicImage::ImageLuma8(image.clone())).unwrap();
        assert!(!reference.inverted);
        for format in [ImageFormat::Png, ImageFormat::Bmp, ImageFormat::Gif] {
            let decoded = decode(&encode(&image, format), DecodeLimits::default()).unwrap();
            assert_eq!(preprocess(&decoded).unwrap(), reference, "{format:?}");
        }
        let jpeg = encode(&image, ImageFormat::Jpeg);
        let decoded = decode(&jpeg, DecodeLimits::default()).unwrap();
        let lossy = preprocess(&decoded).unwrap();
        let differs = lossy
            .pixels
            .iter()
            .zip(&reference.pixels)
            .filter(|(a, b)| a.abs_diff(**b) > 64)
            .count();
        assert!(differs < 20, "JPEG moved {differs} pixels far");
    }

    #[test]
    fn transparent_pixels_are_paper() {
        // A canvas export: black strokes on a transparent (alpha 0, black) background.
        let image = ImageBuffer::from_fn(40, 40, |x, y| {
            if (15..25).contains(&x) && (5..35).contains(&y) {
                LumaA([0u8, 255])
            } else {
                LumaA([0u8, 0])
            }
        });
        let digit = preprocess(&DynamicImage::ImageLumaA8(image)).unwrap();
        assert!(digit.inverted);
        let (_, top, _, bottom) = bounds_in_field(&digit.pixels);
        assert_eq!(bottom - top + 1, 20);
    }

    #[test]
    fn blank_pictures_and_bad_bytes_are_refused_clearly() {
        let blank = DynamicImage::ImageLuma8(picture(30, 30, 255, 255, (0, 0, 0, 0)));
        let err = preprocess(&blank).unwrap_err();
        assert!(err.to_string().contains("blank"), "{err}");

        let limits = DecodeLimits::default();
        assert!(matches!(decode(b"", limits), Err(ImageError::Invalid(m)) if m.contains("empty")));
        assert!(
            matches!(decode(b"hello, world", limits), Err(ImageError::Invalid(m)) if m.contains("not a picture"))
        );
        let png = encode(&picture(64, 64, 0, 255, (5, 5, 10, 10)), ImageFormat::Png);
        let truncated = decode(&png[..png.len() / 2], limits);
        assert!(
            matches!(&truncated, Err(ImageError::Invalid(m)) if m.contains("broken")),
            "{truncated:?}"
        );
        let small = DecodeLimits {
            max_width: 32,
            max_height: 32,
            ..limits
        };
        assert!(
            matches!(decode(&png, small), Err(ImageError::TooLarge(m)) if m.contains("32 x 32"))
        );
        // TIFF is recognised but not built in.
        let tiff = b"II*\0\x08\0\0\0";
        assert!(
            matches!(decode(tiff, limits), Err(ImageError::Unsupported(_))),
            "{:?}",
            decode(tiff, limits)
        );
    }

    #[test]
    fn a_decompression_bomb_is_refused_before_it_allocates() {
        // A valid PNG header claiming 100000 x 100000 pixels (40 GB decoded), and nothing else.
        let mut header = Vec::new();
        header.extend_from_slice(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
        header.extend_from_slice(&100_000u32.to_be_bytes());
        header.extend_from_slice(&100_000u32.to_be_bytes());
        header.extend_from_slice(&[8, 0, 0, 0, 0]);
        let crc = crc32(&header[12..]);
        header.extend_from_slice(&crc.to_be_bytes());
        let result = decode(&header, DecodeLimits::default());
        assert!(matches!(result, Err(ImageError::TooLarge(_))), "{result:?}");
    }

    /// PNG's CRC-32, so the bomb's header is valid.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn media_types_name_the_formats() {
        assert_eq!(format_for_media_type("image/png"), Some(ImageFormat::Png));
        assert_eq!(
            format_for_media_type("IMAGE/JPEG; q=1"),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(format_for_media_type("image/tiff"), None);
        assert_eq!(format_for_media_type("application/json"), None);
        for media_type in MEDIA_TYPES {
            assert!(format_for_media_type(media_type).is_some());
        }
    }
}
