//! The operator's catalogue file (TOML): packs, plans, the trial offer, pay-as-you-go
//! pricing and the commerce policy (docs/api.md, "Money"). Loaded once at start; price
//! changes scheduled through the API live in the database on top of it.

use std::path::{Path, PathBuf};

use kinema_ledger::calendar::{DAY_MS, HOUR_MS};
use kinema_ledger::{
    Catalogue, Currency, Money, Pack, Plan, PlanInterval, PostpaidPolicy, PriceHistory, TrialOffer,
    Validity,
};
use serde::Deserialize;

/// The catalogue used when the operator gives none (and the data dir has no
/// `catalog.toml`). Also the reference for the file's format.
pub const DEFAULT_CATALOG: &str = r#"# Kinema catalogue. Money is in minor units (cents) of `currency`.
currency = "EUR"

[policy]
# A price change must be announced at least this long before it takes effect.
price_notice_days = 30
# Credits refunded into a lot that expired meanwhile last this long in a refund lot.
refund_grace_days = 7
# An owner cannot delete an account younger than this.
account_min_age_days = 7

[trial]
credits = 100
days = 14

[organisations]
# Seats (members) of an account without a plan in force; a plan brings its own.
seats_without_plan = 1

[postpaid]
# What one credit of a job's quote costs a pay-as-you-go account.
price_per_credit = 1
grace_hours = 24
suspension_limit_days = 15

[[packs]]
id = "starter"
credits = 500
price = 999
validity_days = 90

[[packs]]
id = "studio"
credits = 3000
price = 4999
validity_days = 365

[[plans]]
id = "basic-monthly"
interval = "monthly"
credits_per_month = 1000
price = 1900
# Members the plan includes (default 1), and what one more costs per period.
seats = 1
extra_seat_price = 500

[[plans]]
id = "basic-annual"
interval = "annual"
credits_per_month = 1000
price = 19000
monthly_counterpart = "basic-monthly"
extra_seat_price = 5000

[[plans]]
id = "pro-monthly"
interval = "monthly"
credits_per_month = 5000
price = 7900
seats = 3
extra_seat_price = 900
"#;

