//! What the colour and embedding stages get for one garment: its rectangle in the frame and,
//! when a person mask exists, which of the rectangle's pixels are the shopper.
//!
//! Minimal form of the interface agreed for issue 10 (the pose-regions branch owns this file and
//! adds the masked-crop helper); the colour descriptor reads the mask through [`CropMask`].

/// One garment to embed.
#[derive(Debug, Clone, PartialEq)]
pub struct GarmentCrop {
    /// x, y, w, h in frame pixels.
    pub rect: (u32, u32, u32, u32),
    pub mask: Option<CropMask>,
}

/// A person mask over a crop, the crop's size, row-major: 255 = shopper, 0 = not.
#[derive(Debug, Clone, PartialEq)]
pub struct CropMask {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}
