use kinema_params::GenerationParams;
use serde::{Deserialize, Serialize};

use crate::{Credits, LedgerError};

/// Price of one resolution tier: applies to videos whose larger side is at most
/// `max_side` pixels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierPrice {
    pub tier: String,
    pub max_side: u32,
    pub credits_per_second: Credits,
}

/// A model's entry in the price book (docs/api.md, "Quotes").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPrice {
    /// Ascending by `max_side`.
    pub tiers: Vec<TierPrice>,
    /// Steps included in the base price; more steps scale the price linearly.
    pub default_steps: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub credits: Credits,
    pub tier: String,
    /// Seconds of video (frames / fps) in milliseconds, rounded down.
    pub video_millis: u64,
}

/// credits = ceil(credits_per_second x frames / fps x max(steps, default) / default),
/// and at least 1: every job costs something. A request the price book cannot price
/// is an [`LedgerError::InvalidQuote`] naming the request field at fault.
///
/// The price reads the job's size, frames, fps and steps; its prompt and input images
/// do not change it (an image-to-video job costs what a text-to-video job of the same
/// shape costs).
pub fn quote(price: &ModelPrice, input: &GenerationParams) -> Result<Quote, LedgerError> {
    let invalid = |field, reason: String| LedgerError::InvalidQuote { field, reason };
    if input.fps == 0 {
        return Err(invalid("fps", "must be at least 1".into()));
    }
    if input.num_frames == 0 {
        return Err(invalid("num_frames", "must be at least 1".into()));
    }
    if price.default_steps == 0 {
        return Err(LedgerError::InvalidPrice(
            "the price book entry has 0 default steps".into(),
        ));
    }
    let side = input.width.max(input.height);
    // The larger side picks the tier, so it is the one that is too large.
    let side_field = if input.width >= input.height {
        "width"
    } else {
        "height"
    };
    let tier = price
        .tiers
        .iter()
        .filter(|t| side <= t.max_side)
        .min_by_key(|t| t.max_side)
        .ok_or_else(|| invalid(side_field, format!("{side} px is above every priced tier")))?;
    let steps = input.steps.max(price.default_steps);
    let credits_at = |steps: u32| {
        let numerator = tier.credits_per_second as i128 * input.num_frames as i128 * steps as i128;
        let denominator = input.fps as i128 * price.default_steps as i128;
        Credits::try_from(((numerator + denominator - 1) / denominator).max(1)).ok()
    };
    let credits = match credits_at(steps) {
        Some(credits) => credits,
        // Steps above the default scale the price: they are at fault when the
        // default's price fits.
        None if steps > price.default_steps && credits_at(price.default_steps).is_some() => {
            return Err(invalid("steps", "price overflows".into()))
        }
        None => return Err(invalid("num_frames", "price overflows".into())),
    };
    Ok(Quote {
        credits,
        tier: tier.tier.clone(),
        video_millis: input.num_frames as u64 * 1000 / input.fps as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price() -> ModelPrice {
        ModelPrice {
            tiers: vec![
                TierPrice {
                    tier: "480p".into(),
                    max_side: 854,
                    credits_per_second: 10,
                },
                TierPrice {
                    tier: "720p".into(),
                    max_side: 1280,
                    credits_per_second: 25,
                },
            ],
            default_steps: 50,
        }
    }

    fn input(width: u32, height: u32, num_frames: u32, fps: u32, steps: u32) -> GenerationParams {
        GenerationParams {
            width,
            height,
            num_frames,
            fps,
            steps,
            ..GenerationParams::default()
        }
    }

    #[test]
    fn prices_seconds_of_video_by_tier_rounding_up() {
        let q = quote(&price(), &input(832, 480, 81, 16, 50)).unwrap();
        // 10 credits/s x 81/16 s = 50.625 -> 51
        assert_eq!(q.credits, 51);
        assert_eq!(q.tier, "480p");
        assert_eq!(q.video_millis, 5062);
        assert_eq!(
            quote(&price(), &input(1280, 720, 16, 16, 50))
                .unwrap()
                .credits,
            25
        );
    }

    #[test]
    fn steps_above_default_scale_and_below_do_not_discount() {
        assert_eq!(
            quote(&price(), &input(832, 480, 16, 16, 100))
                .unwrap()
                .credits,
            20
        );
        assert_eq!(
            quote(&price(), &input(832, 480, 16, 16, 10))
                .unwrap()
                .credits,
            10
        );
    }

    fn field_of(result: Result<Quote, LedgerError>) -> &'static str {
        match result {
            Err(LedgerError::InvalidQuote { field, .. }) => field,
            other => panic!("expected InvalidQuote, got {other:?}"),
        }
    }

    #[test]
    fn each_unpriceable_request_names_its_field() {
        // The larger side is above every tier: that side is at fault.
        assert_eq!(
            field_of(quote(&price(), &input(1920, 1080, 16, 16, 50))),
            "width"
        );
        assert_eq!(
            field_of(quote(&price(), &input(720, 1920, 16, 16, 50))),
            "height"
        );
        assert_eq!(
            field_of(quote(&price(), &input(832, 480, 16, 0, 50))),
            "fps"
        );
        assert_eq!(
            field_of(quote(&price(), &input(832, 480, 0, 16, 50))),
            "num_frames"
        );
    }

    #[test]
    fn an_overflowing_price_names_steps_or_frames() {
        let dear = ModelPrice {
            tiers: vec![TierPrice {
                tier: "any".into(),
                max_side: 4096,
                credits_per_second: i64::MAX / 4,
            }],
            default_steps: 1,
        };
        // Fits at the default step count; the extra steps overflow it.
        assert_eq!(field_of(quote(&dear, &input(64, 64, 1, 1, 8))), "steps");
        // Too dear at the default already: the frames are at fault.
        assert_eq!(
            field_of(quote(&dear, &input(64, 64, 8, 1, 1))),
            "num_frames"
        );
    }

    #[test]
    fn a_price_book_entry_without_default_steps_is_not_the_request_s_fault() {
        let broken = ModelPrice {
            default_steps: 0,
            ..price()
        };
        assert!(matches!(
            quote(&broken, &input(832, 480, 16, 16, 50)),
            Err(LedgerError::InvalidPrice(_))
        ));
    }

    #[test]
    fn every_job_costs_at_least_one_credit() {
        let cheap = ModelPrice {
            tiers: vec![TierPrice {
                tier: "any".into(),
                max_side: 4096,
                credits_per_second: 1,
            }],
            default_steps: 4,
        };
        assert_eq!(quote(&cheap, &input(16, 16, 1, 60, 1)).unwrap().credits, 1);
    }
}
