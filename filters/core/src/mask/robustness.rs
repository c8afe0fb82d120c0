//! Arbitrary input never panics, findings stay in bounds and apart, and JSON
//! output stays valid JSON.
//!
//! Inputs are proptest strategies with a fixed seed and case count, so a run
//! is reproducible and a failure shrinks to the fewest fragments that show it.

use std::borrow::Cow;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use super::{DetectorKind, DetectorSet, MaskStyle, Masked, Masker};

/// A fixed seed and case count, and no regression files: the same inputs on
/// every run.
pub(super) fn config(cases: u32, seed: u64) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Pieces that sit near detector boundaries.
const FRAGMENTS: &[&str] = &[
    "4111",
    " ",
    "-",
    "1111",
    "@",
    "example.com",
    "+1",
    "(415)",
    "555",
    ".",
    "0132",
    "DE89",
    "3704",
    "eyJ",
    "hbGciOiJIUzI1NiJ9",
    "AKIA",
    "IOSFODNN7EXAMPLE",
    "-----BEGIN ",
    "PRIVATE KEY",
    "-----",
    "-----END ",
    "password",
    "=",
    ":",
    "\"",
    "\\",
    "536",
    "22",
    "1234",
    "\n",
    "é",
    "\u{1F600}",
    "{",
    "}",
];

/// Text of up to 40 pieces: mostly [`FRAGMENTS`], a quarter arbitrary bytes.
fn tricky_text() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::sample::select(FRAGMENTS).prop_map(|f| f.as_bytes().to_vec()),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

/// A masker's settings: how many characters `partial` keeps, and a style per
/// detector (every style occurs).
#[derive(Debug, Clone)]
struct MaskerSettings {
    keep_last: usize,
    styles: Vec<MaskStyle>,
}

impl MaskerSettings {
    fn masker(&self) -> Masker {
        DetectorKind::ALL.into_iter().zip(&self.styles).fold(
            Masker::new()
                .with_hash_key(b"robustness key")
                .with_keep_last(self.keep_last),
            |m, (kind, style)| m.with_style(kind, *style),
        )
    }
}

fn masker_settings() -> impl Strategy<Value = MaskerSettings> {
    (
        0..9usize,
        prop::collection::vec(
            prop::sample::select(MaskStyle::ALL.to_vec()),
            DetectorKind::COUNT,
        ),
    )
        .prop_map(|(keep_last, styles)| MaskerSettings { keep_last, styles })
}

proptest! {
    #![proptest_config(config(20_000, 0x9E37_79B9_7F4A_7C15))]

    #[test]
    fn arbitrary_text_gives_sorted_in_bounds_findings_and_never_panics(
        text in tricky_text(),
        settings in masker_settings(),
    ) {
        let findings = DetectorSet::all().scan(&text);
        let mut last_end = 0;
        for f in &findings {
            prop_assert!(
                f.range.start >= last_end
                    && f.range.start < f.range.end
                    && f.range.end <= text.len(),
                "{f:?} after {last_end} in {} bytes",
                text.len()
            );
            last_end = f.range.end;
        }
        let out = settings.masker().mask_text(&text);
        prop_assert_eq!(out.counts.total() as usize, findings.len());
        if findings.is_empty() {
            prop_assert!(out.value.is_unchanged());
        }
        // Valid UTF-8 in gives valid UTF-8 out.
        if let (Ok(_), Masked::Value(Cow::Owned(masked))) = (std::str::from_utf8(&text), &out.value)
        {
            prop_assert!(
                std::str::from_utf8(masked).is_ok(),
                "{:?}",
                String::from_utf8_lossy(&text)
            );
        }
    }
}

proptest! {
    #![proptest_config(config(5_000, 0xD1B5_4A32_D192_ED03))]

    #[test]
    fn arbitrary_json_strings_stay_valid_json(
        text in tricky_text().prop_map(|t| String::from_utf8_lossy(&t).into_owned()),
        settings in masker_settings(),
    ) {
        let doc = serde_json::json!({"password": text, "items": [text, {"note": text}], "n": 4111111111111111u64});
        let json = doc.to_string();
        let out = settings.masker().mask_json_strings(json.as_bytes());
        prop_assert!(out.is_ok(), "{json}: {out:?}");
        if let Ok(out) = out {
            prop_assert!(
                serde_json::from_slice::<serde_json::Value>(&out.json).is_ok(),
                "{json} -> {}",
                String::from_utf8_lossy(&out.json)
            );
        }
    }
}

proptest! {
    #![proptest_config(config(20_000, 0x2545_F491_4F6C_DD1D))]

    #[test]
    fn arbitrary_bytes_as_json_never_panic(bytes in tricky_text()) {
        let _ = Masker::new().mask_json_strings(&bytes);
    }
}
