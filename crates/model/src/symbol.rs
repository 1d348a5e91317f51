use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// A canonical trading pair, `BASE-QUOTE` in upper case (`BTC-USDT`).
///
/// Symbols end up in object keys, so anything but upper-case ASCII letters and digits on either
/// side of one dash is rejected: `../x`, empty strings, spaces and lower case never get through.
///
/// Cloning is cheap (the text is shared): every candle carries its symbol.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol {
    text: std::sync::Arc<str>,
    dash: usize,
}

const MAX_PART: usize = 16;

impl Symbol {
    pub fn parse(input: &str) -> Result<Symbol, Error> {
        let invalid = |reason| Error::InvalidSymbol {
            input: input.to_string(),
            reason,
        };
        if input.is_empty() {
            return Err(invalid("empty"));
        }
        let Some(dash) = input.find('-') else {
            return Err(invalid("expected BASE-QUOTE, e.g. BTC-USDT"));
        };
        let (base, quote) = (&input[..dash], &input[dash + 1..]);
        for part in [base, quote] {
            if part.is_empty() {
                return Err(invalid("expected BASE-QUOTE, e.g. BTC-USDT"));
            }
            if part.len() > MAX_PART {
                return Err(invalid("each side may have at most 16 characters"));
            }
            if !part
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            {
                return Err(invalid(
                    "only upper-case letters and digits are allowed on each side of one dash",
                ));
            }
        }
        Ok(Symbol {
            text: input.into(),
            dash,
        })
    }

    #[inline]
    pub fn base(&self) -> &str {
        &self.text[..self.dash]
    }

    #[inline]
    pub fn quote(&self) -> &str {
        &self.text[self.dash + 1..]
    }

    #[inline]
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Symbol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Symbol::parse(s)
    }
}

impl Serialize for Symbol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Symbol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Symbol::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_pairs() {
        let s = Symbol::parse("BTC-USDT").unwrap();
        assert_eq!((s.base(), s.quote()), ("BTC", "USDT"));
        assert_eq!(Symbol::parse("1INCH-USDT").unwrap().base(), "1INCH");
    }

    #[test]
    fn rejects_paths_and_garbage() {
        for bad in [
            "",
            "../x",
            "BTC",
            "btc-usdt",
            "BTC-",
            "-USDT",
            "BTC-US-DT",
            "BTC/USDT",
            "BTC -USDT",
            "BTC-USDT\n",
            "ÄBC-USDT",
        ] {
            let err = Symbol::parse(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidSymbol { ref input, .. } if input == bad),
                "{bad:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn error_names_the_input() {
        let msg = Symbol::parse("../x").unwrap_err().to_string();
        assert!(msg.contains("\"../x\""), "{msg}");
    }
}
