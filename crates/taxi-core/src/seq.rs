//! Kinesis sequence numbers.
//!
//! They are decimal strings of up to 129 digits: too long for any integer type
//! and for DynamoDB numbers (38 digits). In DynamoDB they are stored zero-padded
//! to a fixed width, so that string comparison in a condition expression is
//! numeric comparison.

use std::cmp::Ordering;
use std::fmt;

/// Widest sequence number Kinesis issues (`0|([1-9]\d{0,128})`).
pub const SEQ_WIDTH: usize = 129;

/// A Kinesis sequence number in canonical form (digits, no leading zeros).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SeqNum(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sequence number {0:?}: expected 1 to 129 decimal digits")]
pub struct InvalidSeqNum(pub String);

impl SeqNum {
    /// Accepts canonical or zero-padded decimal text.
    pub fn parse(text: &str) -> Result<SeqNum, InvalidSeqNum> {
        if text.is_empty() || text.len() > SEQ_WIDTH || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidSeqNum(text.chars().take(140).collect()));
        }
        let trimmed = text.trim_start_matches('0');
        Ok(SeqNum(if trimmed.is_empty() { "0".to_owned() } else { trimmed.to_owned() }))
    }

    /// Takes ownership of an already-owned string (the Lambda event's), without
    /// copying when it is canonical.
    pub fn from_string(text: String) -> Result<SeqNum, InvalidSeqNum> {
        let canonical = !text.is_empty()
            && text.len() <= SEQ_WIDTH
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'));
        if canonical {
            Ok(SeqNum(text))
        } else {
            SeqNum::parse(&text)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its length in three digits, then its digits: as short as the number
    /// plus three characters, and string order is numeric order (a sort key).
    pub fn to_sort_key(&self) -> String {
        format!("{:03}{}", self.0.len(), self.0)
    }

    /// The inverse of [`SeqNum::to_sort_key`].
    pub fn from_sort_key(key: &str) -> Result<SeqNum, InvalidSeqNum> {
        match (key.get(..3).and_then(|n| n.parse::<usize>().ok()), key.get(3..)) {
            (Some(len), Some(digits)) if digits.len() == len => SeqNum::parse(digits),
            _ => Err(InvalidSeqNum(key.chars().take(140).collect())),
        }
    }

    /// Fixed-width form for DynamoDB string comparison.
    pub fn to_padded(&self) -> String {
        format!("{:0>width$}", self.0, width = SEQ_WIDTH)
    }
}

impl Ord for SeqNum {
    fn cmp(&self, other: &Self) -> Ordering {
        // Canonical form: a longer number is a larger one.
        self.0.len().cmp(&other.0.len()).then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SeqNum {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_non_digits_and_overlong() {
        assert!(SeqNum::parse("").is_err());
        assert!(SeqNum::parse("12a").is_err());
        assert!(SeqNum::parse(&"9".repeat(130)).is_err());
        assert!(SeqNum::parse(&"9".repeat(129)).is_ok());
        assert_eq!(SeqNum::parse("000").unwrap().as_str(), "0");
        assert_eq!(SeqNum::from_string("0042".into()).unwrap().as_str(), "42");
        assert_eq!(SeqNum::parse("42").unwrap().to_sort_key(), "00242");
        assert!(SeqNum::from_sort_key("0034").is_err());
        assert!(SeqNum::from_sort_key("x").is_err());
    }

    proptest! {
        #[test]
        fn padded_string_order_is_numeric_order(a in "[1-9][0-9]{0,60}", b in "[1-9][0-9]{0,60}") {
            let (sa, sb) = (SeqNum::parse(&a).unwrap(), SeqNum::parse(&b).unwrap());
            prop_assert_eq!(sa.to_padded().len(), SEQ_WIDTH);
            prop_assert_eq!(sa.cmp(&sb), sa.to_padded().cmp(&sb.to_padded()));
            prop_assert_eq!(SeqNum::parse(&sa.to_padded()).unwrap(), sa.clone());
            prop_assert_eq!(sa.cmp(&sb), sa.to_sort_key().cmp(&sb.to_sort_key()));
            prop_assert_eq!(SeqNum::from_sort_key(&sa.to_sort_key()).unwrap(), sa);
        }

        #[test]
        fn order_matches_u128_order(a in any::<u64>(), b in any::<u64>()) {
            let (sa, sb) = (SeqNum::parse(&a.to_string()).unwrap(), SeqNum::parse(&b.to_string()).unwrap());
            prop_assert_eq!(sa.cmp(&sb), a.cmp(&b));
        }
    }
}
