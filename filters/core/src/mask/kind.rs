//! The detector trait and the fixed list of detectors: the vocabulary every
//! other masking module speaks. It depends on nothing else in `mask`.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Finds one kind of sensitive value in text.
///
/// Implementations are hand-written scanners: each starts from a cheap anchor
/// (a rare byte such as `@`, a literal such as `AKIA`, a digit run) and only then
/// validates the candidate (checksums, prefixes, lengths). Ranges they report
/// start and end on ASCII bytes, so masking never splits a UTF-8 character.
pub trait Detector: Sync {
    /// Which detector this is; its name appears in records.
    fn kind(&self) -> DetectorKind;

    /// Appends the byte ranges of every match in `text` to `out`, in ascending
    /// order. Ranges reported by one detector never overlap each other.
    fn find(&self, text: &[u8], out: &mut Vec<Range<usize>>);
}

/// The detectors gatehouse ships. The serde name is the stable name used in
/// configuration and records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// PEM private key blocks, `-----BEGIN … PRIVATE KEY-----` through `END`.
    PrivateKey,
    /// JSON Web Tokens: three base64url parts, header is JSON with `alg`.
    Jwt,
    /// AWS access key ids (`AKIA`/`ASIA` + 16 upper-case alphanumerics).
    AwsAccessKey,
    /// `password=…`, `api_key: …` and similar with a high-entropy value; only
    /// the value is reported.
    SecretAssignment,
    /// E-mail addresses.
    Email,
    /// Payment card numbers (known IIN prefix and length, Luhn-valid).
    PaymentCard,
    /// IBANs (per-country length, mod-97 checksum).
    Iban,
    /// US social security numbers written `ddd-dd-dddd`, SSA validity rules.
    UsSsn,
    /// Phone numbers: E.164 `+…` forms and separated NANP forms.
    Phone,
}

impl DetectorKind {
    /// Every detector, in priority order: when two findings start at the same
    /// byte and have the same length, the earlier kind here wins.
    pub const ALL: [DetectorKind; 9] = [
        DetectorKind::PrivateKey,
        DetectorKind::Jwt,
        DetectorKind::AwsAccessKey,
        DetectorKind::SecretAssignment,
        DetectorKind::Email,
        DetectorKind::PaymentCard,
        DetectorKind::Iban,
        DetectorKind::UsSsn,
        DetectorKind::Phone,
    ];

    /// Number of detectors.
    pub const COUNT: usize = Self::ALL.len();

    /// The stable name used in configuration and records.
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorKind::PrivateKey => "private_key",
            DetectorKind::Jwt => "jwt",
            DetectorKind::AwsAccessKey => "aws_access_key",
            DetectorKind::SecretAssignment => "secret_assignment",
            DetectorKind::Email => "email",
            DetectorKind::PaymentCard => "payment_card",
            DetectorKind::Iban => "iban",
            DetectorKind::UsSsn => "us_ssn",
            DetectorKind::Phone => "phone",
        }
    }

    /// Looks a detector up by its stable name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Position in [`DetectorKind::ALL`]; used to index per-detector tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether a match of this kind is a credential rather than personal data.
    /// Credentials are never partially revealed.
    pub fn is_secret(self) -> bool {
        matches!(
            self,
            DetectorKind::PrivateKey | DetectorKind::Jwt | DetectorKind::SecretAssignment
        )
    }
}

impl std::fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
