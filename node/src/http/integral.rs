//! Whole numbers in JSON bodies, as JSON Schema counts them: `600` and `600.0` are both the
//! integer 600 (a schema of `type: integer` accepts both, so schema-driven clients send both).
//! A body field of this type takes any JSON number; the handler then asks for the whole
//! number it holds, and a fraction or a negative value is refused with 422, like any other
//! value out of range, rather than as a malformed body.

use serde::{Deserialize, Deserializer};

/// The largest integer an `f64` holds exactly: larger fractions-free floats are refused, since
/// they no longer name one integer.
const F64_EXACT_INTEGER_MAX: f64 = 9_007_199_254_740_992.0; // 2^53

/// A JSON number a body sent where the schema says `integer`.
#[derive(Debug, Clone, PartialEq)]
pub struct WholeNumber(serde_json::Number);

impl<'de> Deserialize<'de> for WholeNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Number::deserialize(deserializer).map(Self)
    }
}

impl WholeNumber {
    /// The non-negative whole number it holds, or why not (naming `field`).
    pub fn to_u64(&self, field: &str) -> Result<u64, String> {
        if let Some(value) = self.0.as_u64() {
            return Ok(value);
        }
        let value = self.0.as_f64().unwrap_or(f64::NAN);
        if value.fract() == 0.0 && (0.0..=F64_EXACT_INTEGER_MAX).contains(&value) {
            // Exact: a whole float in range converts without rounding.
            return Ok(value as u64);
        }
        Err(format!(
            "{field} must be a whole number of at least 0, not {}",
            self.0
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_are_taken_in_either_spelling_and_fractions_are_refused() {
        // Goal: JSON Schema's integers (600 and 600.0) are accepted; fractions, negatives and
        // floats too large to be exact are refused with a message naming the field.
        let parse = |text: &str| serde_json::from_str::<WholeNumber>(text).unwrap();
        assert_eq!(parse("600").to_u64("x"), Ok(600));
        assert_eq!(parse("600.0").to_u64("x"), Ok(600));
        assert_eq!(parse("6e2").to_u64("x"), Ok(600));
        assert_eq!(parse("18446744073709551615").to_u64("x"), Ok(u64::MAX));
        for bad in ["600.5", "-1", "-0.5", "1e300"] {
            let error = parse(bad).to_u64("duration_seconds").unwrap_err();
            assert!(
                error.starts_with("duration_seconds must be"),
                "{bad}: {error}"
            );
        }
        assert!(serde_json::from_str::<WholeNumber>("\"600\"").is_err());
    }
}
