//! One vector per garment: the CNN embedding and the colour descriptor joined into a single unit
//! vector, so the catalog keeps one HNSW search per group (config section `[similarity]`).
//!
//! Both parts are unit vectors, so `[√(1−w)·embedding, √w·colour]` is a unit vector too and the
//! cosine of two fused vectors is `(1−w)·cos(embeddings) + w·colour similarity`: a weighted sum of
//! the two similarities, with `w = similarity.colour_weight`. Joining the vectors (rather than
//! re-ranking the top N of a CNN-only search by colour) keeps exact search, `top_k`, `ef_search`
//! and the exact-search check of `vitrine bench` meaning what they meant, and a garment whose
//! colour-nearest items are not among the CNN's first N still finds them.
//!
//! The [`Recipe`] is everything that decides a catalog vector, and its [`Recipe::describe`] text is
//! stored in the catalog's manifest (`embedder.recipe`): a catalog made with another recipe is
//! refused rather than searched with vectors that mean something else.

use image::RgbImage;
use serde::Deserialize;

use super::colour::{self, Selection};
use super::garment::GarmentCrop;

/// How the recipe of a catalog without one (made before colour existed) reads.
pub const CNN_ONLY: &str = "cnn";

/// `[similarity]` as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSimilarity {
    /// "lab-soft-hist" (the colour descriptor of `vision::colour`) or "none" (the CNN alone).
    #[serde(default = "default_colour")]
    pub colour: String,
    /// The colour's share of the similarity, 0 ≤ w < 1.
    #[serde(default = "default_weight")]
    pub colour_weight: f32,
    /// Catalog photos' background colour: their garment is what differs from it.
    #[serde(default = "default_background")]
    pub background: [u8; 3],
    /// How far (CIE76 ΔE) a photo's pixel must be from the background to be garment.
    #[serde(default = "default_delta_e")]
    pub background_delta_e: f64,
}

fn default_colour() -> String {
    "lab-soft-hist".into()
}
fn default_weight() -> f32 {
    0.65
}
fn default_background() -> [u8; 3] {
    [255, 255, 255]
}
fn default_delta_e() -> f64 {
    12.0
}

impl Default for RawSimilarity {
    fn default() -> Self {
        Self {
            colour: default_colour(),
            colour_weight: default_weight(),
            background: default_background(),
            background_delta_e: default_delta_e(),
        }
    }
}

impl RawSimilarity {
    /// The checked recipe, or every problem with the section.
    pub fn validate(&self) -> Result<Recipe, Vec<String>> {
        let mut p = Vec::new();
        let colour_on = match self.colour.as_str() {
            "lab-soft-hist" => true,
            "none" => false,
            other => {
                p.push(format!(
                    "similarity.colour = \"{other}\" is not one of \"lab-soft-hist\", \"none\""
                ));
                false
            }
        };
        if !(0.0..1.0).contains(&self.colour_weight) {
            p.push(format!(
                "similarity.colour_weight = {} must be at least 0 and below 1 (the colour's share of the similarity)",
                self.colour_weight
            ));
        }
        if !(self.background_delta_e.is_finite()
            && (0.0..=100.0).contains(&self.background_delta_e))
        {
            p.push(format!(
                "similarity.background_delta_e = {} must be between 0 and 100 (CIE76 ΔE)",
                self.background_delta_e
            ));
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(Recipe {
            colour: (colour_on && self.colour_weight > 0.0).then_some(ColourRecipe {
                weight: self.colour_weight,
                background: self.background,
                background_delta_e: self.background_delta_e,
            }),
        })
    }
}

/// The colour part of a recipe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColourRecipe {
    pub weight: f32,
    pub background: [u8; 3],
    pub background_delta_e: f64,
}

/// How a garment or product photo becomes the vector the catalog stores and searches.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Recipe {
    /// `None`: the CNN embedding alone (today's catalogs).
    pub colour: Option<ColourRecipe>,
}

impl Recipe {
    /// The fused vector's length for an embedder of `embed_dim`.
    pub fn dim(&self, embed_dim: usize) -> usize {
        embed_dim
            + if self.colour.is_some() {
                colour::DIM
            } else {
                0
            }
    }

