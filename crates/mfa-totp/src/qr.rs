//! QR code rendering of `otpauth://` URIs (or any other text).

use std::io::Cursor;

use image::{ImageFormat, Luma};
use qrcode::QrCode;
use qrcode::render::{svg, unicode::Dense1x2};

use crate::TotpError;

/// Smallest rendered width/height in pixels, so that codes scan easily
/// from a screen without the caller having to scale them.
const MIN_SIZE_PX: u32 = 200;

/// Smallest module (one black or white square) in pixels: the largest
/// codes (an issuer and an address at their limits, 145 modules across)
/// drawn in 200 px had modules of 2 px, which a phone's camera reads off
/// a screen badly and one common decoder not at all.
pub const MIN_MODULE_PX: u32 = 4;

/// The quiet zone the renderers draw on each side, in modules.
const QUIET_ZONE_MODULES: u32 = 4;

fn encode(data: &str) -> Result<QrCode, TotpError> {
    QrCode::new(data.as_bytes()).map_err(|e| TotpError::Qr(e.to_string()))
}

/// The module size that makes `code` at least [`MIN_SIZE_PX`] across,
/// and never below [`MIN_MODULE_PX`].
fn module_px(code: &QrCode) -> u32 {
    let modules = u32::try_from(code.width()).unwrap_or(u32::MAX) + 2 * QUIET_ZONE_MODULES;
    MIN_SIZE_PX.div_ceil(modules).max(MIN_MODULE_PX)
}

/// An SVG document (black on white, with the standard quiet zone, at least
/// 200×200 px and 4 px a module) encoding `data`.
pub fn qr_svg(data: &str) -> Result<String, TotpError> {
    let code = encode(data)?;
    let module = module_px(&code);
    Ok(code
        .render::<svg::Color<'_>>()
        .quiet_zone(true)
        .module_dimensions(module, module)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build())
}

/// A greyscale PNG (black on white, with the standard quiet zone, at least
/// 200×200 px and 4 px a module) encoding `data`.
pub fn qr_png(data: &str) -> Result<Vec<u8>, TotpError> {
    let code = encode(data)?;
    let module = module_px(&code);
    let image = code
        .render::<Luma<u8>>()
        .quiet_zone(true)
        .module_dimensions(module, module)
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
