use super::*;
use crate::masking::MaskingPolicy;

fn policy() -> MaskingPolicy {
    MaskingPolicy::from_json(include_bytes!("../../../../examples/postgres-masking.json")).unwrap()
}

fn run(type_oid: u32, binary: bool, value: &[u8]) -> Option<Vec<u8>> {
    let mut counts = ValueCounts::default();
    inspect(&policy(), type_oid, binary, value, &mut counts)
        .as_bytes()
        .map(<[u8]>::to_vec)
}

const CARD: &[u8] = b"4111111111111111";
const SSN: &[u8] = b"536-22-1234";
const EMAIL: &[u8] = b"eve@example.net";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A binary record of (type oid, value) fields.
fn record(fields: &[(u32, Option<&[u8]>)]) -> Vec<u8> {
    let mut out = (fields.len() as i32).to_be_bytes().to_vec();
    for (oid, value) in fields {
        out.extend_from_slice(&oid.to_be_bytes());
        push_length_prefixed(&mut out, *value);
    }
    out
}

/// A one-dimensional binary array of `element_type`.
fn array(element_type: u32, elements: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&element_type.to_be_bytes());
    out.extend_from_slice(&(elements.len() as i32).to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    for e in elements {
        push_length_prefixed(&mut out, Some(e));
    }
    out
}

#[test]
fn text_forms_of_every_type_are_scanned_in_place() {
    for (oid, value) in [
        (
            16_999u32,
            &b"(2,4111111111111111,536-22-1234,eve@example.net)"[..],
        ),
        (2249, b"(1,\"eve@example.net\")"),
        (1009, b"{plain,eve@example.net}"),
        (142, b"<a>4111111111111111</a>"),
        (3614, b"'536-22-1234':1 'eve@example.net':2"),
        (2287, b"{\"(1,536-22-1234)\"}"),
    ] {
        let out = run(oid, false, value).expect("stays a value");
        for secret in [CARD, SSN, EMAIL] {
            assert!(
                !contains(&out, secret),
                "{oid}: {}",
                String::from_utf8_lossy(&out)
            );
        }
        assert_ne!(out, value, "{oid}");
    }
}

#[test]
fn numbers_holding_a_finding_become_zero_in_either_format() {
    assert_eq!(run(1700, false, CARD).as_deref(), Some(&b"0"[..]));
    assert_eq!(run(20, false, CARD).as_deref(), Some(&b"0"[..]));
    assert_eq!(
        run(701, false, b"4111111111111111").as_deref(),
        Some(&b"0"[..])
    );
    let int8 = 4_111_111_111_111_111i64.to_be_bytes();
    assert_eq!(run(20, true, &int8).as_deref(), Some(&[0u8; 8][..]));
    let float8 = 4_111_111_111_111_111f64.to_be_bytes();
    assert_eq!(run(701, true, &float8).as_deref(), Some(&[0u8; 8][..]));
    // numeric 4111111111111111: base-10000 digits 4111 1111 1111 1111.
    let mut numeric = Vec::new();
    for v in [4u16, 3, 0, 0, 4111, 1111, 1111, 1111] {
        numeric.extend_from_slice(&v.to_be_bytes());
    }
    assert_eq!(
        numeric_digits(&numeric).as_deref(),
        Some("4111111111111111")
    );
    assert_eq!(
        run(1700, true, &numeric).as_deref(),
        Some(&NUMERIC_ZERO[..])
    );
    // Ordinary numbers pass.
    assert_eq!(
        run(20, true, &42i64.to_be_bytes()).as_deref(),
        Some(&42i64.to_be_bytes()[..])
    );
    assert_eq!(run(1700, false, b"12.50").as_deref(), Some(&b"12.50"[..]));
}

#[test]
fn numeric_binary_reads_fractions_and_signs() {
    // -0.0012: weight -1, digits [12], dscale 4.
    let mut numeric = Vec::new();
    for v in [1u16, 0xffff, 0x4000, 4, 12] {
        numeric.extend_from_slice(&v.to_be_bytes());
    }
    assert_eq!(numeric_digits(&numeric).as_deref(), Some("-0.0012"));
    assert_eq!(numeric_digits(&[0, 1]), None);
}

#[test]
fn bytea_is_decoded_scanned_and_encoded_again() {
    let hex: String = EMAIL.iter().map(|b| format!("{b:02x}")).collect();
    let text = format!("\\x{hex}");
    let out = run(17, false, text.as_bytes()).unwrap();
    assert!(out.starts_with(b"\\x"));
    let decoded = decode_hex(&out[2..]).unwrap();
    assert!(!contains(&decoded, EMAIL));
    let out = run(17, true, EMAIL).unwrap();
    assert!(!contains(&out, EMAIL));
}

#[test]
fn binary_records_and_arrays_are_taken_apart_by_their_types() {
    let int8 = 4_111_111_111_111_111i64.to_be_bytes();
    let value = record(&[
        (23, Some(&7i32.to_be_bytes())),
        (25, Some(SSN)),
        (20, Some(&int8)),
        (25, None),
    ]);
    let out = run(16_999, true, &value).unwrap();
    assert!(!contains(&out, SSN));
    assert!(!contains(&out, &int8));
    // Still a record of four fields with the same types.
    assert_eq!(&out[..4], &4i32.to_be_bytes());
    let inner = record(&[(25, Some(EMAIL))]);
    let rows = array(2249, &[&inner, &inner]);
    let out = run(2287, true, &rows).unwrap();
    assert!(!contains(&out, EMAIL));
    let cards = array(1700, &[b"\0\0\0\0\0\0\0\0"]);
    assert_eq!(run(1231, true, &cards).unwrap(), cards);
}

#[test]
fn ranges_tsvectors_and_unknown_binary_values_with_a_finding_become_null() {
    let int8 = 4_111_111_111_111_111i64.to_be_bytes();
    let mut range = vec![0x02u8]; // lower inclusive
    for bound in [&7i64.to_be_bytes()[..], &int8] {
        push_length_prefixed(&mut range, Some(bound));
    }
    assert_eq!(run(3926, true, &range), None);
    let mut tsvector = 1i32.to_be_bytes().to_vec();
    tsvector.extend_from_slice(SSN);
    tsvector.extend_from_slice(&[0, 0, 0]);
    assert_eq!(run(3614, true, &tsvector), None);
    // An enum label (binary: its text) of a type the masker does not know.
    assert_eq!(run(16_999, true, EMAIL), None);
    assert_eq!(run(16_999, true, b"plain").as_deref(), Some(&b"plain"[..]));
}

#[test]
fn values_nested_too_deep_cannot_be_read() {
    let mut value = record(&[(25, Some(SSN))]);
    for _ in 0..=MAX_NESTING {
        value = record(&[(2249, Some(&value))]);
    }
    // The innermost record is out of reach: it becomes NULL.
    let out = run(2249, true, &value).unwrap();
    assert!(!contains(&out, SSN));
    assert!(out.ends_with(&(-1i32).to_be_bytes()));
}

#[test]
fn malformed_binary_containers_become_null() {
    assert_eq!(run(1009, true, b"\0\0\0\x01"), None);
    assert_eq!(run(2249, true, b"\0\0\0\x05"), None);
    assert_eq!(run(3926, true, b"\x02\0\0\0\x08"), None);
}
