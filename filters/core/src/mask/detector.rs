//! Scanning text with a set of detectors.

use std::ops::Range;

use super::kind::DetectorKind;

/// One sensitive value found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub detector: DetectorKind,
    /// Byte range of the value in the scanned text.
    pub range: Range<usize>,
}

/// Number of findings per detector, for records. Never holds the values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectorCounts {
    counts: [u32; DetectorKind::COUNT],
    /// Values longer than the scan cap, handled by the over-cap policy.
    pub over_cap: u32,
}

impl DetectorCounts {
    /// Counts one more finding of `kind`.
    pub fn add(&mut self, kind: DetectorKind) {
        if let Some(c) = self.counts.get_mut(kind.index()) {
            *c = c.saturating_add(1);
        }
    }

    /// Findings of `kind` so far.
    pub fn get(&self, kind: DetectorKind) -> u32 {
        self.counts.get(kind.index()).copied().unwrap_or(0)
    }

    /// Adds every count of `other` into `self`.
    pub fn merge(&mut self, other: &DetectorCounts) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
        self.over_cap = self.over_cap.saturating_add(other.over_cap);
    }

    /// Total findings over every detector (not counting over-cap values).
    pub fn total(&self) -> u32 {
        self.counts.iter().fold(0u32, |a, c| a.saturating_add(*c))
    }

    /// Whether nothing was found and no value was over the cap.
    pub fn is_empty(&self) -> bool {
        self.total() == 0 && self.over_cap == 0
    }

    /// `(detector, count)` for every detector with a non-zero count.
    pub fn iter(&self) -> impl Iterator<Item = (DetectorKind, u32)> + '_ {
        DetectorKind::ALL
            .into_iter()
            .map(|k| (k, self.get(k)))
            .filter(|(_, c)| *c > 0)
    }
}

/// A set of enabled detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectorSet {
    /// Bit `kind.index()` is set when `kind` is enabled.
    bits: u16,
}

impl Default for DetectorSet {
    /// Every detector.
    fn default() -> Self {
        Self::all()
    }
}

impl DetectorSet {
    /// Every detector.
    pub fn all() -> Self {
        DetectorKind::ALL.into_iter().collect()
    }

    /// No detector: scanning finds nothing.
    pub fn none() -> Self {
        Self { bits: 0 }
    }

    /// Only `kind`.
    pub fn only(kind: DetectorKind) -> Self {
        Self::none().with(kind)
    }

    /// This set plus `kind`.
    pub fn with(mut self, kind: DetectorKind) -> Self {
        self.bits |= 1 << kind.index();
        self
    }

    pub fn contains(&self, kind: DetectorKind) -> bool {
        self.bits & (1 << kind.index()) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// Enabled detectors in priority order.
    pub fn iter(&self) -> impl Iterator<Item = DetectorKind> + '_ {
        DetectorKind::ALL.into_iter().filter(|k| self.contains(*k))
    }

    /// Every non-overlapping finding in `text`, in ascending order.
    pub fn scan(&self, text: &[u8]) -> Vec<Finding> {
        let mut findings = Vec::new();
        self.scan_into(text, &mut findings, &mut Vec::new());
        findings
    }

    /// Like [`DetectorSet::scan`], reusing the caller's buffers: `findings` is
    /// cleared and filled; `scratch` is working space.
    ///
    /// Overlaps between detectors are resolved greedily: the finding that starts
    /// first wins, then the longer one, then the one earlier in
    /// [`DetectorKind::ALL`] (a JWT inside a `token=` assignment is reported once).
    pub fn scan_into(
        &self,
        text: &[u8],
        findings: &mut Vec<Finding>,
        scratch: &mut Vec<Range<usize>>,
    ) {
        findings.clear();
        let profile = TextProfile::of(text);
        for kind in self.iter().filter(|kind| profile.may_hold(*kind)) {
            scratch.clear();
            kind.detector().find(text, scratch);
            findings.extend(scratch.drain(..).map(|range| Finding {
                detector: kind,
                range,
            }));
        }
        if findings.len() > 1 {
            findings.sort_by(|a, b| {
                a.range
                    .start
                    .cmp(&b.range.start)
                    .then(b.range.end.cmp(&a.range.end))
                    .then(a.detector.cmp(&b.detector))
            });
            let mut kept_end = 0usize;
            findings.retain(|f| {
                let keep = f.range.start >= kept_end;
                if keep {
                    kept_end = f.range.end;
                }
                keep
            });
        }
    }
}