/// The file name a data dir may hold the catalogue under.
pub const CATALOG_FILE: &str = "catalog.toml";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("reading the catalogue {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("catalogue {origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// Everything commerce needs from the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommerceConfig {
    pub currency: Currency,
    /// Packs and plans with their list prices (in effect since forever).
    pub catalogue: Catalogue,
    pub trial: TrialOffer,
    pub postpaid: PostpaidPolicy,
    pub usage_price: Money,
    pub price_notice_ms: i64,
    pub refund_grace_ms: i64,
    pub account_min_age_ms: i64,
    /// Seats of an account without a plan in force (docs/api.md, "Organisations and
    /// seats").
    pub seats_without_plan: u32,
    /// Where it came from ("built-in" or the file).
    pub origin: String,
}

impl Default for CommerceConfig {
    fn default() -> Self {
        // The built-in file is checked by a unit test.
        CommerceConfig::parse(DEFAULT_CATALOG, "built-in").unwrap_or_else(|e| {
            panic!("the built-in catalogue is invalid: {e}");
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    currency: String,
    #[serde(default)]
    policy: PolicyFile,
    trial: Option<TrialFile>,
    postpaid: Option<PostpaidFile>,
    #[serde(default)]
    packs: Vec<PackFile>,
    #[serde(default)]
    plans: Vec<PlanFile>,
    #[serde(default)]
    organisations: OrganisationsFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrganisationsFile {
    #[serde(default = "one")]
    seats_without_plan: u32,
}

impl Default for OrganisationsFile {
    fn default() -> Self {
        Self {
            seats_without_plan: 1,
        }
    }
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default = "thirty")]
    price_notice_days: i64,
    #[serde(default = "seven")]
    refund_grace_days: i64,
    #[serde(default = "seven")]
    account_min_age_days: i64,
}

impl Default for PolicyFile {
    fn default() -> Self {
        Self {
            price_notice_days: 30,
            refund_grace_days: 7,
            account_min_age_days: 7,
        }
    }
}

fn thirty() -> i64 {
    30
}
fn seven() -> i64 {
    7
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrialFile {
    credits: i64,
    #[serde(default = "fourteen")]
    days: i64,
}

fn fourteen() -> i64 {
    14
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostpaidFile {
    price_per_credit: i64,
    #[serde(default = "twenty_four")]
    grace_hours: i64,
    #[serde(default = "fifteen")]
    suspension_limit_days: i64,
}

fn twenty_four() -> i64 {
    24
}
fn fifteen() -> i64 {
    15
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackFile {
    id: String,
    credits: i64,
    price: i64,
    validity_days: Option<i64>,
    validity_months: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    id: String,
    interval: String,
    credits_per_month: i64,
    price: i64,
    monthly_counterpart: Option<String>,
    #[serde(default = "one")]
    seats: u32,
    extra_seat_price: Option<i64>,
}

impl CommerceConfig {
    /// Reads `path`, naming every problem in one error.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, CatalogError> {
        let invalid = |message: String| CatalogError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut problems = Vec::new();
        let currency = Currency::new(&file.currency).map_err(|e| invalid(e.to_string()))?;
        let history = |what: &str, price: i64, problems: &mut Vec<String>| match PriceHistory::new(
            Money::new(price, currency),
            0,
        ) {
            Ok(h) => Some(h),
            Err(e) => {
                problems.push(format!("{what}: {e}"));
                None
            }
        };
        let mut packs = Vec::new();
        for p in &file.packs {
            let what = format!("pack {:?}", p.id);
            let validity = match (p.validity_days, p.validity_months) {
                (None, None) => Validity::Never,
                (Some(d), None) if d > 0 => Validity::Millis(d.saturating_mul(DAY_MS)),
                (None, Some(m)) if m > 0 => Validity::Months(m),
                (Some(_), Some(_)) => {
                    problems.push(format!(
                        "{what}: give validity_days or validity_months, not both"
                    ));
                    continue;
                }
                _ => {
                    problems.push(format!("{what}: validity must be positive"));
                    continue;
                }
            };
            if let Some(prices) = history(&what, p.price, &mut problems) {
                packs.push(Pack {
                    id: p.id.clone(),
                    credits: p.credits,
                    validity,
                    prices,
                });
            }
        }
        let mut plans = Vec::new();
        for p in &file.plans {
            let what = format!("plan {:?}", p.id);
            let interval = match p.interval.as_str() {
                "monthly" => PlanInterval::Monthly,
                "annual" => PlanInterval::Annual,
                other => {
                    problems.push(format!(
                        "{what}: interval {other:?} is neither \"monthly\" nor \"annual\""
                    ));
                    continue;
                }
            };
            if let Some(prices) = history(&what, p.price, &mut problems) {
                plans.push(Plan {
                    id: p.id.clone(),
                    interval,
                    credits_per_month: p.credits_per_month,
                    prices,
                    monthly_counterpart: p.monthly_counterpart.clone(),
                    seats: p.seats,
                    extra_seat_price: p.extra_seat_price.map(|m| Money::new(m, currency)),
                });
            }
        }
        for p in file
            .packs
            .iter()
            .map(|p| &p.id)
            .chain(file.plans.iter().map(|p| &p.id))
        {
            if p.trim().is_empty() || p.chars().any(char::is_whitespace) {
                problems.push(format!("id {p:?} must be a non-empty word"));
            }
        }
        let catalogue = Catalogue { packs, plans };
        problems.extend(catalogue.problems());
        let trial = match &file.trial {
            Some(t) => {
                if t.credits <= 0 || t.days <= 0 {
                    problems.push("trial: credits and days must be positive".into());
                }
                TrialOffer {
                    credits: t.credits,
                    duration_ms: t.days.saturating_mul(DAY_MS),
                }
            }
            None => TrialOffer {
                credits: 0,
                duration_ms: kinema_ledger::DEFAULT_TRIAL_MS,
            },
        };
        let (usage_price, postpaid) = match &file.postpaid {
            Some(p) => {
                if p.price_per_credit < 0 || p.grace_hours < 0 || p.suspension_limit_days < 0 {
                    problems.push("postpaid: values cannot be negative".into());
                }
                (
                    Money::new(p.price_per_credit, currency),
                    PostpaidPolicy {
                        grace_ms: p.grace_hours.saturating_mul(HOUR_MS),
                        suspension_limit_ms: p.suspension_limit_days.saturating_mul(DAY_MS),
                    },
                )
            }
            None => (Money::new(0, currency), PostpaidPolicy::default()),
        };
        let pol = &file.policy;
        if pol.price_notice_days < 0 || pol.refund_grace_days <= 0 || pol.account_min_age_days < 0 {
            problems.push(
                "policy: price_notice_days and account_min_age_days cannot be negative, \
                 refund_grace_days must be positive"
                    .into(),
            );
        }
        if file.organisations.seats_without_plan == 0 {
            problems.push("organisations: seats_without_plan must be at least 1".into());
        }
        if !problems.is_empty() {
            return Err(invalid(problems.join("; ")));
        }
        Ok(CommerceConfig {
            currency,
            catalogue,
            trial,
            postpaid,
            usage_price,
            price_notice_ms: pol.price_notice_days.saturating_mul(DAY_MS),
            refund_grace_ms: pol.refund_grace_days.saturating_mul(DAY_MS),
            account_min_age_ms: pol.account_min_age_days.saturating_mul(DAY_MS),
            seats_without_plan: file.organisations.seats_without_plan,
            origin: origin.to_string(),
        })
    }

    /// Where an account's seats come from, for the store.
    pub fn seat_rule(&self) -> kinema_store::SeatRule {
        kinema_store::SeatRule {
            catalogue: self.catalogue.clone(),
            without_plan: self.seats_without_plan,
        }
    }

    /// Whether this catalogue offers a trial at all.
    pub fn has_trial(&self) -> bool {
        self.trial.credits > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalogue_parses() {
        let c = CommerceConfig::parse(DEFAULT_CATALOG, "built-in").unwrap();
        assert_eq!(c.catalogue.packs.len(), 2);
        assert_eq!(c.catalogue.plans.len(), 3);
        assert_eq!(c.price_notice_ms, 30 * DAY_MS);
        assert_eq!(c.trial.credits, 100);
        assert_eq!(c.usage_price, Money::new(1, Currency::EUR));
        assert_eq!(c.seats_without_plan, 1);
        let pro = c.catalogue.plan("pro-monthly").unwrap();
        assert_eq!(
            (pro.seats, pro.extra_seat_price),
            (3, Some(Money::new(900, Currency::EUR)))
        );
        assert_eq!(c.catalogue.plan("basic-annual").unwrap().seats, 1);
        let annual = c.catalogue.plan("basic-annual").unwrap();
        assert_eq!(
            c.catalogue.monthly_reference_price(annual, 0),
            Ok(Some(Money::new(1900, Currency::EUR)))
        );
    }

    #[test]
    fn every_mistake_is_named() {
        let text = r#"
currency = "EUR"
[[packs]]
id = "a"
credits = 0
price = -1
validity_days = 0
[[packs]]
id = "b"
credits = 5
price = 5
validity_days = 1
validity_months = 1
[[plans]]
id = "y"
interval = "weekly"
credits_per_month = 1
price = 1
"#;
        let err = CommerceConfig::parse(text, "test").unwrap_err().to_string();
        for needle in ["validity must be positive", "not both", "weekly"] {
            assert!(err.contains(needle), "{needle:?} in {err}");
        }
        let err = CommerceConfig::parse("currency = \"EUR\"\nbogus = 1\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
        let err = CommerceConfig::parse(
            "currency = \"EUR\"\n[[packs]]\nid = \"p\"\ncredits = 0\nprice = 1\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("credits must be positive"), "{err}");
        assert!(CommerceConfig::parse("currency = \"eur\"\n", "t").is_err());
    }

    #[test]
    fn seats_are_checked() {
        let text = r#"
currency = "EUR"
[organisations]
seats_without_plan = 0
[[plans]]
id = "team"
interval = "monthly"
credits_per_month = 1
price = 1
seats = 0
extra_seat_price = -5
"#;
        let err = CommerceConfig::parse(text, "test").unwrap_err().to_string();
        for needle in [
            "seats_without_plan must be at least 1",
            "seats must be at least 1",
            "negative extra_seat_price",
        ] {
            assert!(err.contains(needle), "{needle:?} in {err}");
        }
        let ok = "currency = \"EUR\"\n[[plans]]\nid = \"p\"\ninterval = \"monthly\"\ncredits_per_month = 1\nprice = 1\n";
        let c = CommerceConfig::parse(ok, "t").unwrap();
        let p = c.catalogue.plan("p").unwrap();
        assert_eq!(
            (p.seats, p.extra_seat_price, c.seats_without_plan),
            (1, None, 1)
        );
    }
}
