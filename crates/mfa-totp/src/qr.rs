//! QR code rendering of `otpauth://` URIs (or any other text).

use std::io::Cursor;

use image::{ImageFormat, Luma};
use qrcode::QrCode;
use qrcode::render::{svg, unicode::Dense1x2};

use crate::TotpError;

/// Smallest rendered width/height in pixels, so that codes scan easily
/// from a screen without the caller having to scale them.
const MIN_SIZE_PX: u32 = 200;

fn encode(data: &str) -> Result<QrCode, TotpError> {
    QrCode::new(data.as_bytes()).map_err(|e| TotpError::Qr(e.to_string()))
}

/// An SVG document (black on white, with the standard quiet zone, at least
/// 200×200 px) encoding `data`.
pub fn qr_svg(data: &str) -> Result<String, TotpError> {
    Ok(encode(data)?
        .render::<svg::Color<'_>>()
        .quiet_zone(true)
        .min_dimensions(MIN_SIZE_PX, MIN_SIZE_PX)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build())
}

/// A greyscale PNG (black on white, with the standard quiet zone, at least
/// 200×200 px) encoding `data`.
pub fn qr_png(data: &str) -> Result<Vec<u8>, TotpError> {
    let image = encode(data)?
        .render::<Luma<u8>>()
        .quiet_zone(true)
        .min_dimensions(MIN_SIZE_PX, MIN_SIZE_PX)
        .build();
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|e| TotpError::Qr(e.to_string()))?;
    Ok(png)
}

/// Text for printing in a terminal, two modules per character cell.
///
/// The glyphs (`█`, `▀`, `▄`) draw the *light* modules and blank cells stand
/// for the dark ones: on the usual dark-background terminal this yields dark
/// modules on a light field, which every scanner reads. Lines end with `\n`
/// but the last has no trailing newline.
pub fn qr_terminal(data: &str) -> Result<String, TotpError> {
    Ok(encode(data)?
        .render::<Dense1x2>()
        .quiet_zone(true)
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .build())
}