impl FromIterator<DetectorKind> for DetectorSet {
    fn from_iter<I: IntoIterator<Item = DetectorKind>>(iter: I) -> Self {
        iter.into_iter().fold(Self::none(), Self::with)
    }
}

/// What one pass over a text says about which detectors can match in it.
///
/// Every detector needs its anchor in the text (`@` for an e-mail, the `J` of a
/// JWT's `eyJ`, an upper-case letter for an IBAN's country) or enough digits.
/// Most values in result sets (ids, names, hashes, dates) hold the anchors of
/// one or two detectors at most, and one pass costs less than nine searches:
/// a 32-character hex digest is scanned about four times faster.
///
/// The pass over every byte only ORs and counts, without a branch; the
/// longest run of digits, which only the payment-card check needs and only
/// for a text with 13 digits or more and neither space nor dash, is measured
/// then, by a second pass.
#[derive(Debug, Clone, Copy)]
struct TextProfile<'t> {
    text: &'t [u8],
    /// Union of the [`anchor_class`] bits of every byte.
    seen: u16,
    digits: usize,
}

const AT: u16 = 1;
const PLUS: u16 = 1 << 1;
const DASH: u16 = 1 << 2;
const DOT: u16 = 1 << 3;
const ASSIGN: u16 = 1 << 4;
const UPPER_A: u16 = 1 << 5;
const UPPER_J: u16 = 1 << 6;
const UPPER: u16 = 1 << 7;
const SPACE: u16 = 1 << 8;
const DIGIT: u16 = 1 << 9;

/// The anchor bits of `byte`, from a table: the profile reads one entry
/// per byte of every scanned value.
fn anchor_class(byte: u8) -> u16 {
    ANCHOR_CLASSES.get(usize::from(byte)).copied().unwrap_or(0)
}

/// [`anchor_class`] for every byte value.
// Indexes below 256 into a 256-entry array; `get_mut` is not usable in const.
#[allow(clippy::indexing_slicing)]
const ANCHOR_CLASSES: [u16; 256] = {
    let mut classes = [0u16; 256];
    let mut byte = 0;
    while byte < 256 {
        classes[byte] = match byte as u8 {
            b'@' => AT,
            b'+' => PLUS,
            b'-' => DASH,
            b'.' => DOT,
            b'=' | b':' => ASSIGN,
            b' ' => SPACE,
            b'0'..=b'9' => DIGIT,
            b'A' => UPPER_A | UPPER,
            b'J' => UPPER_J | UPPER,
            b'B'..=b'Z' => UPPER,
            _ => 0,
        };
        byte += 1;
    }
    classes
};

impl<'t> TextProfile<'t> {
    fn of(text: &'t [u8]) -> Self {
        let mut seen = 0;
        let mut digits = 0;
        for &byte in text {
            let class = anchor_class(byte);
            seen |= class;
            digits += usize::from(class == DIGIT);
        }
        TextProfile { text, seen, digits }
    }

    /// The longest run of ASCII digits in the text.
    fn longest_digit_run(&self) -> usize {
        self.text
            .split(|byte| !byte.is_ascii_digit())
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0)
    }

    fn has(&self, anchors: u16) -> bool {
        self.seen & anchors != 0
    }

    /// False only when `kind` cannot match: the conditions are each
    /// detector's own anchors, so skipping it never changes what is found.
    fn may_hold(&self, kind: DetectorKind) -> bool {
        match kind {
            // `-----BEGIN`
            DetectorKind::PrivateKey => self.has(DASH),
            // `eyJ`
            DetectorKind::Jwt => self.has(UPPER_J),
            // `AKIA` / `ASIA`
            DetectorKind::AwsAccessKey => self.has(UPPER_A),
            // `key=value`, `key: value`
            DetectorKind::SecretAssignment => self.has(ASSIGN),
            DetectorKind::Email => self.has(AT),
            // 13+ digits, in one run or in groups split by spaces or dashes.
            DetectorKind::PaymentCard => {
                self.digits >= 13 && (self.has(SPACE | DASH) || self.longest_digit_run() >= 13)
            }
            // An upper-case country code and two check digits.
            DetectorKind::Iban => self.has(UPPER) && self.digits >= 2,
            // `ddd-dd-dddd`
            DetectorKind::UsSsn => self.has(DASH) && self.digits >= 9,
            // `+…` or a NANP number whose line is split by `-` or `.`.
            DetectorKind::Phone => self.has(PLUS | DASH | DOT),
        }
    }
}