    /// The text stored as the catalog manifest's `embedder.recipe`: the descriptor version, the
    /// weights and how a product photo's garment pixels are chosen. The model file is the
    /// fingerprint's `sha256`; the camera side's person mask does not change a catalog vector
    /// (catalog photos have no mask) and is not part of it.
    pub fn describe(&self) -> String {
        match self.colour {
            None => CNN_ONLY.into(),
            Some(c) => {
                let [r, g, b] = c.background;
                format!(
                    "cnn*{:.4}+{}*{:.4};photo-pixels=not-background(#{r:02x}{g:02x}{b:02x},dE>{})",
                    (1.0 - c.weight).sqrt(),
                    colour::DESCRIPTOR,
                    c.weight.sqrt(),
                    c.background_delta_e
                )
            }
        }
    }

    /// Joins a unit embedding and a colour descriptor (see the module header).
    pub fn fuse(&self, mut embedding: Vec<f32>, descriptor: &[f32]) -> Vec<f32> {
        let Some(c) = self.colour else {
            return embedding;
        };
        let we = (1.0 - c.weight).sqrt();
        let wc = c.weight.sqrt();
        embedding.iter_mut().for_each(|x| *x *= we);
        embedding.extend(descriptor.iter().map(|x| x * wc));
        super::embedder::l2_normalise(&mut embedding);
        embedding
    }

    /// Fuses the embeddings of crops of a camera frame: the colour comes from the mask's pixels,
    /// or the crop's central half without one.
    pub fn fuse_crops(
        &self,
        frame: &RgbImage,
        crops: &[GarmentCrop],
        embeddings: Vec<Vec<f32>>,
    ) -> Vec<Vec<f32>> {
        if self.colour.is_none() {
            return embeddings;
        }
        embeddings
            .into_iter()
            .zip(crops)
            .map(|(e, crop)| {
                let sel = crop
                    .mask
                    .as_ref()
                    .map_or(Selection::Central, Selection::Mask);
                self.fuse(e, &colour::crop_descriptor(frame, crop.rect, sel))
            })
            .collect()
    }

    /// The colour descriptor of a whole product photo (its non-background pixels).
    pub fn photo_descriptor(&self, img: &RgbImage) -> Option<Vec<f32>> {
        let c = self.colour?;
        let sel = Selection::Background {
            rgb: c.background,
            min_delta_e: c.background_delta_e,
        };
        Some(colour::crop_descriptor(
            img,
            (0, 0, img.width(), img.height()),
            sel,
        ))
    }

    /// Fuses the embedding of a whole product photo.
    pub fn fuse_photo(&self, img: &RgbImage, embedding: Vec<f32>) -> Vec<f32> {
        match self.photo_descriptor(img) {
            Some(d) => self.fuse(embedding, &d),
            None => embedding,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(w: f32) -> Recipe {
        RawSimilarity {
            colour_weight: w,
            ..Default::default()
        }
        .validate()
        .expect("valid")
    }

    #[test]
    fn fused_cosine_is_the_weighted_sum_of_the_parts() {
        let r = recipe(0.3);
        let e1 = vec![1.0, 0.0];
        let e2 = vec![0.6, 0.8];
        let c1 = vec![0.0, 1.0, 0.0];
        let c2 = vec![0.0, 0.8, 0.6];
        let mut c1 = c1;
        c1.resize(colour::DIM, 0.0);
        let mut c2 = c2;
        c2.resize(colour::DIM, 0.0);
        let f1 = r.fuse(e1, &c1);
        let f2 = r.fuse(e2, &c2);
        assert_eq!(f1.len(), r.dim(2));
        let cos: f32 = f1.iter().zip(&f2).map(|(a, b)| a * b).sum();
        assert!((cos - (0.7 * 0.6 + 0.3 * 0.8)).abs() < 1e-6, "{cos}");
        let n: f32 = f1.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-6);
    }

    #[test]
    fn recipe_text_and_problems() {
        assert_eq!(
            recipe(0.5).describe(),
            "cnn*0.7071+lab-soft-hist/1*0.7071;photo-pixels=not-background(#ffffff,dE>12)"
        );
        assert_eq!(recipe(0.0).describe(), CNN_ONLY);
        let off = RawSimilarity {
            colour: "none".into(),
            ..Default::default()
        };
        assert_eq!(off.validate().expect("valid"), Recipe::default());
        assert_eq!(Recipe::default().dim(256), 256);
        let bad = RawSimilarity {
            colour: "rgb".into(),
            colour_weight: 1.0,
            background_delta_e: f64::NAN,
            ..Default::default()
        };
        let p = bad.validate().expect_err("invalid").join("\n");
        assert!(p.contains("similarity.colour = \"rgb\""), "{p}");
        assert!(p.contains("similarity.colour_weight = 1"), "{p}");
        assert!(p.contains("similarity.background_delta_e = NaN"), "{p}");
    }
}
