//! A byte scanner for the exact shape Binance sends klines in, for the silver build's hot path.
//!
//! It accepts only the plain form: an array of 12-field rows whose integers are plain digits and
//! whose decimals are plain `digits[.digits]` strings, no escapes, ASCII only. Anything else
//! returns `None` and the caller parses the page with `serde_json`, which names what is wrong.
//! So the scanner never decides that a page is bad, and what it accepts parses to the same
//! values `serde_json` plus `str::parse::<f64>` give (decimals are converted exactly when
//! that is possible without rounding twice, and by `str::parse` otherwise).

/// One kline's numeric fields, in Binance's order (the last field is not used).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ScannedKline {
    pub open_ms: i64,
    /// open, high, low, close, volume.
    pub prices: [f64; 5],
    pub close_ms: i64,
    pub quote_volume: f64,
    pub trades: i64,
    /// Taker buy base and quote volumes.
    pub taker_buy: [f64; 2],
}

/// Powers of ten that are exact in an f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn ws(&mut self) {
        while let Some(c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    /// Skips whitespace, then takes `c` if it is next.
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        self.eat(c).then_some(())
    }

    /// A non-negative JSON integer without leading zeros, at most 18 digits.
    fn int(&mut self) -> Option<i64> {
        self.ws();
        let start = self.i;
        let mut v: i64 = 0;
        while let Some(&c) = self.b.get(self.i) {
            if !c.is_ascii_digit() {
                break;
            }
            v = v * 10 + i64::from(c - b'0');
            self.i += 1;
        }
        let n = self.i - start;
        if n == 0 || n > 18 || (n > 1 && self.b[start] == b'0') {
            return None;
        }
        // A fraction or exponent makes it a float: not this scanner's business.
        match self.b.get(self.i) {
            Some(b'.' | b'e' | b'E') => None,
            _ => Some(v),
        }
    }

    /// A string of printable ASCII without escapes; returns its bytes.
    fn plain_str(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.i;
        loop {
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' => return None,
                0x20..=0x7e => self.i += 1,
                _ => return None,
            }
        }
        let s = &self.b[start..self.i];
        self.i += 1;
        Some(s)
    }

    /// A decimal string `"digits[.digits]"` as the f64 `str::parse` gives, in one pass.
    fn decimal(&mut self) -> Option<f64> {
        self.expect(b'"')?;
        let start = self.i;
        let mut m: u64 = 0;
        let mut digits = self.digits(&mut m);
        let whole = digits;
        let dot = self.b.get(self.i) == Some(&b'.');
        if dot {
            self.i += 1;
            // Binance sends eight digits after the point: take them as one word.
            if let Some(v) = self.eight_digits() {
                m = m.wrapping_mul(100_000_000).wrapping_add(v);
                digits += 8;
                self.i += 8;
            }
            digits += self.digits(&mut m);
        }
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        let end = self.i;
        self.i += 1;
        let frac = digits - whole;
        if whole == 0 || (dot && frac == 0) {
            return None;
        }
        // Exact when the digits fit in 53 bits and the divisor is an exact power of ten: one
        // correctly rounded division, the same result as a correctly rounded parse.
        if digits <= 19 && frac < POW10.len() && m < (1u64 << 53) {
            return Some(m as f64 / POW10[frac]);
        }
        std::str::from_utf8(&self.b[start..end]).ok()?.parse().ok()
    }

    /// Takes a run of ASCII digits into `m` (wrapping; the caller counts them) and returns
    /// how many there were.
    fn digits(&mut self, m: &mut u64) -> usize {
        let from = self.i;
        while let Some(&c) = self.b.get(self.i) {
            if !c.is_ascii_digit() {
                break;
            }
            *m = m.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
            self.i += 1;
        }
        self.i - from
    }

    /// The value of the next eight bytes if all of them are ASCII digits (the first the most
    /// significant), read as one little-endian word.
    fn eight_digits(&self) -> Option<u64> {
        const ZEROS: u64 = 0x3030_3030_3030_3030;
        const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
        let bytes: [u8; 8] = self.b.get(self.i..self.i + 8)?.try_into().ok()?;
        let w = u64::from_le_bytes(bytes);
        // Every byte is 0x30 to 0x3F, and none is above 0x39 (adding 6 carries it out of 3).
        if w & HIGH != ZEROS || w.wrapping_add(0x0606_0606_0606_0606) & HIGH != ZEROS {
            return None;
        }
        let d = w - ZEROS;
        // Neighbouring digits to two-digit lanes, then those to one eight-digit number.
        let pairs = d.wrapping_mul(10).wrapping_add(d >> 8);
        let lo = (pairs & 0x0000_00FF_0000_00FF).wrapping_mul(100 + (1_000_000 << 32));
        let hi = ((pairs >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32));
        Some(lo.wrapping_add(hi) >> 32)
    }

    /// A field the candle does not use: a plain string or a plain integer.
    fn ignored(&mut self) -> Option<()> {
        self.ws();
        if self.b.get(self.i) == Some(&b'"') {
            self.plain_str().map(|_| ())
        } else {
            self.int().map(|_| ())
        }
    }

    fn row(&mut self) -> Option<ScannedKline> {
        self.expect(b'[')?;
        let open_ms = self.int()?;
        let mut prices = [0.0; 5];
        for p in &mut prices {
            self.expect(b',')?;
            *p = self.decimal()?;
        }
        self.expect(b',')?;
        let close_ms = self.int()?;
        self.expect(b',')?;
        let quote_volume = self.decimal()?;
        self.expect(b',')?;
        let trades = self.int()?;
        let mut taker_buy = [0.0; 2];
        for t in &mut taker_buy {
            self.expect(b',')?;
            *t = self.decimal()?;
        }
        self.expect(b',')?;
        self.ignored()?;
        self.expect(b']')?;
        Some(ScannedKline {
            open_ms,
            prices,
            close_ms,
            quote_volume,
            trades,
            taker_buy,
        })
    }
}