/// Every non-overlapping finding of every detector in `text`.
pub fn scan(text: &[u8]) -> Vec<Finding> {
    DetectorSet::all().scan(text)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Every corpus line of every detector, positive and negative.
    fn corpus_texts() -> Vec<String> {
        let corpora = [
            include_str!("../../testdata/mask/aws_access_key.positive.txt"),
            include_str!("../../testdata/mask/aws_access_key.negative.txt"),
            include_str!("../../testdata/mask/email.positive.txt"),
            include_str!("../../testdata/mask/email.negative.txt"),
            include_str!("../../testdata/mask/iban.positive.txt"),
            include_str!("../../testdata/mask/iban.negative.txt"),
            include_str!("../../testdata/mask/jwt.positive.txt"),
            include_str!("../../testdata/mask/jwt.negative.txt"),
            include_str!("../../testdata/mask/payment_card.positive.txt"),
            include_str!("../../testdata/mask/payment_card.negative.txt"),
            include_str!("../../testdata/mask/phone.positive.txt"),
            include_str!("../../testdata/mask/phone.negative.txt"),
            include_str!("../../testdata/mask/private_key.positive.txt"),
            include_str!("../../testdata/mask/private_key.negative.txt"),
            include_str!("../../testdata/mask/secret_assignment.positive.txt"),
            include_str!("../../testdata/mask/secret_assignment.negative.txt"),
            include_str!("../../testdata/mask/us_ssn.positive.txt"),
            include_str!("../../testdata/mask/us_ssn.negative.txt"),
        ];
        corpora
            .iter()
            .flat_map(|corpus| super::super::detectors::corpus::cases(corpus))
            .map(|case| case.text)
            .collect()
    }

    /// Texts of up to 39 bytes detectors care about, in any arrangement.
    fn generated_text() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        let alphabet = b"0123456789 -.+@=:AJKISBDEGaeyx()/_".to_vec();
        proptest::collection::vec(proptest::sample::select(alphabet), 0..40)
    }

    /// When `kind` matches `text`, the profile must not skip it; counts the
    /// matches per kind in `seen`.
    fn check_profile(text: &[u8], seen: &mut [usize; DetectorKind::COUNT]) -> Result<(), String> {
        let profile = TextProfile::of(text);
        for kind in DetectorKind::ALL {
            let mut found = Vec::new();
            kind.detector().find(text, &mut found);
            if !found.is_empty() {
                seen[kind.index()] += 1;
                if !profile.may_hold(kind) {
                    return Err(format!(
                        "{kind} matches {:?} but the profile skips it",
                        String::from_utf8_lossy(text)
                    ));
                }
            }
        }
        Ok(())
    }

    #[test]
    fn the_profile_skips_only_detectors_that_find_nothing() {
        let mut seen = [0usize; DetectorKind::COUNT];
        for text in corpus_texts() {
            check_profile(text.as_bytes(), &mut seen).unwrap();
        }
        let seen = std::cell::Cell::new(seen);
        let mut runner = proptest::test_runner::TestRunner::new(super::super::robustness::config(
            20_000,
            0x2545_F491_4F6C_DD1D,
        ));
        let outcome = runner.run(&generated_text(), |text| {
            let mut counts = seen.get();
            let checked = check_profile(&text, &mut counts);
            seen.set(counts);
            checked.map_err(proptest::test_runner::TestCaseError::fail)
        });
        if let Err(failure) = outcome {
            panic!("{failure}");
        }
        let seen = seen.get();
        assert!(seen.iter().all(|&n| n >= 40), "matches seen: {seen:?}");
    }

    /// The profile as one branching pass computed it (digits, the longest
    /// run of digits, the anchors seen): what [`TextProfile::may_hold`]
    /// answers must not change with how the profile is measured.
    fn reference_may_hold(text: &[u8], kind: DetectorKind) -> bool {
        let (mut seen, mut digits, mut run, mut longest) = (0u16, 0usize, 0usize, 0usize);
        for &byte in text {
            let class = anchor_class(byte);
            seen |= class;
            if class == DIGIT {
                run += 1;
                digits += 1;
                longest = longest.max(run);
            } else {
                run = 0;
            }
        }
        let has = |anchors: u16| seen & anchors != 0;
        match kind {
            DetectorKind::PrivateKey => has(DASH),
            DetectorKind::Jwt => has(UPPER_J),
            DetectorKind::AwsAccessKey => has(UPPER_A),
            DetectorKind::SecretAssignment => has(ASSIGN),
            DetectorKind::Email => has(AT),
            DetectorKind::PaymentCard => digits >= 13 && (longest >= 13 || has(SPACE | DASH)),
            DetectorKind::Iban => has(UPPER) && digits >= 2,
            DetectorKind::UsSsn => has(DASH) && digits >= 9,
            DetectorKind::Phone => has(PLUS | DASH | DOT),
        }
    }

    #[test]
    fn the_profile_answers_as_one_branching_pass_did() {
        // Digits weighted up, so that runs of 13 and more come often.
        let alphabet = b"00112233445566778899 -.+@=:AJKaex".to_vec();
        let texts = proptest::collection::vec(proptest::sample::select(alphabet), 0..60);
        let mut runner = proptest::test_runner::TestRunner::new(super::super::robustness::config(
            20_000,
            0x9E37_79B9_7F4A_7C15,
        ));
        let outcome = runner.run(&texts, |text| {
            let profile = TextProfile::of(&text);
            for kind in DetectorKind::ALL {
                proptest::prop_assert_eq!(
                    profile.may_hold(kind),
                    reference_may_hold(&text, kind),
                    "{} on {:?}",
                    kind,
                    String::from_utf8_lossy(&text)
                );
            }
            Ok(())
        });
        if let Err(failure) = outcome {
            panic!("{failure}");
        }
        let card = b"4111111111111111 and 12345678901 23";
        assert!(TextProfile::of(card).may_hold(DetectorKind::PaymentCard));
        assert!(!TextProfile::of(b"123456789012x4567890").may_hold(DetectorKind::PaymentCard));
    }

    #[test]
    fn a_hex_digest_needs_no_digit_heavy_detector() {
        let profile = TextProfile::of(b"5d41402abc4b2a76b9719d911017c592");
        for kind in [
            DetectorKind::PaymentCard,
            DetectorKind::Iban,
            DetectorKind::UsSsn,
            DetectorKind::Phone,
            DetectorKind::Email,
        ] {
            assert!(!profile.may_hold(kind), "{kind}");
        }
    }

    #[test]
    fn names_round_trip() {
        for kind in DetectorKind::ALL {
            assert_eq!(DetectorKind::from_name(kind.as_str()), Some(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert_eq!(DetectorKind::from_name("ssn"), None);
    }

    #[test]
    fn index_matches_position_in_all() {
        for (i, kind) in DetectorKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }

    #[test]
    fn overlapping_findings_keep_the_first_and_longest() {
        // The JWT is inside a `token=` assignment: both detectors match the same
        // bytes; one finding remains.
        let text = b"token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U done";
        let found = scan(text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].range.start, 6);
    }

    #[test]
    fn disabled_detectors_find_nothing() {
        let text = b"mail alice@example.com, card 4111 1111 1111 1111";
        let only_card = DetectorSet::only(DetectorKind::PaymentCard).scan(text);
        assert_eq!(only_card.len(), 1);
        assert_eq!(only_card[0].detector, DetectorKind::PaymentCard);
        assert!(DetectorSet::none().scan(text).is_empty());
    }

    #[test]
    fn counts_add_and_merge() {
        let mut a = DetectorCounts::default();
        a.add(DetectorKind::Email);
        a.add(DetectorKind::Email);
        let mut b = DetectorCounts::default();
        b.add(DetectorKind::Phone);
        b.over_cap = 1;
        a.merge(&b);
        assert_eq!(a.get(DetectorKind::Email), 2);
        assert_eq!(a.total(), 3);
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            vec![(DetectorKind::Email, 2), (DetectorKind::Phone, 1)]
        );
        assert!(!a.is_empty());
    }
}
