//! Money: an integer amount of minor units (cents) with an ISO 4217 currency code.
//! Never a float (docs/api.md: "All amounts are integers").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::LedgerError;

/// An ISO 4217 alphabetic code: three ASCII capital letters ("EUR", "USD").
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub const EUR: Currency = Currency(*b"EUR");
    pub const USD: Currency = Currency(*b"USD");

    pub fn new(code: &str) -> Result<Self, LedgerError> {
        match code.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(LedgerError::InvalidCurrency(code.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII capitals are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

impl FromStr for Currency {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self, LedgerError> {
        Self::new(s)
    }
}

impl TryFrom<String> for Currency {
    type Error = LedgerError;
    fn try_from(s: String) -> Result<Self, LedgerError> {
        Self::new(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_string()
    }
}

/// An amount of money in minor units of `currency` (may be negative: a postpaid
/// balance in arrears).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    pub fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }

    pub fn is_negative(&self) -> bool {
        self.minor < 0
    }

    fn same_currency(&self, other: &Money) -> Result<(), LedgerError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(LedgerError::CurrencyMismatch {
                expected: self.currency,
                got: other.currency,
            })
        }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, LedgerError> {
        self.same_currency(&other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(LedgerError::AmountOverflow)?;
        Ok(Money::new(minor, self.currency))
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, LedgerError> {
        self.same_currency(&other)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or(LedgerError::AmountOverflow)?;
        Ok(Money::new(minor, self.currency))
    }

    pub fn checked_mul(self, factor: i64) -> Result<Money, LedgerError> {
        let minor = self
            .minor
            .checked_mul(factor)
            .ok_or(LedgerError::AmountOverflow)?;
        Ok(Money::new(minor, self.currency))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (minor units)", self.minor, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes_are_three_capitals() {
        assert_eq!(Currency::new("EUR").unwrap().as_str(), "EUR");
        assert!(Currency::new("eur").is_err());
        assert!(Currency::new("EURO").is_err());
        assert!(Currency::new("").is_err());
        assert_eq!(String::from(Currency::new("USD").unwrap()), "USD");
    }

    #[test]
    fn arithmetic_refuses_mixed_currencies() {
        let eur = Currency::new("EUR").unwrap();
        let usd = Currency::new("USD").unwrap();
        assert_eq!(
            Money::new(5, eur).checked_sub(Money::new(7, eur)),
            Ok(Money::new(-2, eur))
        );
        assert_eq!(
            Money::new(5, eur).checked_add(Money::new(7, usd)),
            Err(LedgerError::CurrencyMismatch {
                expected: eur,
                got: usd
            })
        );
        assert_eq!(
            Money::new(i64::MAX, eur).checked_mul(2),
            Err(LedgerError::AmountOverflow)
        );
    }
}