/// The rows of a klines page in its plain form, or `None` if the page is anything else.
pub(crate) fn scan_klines(body: &[u8]) -> Option<Vec<ScannedKline>> {
    let mut c = Cursor { b: body, i: 0 };
    c.expect(b'[')?;
    // Rows are about 140 bytes: reserve once.
    let mut rows = Vec::with_capacity(body.len() / 128 + 1);
    if !c.eat(b']') {
        loop {
            rows.push(c.row()?);
            if c.eat(b']') {
                break;
            }
            c.expect(b',')?;
        }
    }
    c.ws();
    (c.i == body.len()).then_some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_the_plain_form() {
        let body = br#"[[1499040000000,"0.01634790","0.80000000","0.01575800","0.01577100","148976.11427815",1499644799999,"2434.19055334",308,"1756.87402397","28.46694368","0"]]"#;
        let rows = scan_klines(body).unwrap();
        assert_eq!(rows.len(), 1);
        let r = rows[0];
        assert_eq!(r.open_ms, 1499040000000);
        assert_eq!(
            r.prices,
            [0.0163479, 0.8, 0.015758, 0.015771, 148976.11427815]
        );
        assert_eq!(r.close_ms, 1499644799999);
        assert_eq!(r.quote_volume, 2434.19055334);
        assert_eq!(r.trades, 308);
        assert_eq!(scan_klines(b" [ ] ").unwrap(), vec![]);
    }

    #[test]
    fn leaves_anything_unusual_to_the_json_parser() {
        for body in [
            &br#"[[1,"1","1","1","1","1",2,"1",3,"0","0","0"]"#[..],
            br#"[[1,"1","1","1","1","1",2,"1",3,"0","0","0"]] x"#,
            br#"[[1,"1\u0030","1","1","1","1",2,"1",3,"0","0","0"]]"#,
            br#"[[1,"1e3","1","1","1","1",2,"1",3,"0","0","0"]]"#,
            br#"[[1,"1.","1","1","1","1",2,"1",3,"0","0","0"]]"#,
            br#"[[1,"-1","1","1","1","1",2,"1",3,"0","0","0"]]"#,
            br#"[[01,"1","1","1","1","1",2,"1",3,"0","0","0"]]"#,
            br#"[[1.5,"1","1","1","1","1",2,"1",3,"0","0","0"]]"#,
            br#"[[1,"1","1","1","1","1",2,"1",3,"0","0"]]"#,
            br#"[[1,"1","1","1","1","1",2,"1",3,"0","0","0",4]]"#,
            br#"[[1,1.0,"1","1","1","1",2,"1",3,"0","0","0"]]"#,
            br#"[[1,"1","1","1","1","1",2,"1",3,"0","0",null]]"#,
            br#"{"code":-1121}"#,
        ] {
            assert_eq!(scan_klines(body), None, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn eight_digits_read_as_one_number_or_not_at_all() {
        let at = |text: &str| {
            Cursor {
                b: text.as_bytes(),
                i: 0,
            }
            .eight_digits()
        };
        assert_eq!(at("12345678"), Some(12_345_678));
        assert_eq!(at("00000009x"), Some(9));
        assert_eq!(at("99999999"), Some(99_999_999));
        assert_eq!(at("1234567"), None);
        assert_eq!(at("1234:678"), None);
        assert_eq!(at("1234/678"), None);
        assert_eq!(at("1234.678"), None);
    }

    #[test]
    fn long_decimals_round_like_str_parse() {
        for s in [
            "123456789.123456789123",
            "0.000000000000000000000001",
            "9007199254740993",
            "1",
        ] {
            let body = format!(r#"[[1,"{s}","1","1","1","1",2,"1",3,"0","0","0"]]"#);
            let rows = scan_klines(body.as_bytes()).unwrap();
            assert_eq!(rows[0].prices[0], s.parse::<f64>().unwrap(), "{s}");
        }
    }

    proptest::proptest! {
        /// Every plain decimal converts to exactly what `str::parse` gives.
        #[test]
        fn decimals_equal_str_parse(int in "[0-9]{1,20}", frac in proptest::option::of("[0-9]{1,24}")) {
            let s = match &frac { Some(f) => format!("{int}.{f}"), None => int.clone() };
            let body = format!(r#"[[1,"{s}","1","1","1","1",2,"1",3,"0","0","0"]]"#);
            let rows = scan_klines(body.as_bytes()).unwrap();
            proptest::prop_assert_eq!(rows[0].prices[0].to_bits(), s.parse::<f64>().unwrap().to_bits());
        }
    }
}
