//! Arbitrary input never panics, findings stay in bounds and apart, and JSON
//! output stays valid JSON.

use std::borrow::Cow;

use super::{DetectorKind, DetectorSet, MaskStyle, Masked, Masker};

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Text built from fragments that sit near detector boundaries, mixed with
/// random bytes.
fn tricky_text(rng: &mut Rng) -> Vec<u8> {
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
    let mut text = Vec::new();
    for _ in 0..rng.below(40) {
        if rng.below(4) == 0 {
            text.push(rng.next() as u8);
        } else {
            text.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())].as_bytes());
        }
    }
    text
}

fn every_style_masker(rng: &mut Rng) -> Masker {
    let mut m = Masker::new()
        .with_hash_key(b"robustness key")
        .with_keep_last(rng.below(9));
    for kind in DetectorKind::ALL {
        m = m.with_style(kind, MaskStyle::ALL[rng.below(MaskStyle::ALL.len())]);
    }
    m
}

#[test]
fn arbitrary_text_gives_sorted_in_bounds_findings_and_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let all = DetectorSet::all();
    for _ in 0..20_000 {
        let text = tricky_text(&mut rng);
        let findings = all.scan(&text);
        let mut last_end = 0;
        for f in &findings {
            assert!(
                f.range.start >= last_end
                    && f.range.start < f.range.end
                    && f.range.end <= text.len()
            );
            last_end = f.range.end;
        }
        let masker = every_style_masker(&mut rng);
        let out = masker.mask_text(&text);
        assert_eq!(out.counts.total() as usize, findings.len());
        if findings.is_empty() {
            assert!(out.value.is_unchanged());
        }
        // Valid UTF-8 in gives valid UTF-8 out.
        if let (Ok(_), Masked::Value(Cow::Owned(masked))) = (std::str::from_utf8(&text), &out.value)
        {
            assert!(
                std::str::from_utf8(masked).is_ok(),
                "{:?}",
                String::from_utf8_lossy(&text)
            );
        }
    }
}

#[test]
fn arbitrary_json_strings_stay_valid_json() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for _ in 0..5_000 {
        let text = String::from_utf8_lossy(&tricky_text(&mut rng)).into_owned();
        let doc = serde_json::json!({"password": text, "items": [text, {"note": text}], "n": 4111111111111111u64});
        let json = doc.to_string();
        let masker = every_style_masker(&mut rng);
        let out = masker.mask_json_strings(json.as_bytes()).unwrap();
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&out.json) {
            panic!("{e}: {json} -> {}", String::from_utf8_lossy(&out.json));
        }
    }
}

#[test]
fn arbitrary_bytes_as_json_never_panic() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let masker = Masker::new();
    for _ in 0..20_000 {
        let bytes = tricky_text(&mut rng);
        let _ = masker.mask_json_strings(&bytes);
    }
}
