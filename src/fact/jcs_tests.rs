use super::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/jcs");
const VECTORS: [&str; 6] = [
    "arrays",
    "french",
    "structures",
    "unicode",
    "values",
    "weird",
];

fn read(dir: &str, name: &str) -> Vec<u8> {
    let path = format!("{DATA}/{dir}/{name}.json");
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn lossy(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.chars().take(60).collect()
}

/// The error `check_canonical` gives, which must be NotCanonical.
fn not_canonical(input: &[u8]) -> (usize, String) {
    match check_canonical(input) {
        Err(JcsError::NotCanonical { position, reason }) => (position, reason),
        other => panic!("{:?}: expected NotCanonical, got {other:?}", lossy(input)),
    }
}

/// The error `check_canonical` and `canonicalize` give, which must be Invalid.
fn invalid_at(input: &[u8]) -> (usize, String) {
    let found = match check_canonical(input) {
        Err(JcsError::Invalid { position, reason }) => (position, reason),
        other => panic!("{:?}: expected Invalid, got {other:?}", lossy(input)),
    };
    let again = canonicalize(input).err();
    assert_eq!(again, Some(invalid(found.0, found.1.clone())));
    found
}

/// Checks that the structural walk, the byte comparison against `canonicalize` and
/// `check_canonical` all name the same first difference; returns it.
fn located(input: &[u8]) -> (usize, String) {
    let canon = match canonicalize(input) {
        Ok(canon) => canon,
        Err(e) => panic!("{:?}: cannot canonicalize: {e}", lossy(input)),
    };
    let Some(byte_diff) = first_mismatch(input, &canon) else {
        panic!("{:?} is already canonical", lossy(input));
    };
    let walked = parse(input).ok().and_then(|doc| locate(&doc, input));
    let Some((walk_pos, walk_reason)) = walked else {
        panic!("{:?}: the walk found no difference", lossy(input));
    };
    assert_eq!(walk_pos, byte_diff, "walk vs bytes for {:?}", lossy(input));
    let (position, reason) = not_canonical(input);
    assert_eq!((position, &reason), (byte_diff, &walk_reason));
    (position, reason)
}

fn assert_nc(input: &str, position: usize, reason: &str) {
    assert_eq!(
        located(input.as_bytes()),
        (position, reason.to_string()),
        "input {input:?}"
    );
}

fn assert_invalid(input: &[u8], position: usize, reason: &str) {
    assert_eq!(
        invalid_at(input),
        (position, reason.to_string()),
        "input {:?}",
        lossy(input)
    );
}

fn assert_canonical(input: &str) {
    assert_eq!(check_canonical(input.as_bytes()), Ok(()), "input {input:?}");
    assert_eq!(
        canonicalize(input.as_bytes()).ok().as_deref(),
        Some(input.as_bytes())
    );
}

#[test]
fn rfc8785_vectors_canonicalize_to_their_outputs() {
    for name in VECTORS {
        let (input, output) = (read("input", name), read("output", name));
        assert_eq!(canonicalize(&input).ok(), Some(output.clone()), "{name}");
        assert_eq!(
            canonicalize(&output).ok(),
            Some(output.clone()),
            "{name} twice"
        );
        assert_eq!(check_canonical(&output), Ok(()), "{name}");
    }
}

#[test]
fn rfc8785_vector_inputs_are_rejected_at_their_first_difference() {
    for name in VECTORS {
        let (input, output) = (read("input", name), read("output", name));
        assert_ne!(input, output, "{name}");
        let first = input.iter().zip(&output).position(|(a, b)| a != b);
        let expected = first.unwrap_or(input.len().min(output.len()));
        let (position, reason) = located(&input);
        assert_eq!(position, expected, "{name}: {reason}");
    }
}

/// `input` without whitespace outside strings.
fn compact(input: &[u8]) -> Vec<u8> {
    let (mut in_string, mut escaped) = (false, false);
    let mut out = Vec::new();
    for &b in input {
        if in_string || !b.is_ascii_whitespace() {
            out.push(b);
        }
        (in_string, escaped) = match (in_string, escaped, b) {
            (true, false, b'\\') => (true, true),
            (true, false, b'"') | (false, _, b'"') => (!in_string, false),
            _ => (in_string, false),
        };
    }
    out
}

#[test]
fn rfc8785_vector_reasons() {
    for name in VECTORS {
        assert_eq!(
            located(&read("input", name)).1,
            "whitespace is not allowed",
            "{name}"
        );
    }
    let compacted = |name| {
        let input = compact(&read("input", name));
        match input == read("output", name) {
            true => (0, "canonical once compacted".to_string()),
            false => located(&input),
        }
    };
    let sorted = |a: &str, b: &str| format!("object keys must be sorted: \"{a}\" before \"{b}\"");
    assert_eq!(compacted("arrays"), (6, sorted("1", "d")));
    assert_eq!(
        compacted("french"),
        (0, "canonical once compacted".to_string())
    );
    assert_eq!(compacted("structures"), (2, sorted("", "1")));
    let unicode = "expected \"\u{30a}\" but found \"\\u030a\"";
    assert_eq!(compacted("unicode"), (26, unicode.to_string()));
    assert_eq!(compacted("values"), (2, sorted("literals", "numbers")));
    assert_eq!(compacted("weird"), (3, sorted("\\n", "\u{20ac}")));
}

#[test]
fn whitespace_is_reported_where_it_starts() {
    assert_nc("{\"a\": 1}", 5, "whitespace is not allowed");
    assert_nc(" 1", 0, "whitespace is not allowed");
    assert_nc("1\n", 1, "whitespace is not allowed");
    assert_nc("[1 ]", 2, "whitespace is not allowed");
    assert_nc("[1,\t2]", 3, "whitespace is not allowed");
    assert_nc("{\"a\" :1}", 4, "whitespace is not allowed");
    assert_nc("{ }", 1, "whitespace is not allowed");
    assert_canonical("\" a b \"");
}

#[test]
fn object_keys_must_be_sorted_by_utf16_code_units() {
    assert_nc(
        "{\"b\":1,\"a\":2}",
        2,
        "object keys must be sorted: \"a\" before \"b\"",
    );
    assert_nc(
        "{\"a\":{\"d\":1,\"c\":2}}",
        7,
        "object keys must be sorted: \"c\" before \"d\"",
    );
    assert_nc(
        "{\"ab\":1,\"a\":2}",
        3,
        "object keys must be sorted: \"a\" before \"ab\"",
    );
    // U+10000 is D800 DC00 in UTF-16 and so sorts before U+FB33, though its UTF-8 sorts after.
    assert_canonical("{\"\u{10000}\":1,\"\u{FB33}\":2}");
    assert_nc(
        "{\"\u{FB33}\":2,\"\u{10000}\":1}",
        2,
        "object keys must be sorted: \"\u{10000}\" before \"\u{FB33}\"",
    );
    assert_canonical("{\"\":0,\"A\":1,\"a\":2,\"\u{e9}\":3}");
    let long = format!("{{\"{}b\":1,\"{}a\":2}}", "k".repeat(30), "k".repeat(30));
    let (position, reason) = located(long.as_bytes());
    assert_eq!(position, 32);
    assert_eq!(
        reason,
        format!(
            "object keys must be sorted: \"{0}…\" before \"{0}…\"",
            "k".repeat(20)
        )
    );
}

#[test]
fn a_misspelled_key_that_is_also_misplaced_names_the_spelling() {
    assert_nc(
        "{\"x\\u0041b\":1,\"xAa\":2}",
        3,
        "expected \"A\" but found \"\\u0041\"",
    );
}

#[test]
fn duplicate_keys_are_not_canonical() {
    let dup = |input: &str| not_canonical(input.as_bytes());
    assert_eq!(
        dup("{\"a\":1,\"a\":2}"),
        (7, "duplicate key \"a\"".to_string())
    );
    assert_eq!(
        dup("{\"a\":1,\"b\":{\"c\":1,\"c\":1},\"b\":3}"),
        (18, "duplicate key \"c\"".to_string())
    );
    assert_eq!(
        dup("{\"a\":1,\"a\":{\"c\":1,\"c\":1}}"),
        (7, "duplicate key \"a\"".to_string())
    );
    assert_eq!(
        dup("{\"\\n\":1,\"\\u000a\":2}"),
        (8, "duplicate key \"\\n\"".to_string())
    );
    // An earlier difference wins; a later one loses to the duplicate.
    assert_eq!(dup("{ \"a\":1,\"a\":2}").0, 1);
    assert_eq!(dup("{\"a\":1,\"a\":2 }").0, 7);
    let err = canonicalize(b"{\"a\":1,\"a\":2}").err();
    assert_eq!(
        err,
        Some(JcsError::NotCanonical {
            position: 7,
            reason: "duplicate key \"a\"".into()
        })
    );
}

#[test]
fn numbers_must_use_ecmascript_spelling() {
    assert_nc("1.0", 1, "number must be written 1");
    assert_nc("1e2", 1, "number must be written 100");
    assert_nc("-0", 0, "number must be written 0");
    assert_nc("-0.0", 0, "number must be written 0");
    assert_nc("1E+21", 1, "number must be written 1e+21");
    assert_nc("1e21", 2, "number must be written 1e+21");
    assert_nc("1E21", 1, "number must be written 1e+21");
    assert_nc("1E-7", 1, "number must be written 1e-7");
    assert_nc("[4.50,1]", 4, "number must be written 4.5");
    assert_nc("0.1e1", 0, "number must be written 1");
    assert_nc(
        "12345678901234567890",
        17,
        "number must be written 12345678901234567000",
    );
    assert_nc(
        "9007199254740993",
        15,
        "number must be written 9007199254740992",
    );
    assert_nc("1e-400", 0, "number must be written 0");
    assert_nc(
        "100000000000000000000000",
        1,
        "number must be written 1e+23",
    );
    for ok in [
        "0",
        "1",
        "-1",
        "100",
        "1e+21",
        "1e-7",
        "0.000001",
        "-1.5",
        "5e-324",
        "1.7976931348623157e+308",
    ] {
        assert_canonical(ok);
    }
    assert_canonical("123456789012345680000");
}

#[test]
fn numbers_beyond_f64_and_bad_spellings_are_invalid() {
    assert_invalid(b"1e400", 0, "number is too large for a 64-bit float");
    assert_invalid(b"[-1.8e308]", 1, "number is too large for a 64-bit float");
    assert_invalid(b"01", 0, "leading zeros are not allowed");
    assert_invalid(b"1.", 2, "expected a digit but found end of input");
    assert_invalid(b"-", 1, "expected a digit but found end of input");
    assert_invalid(b"1e+", 3, "expected a digit but found end of input");
    assert_invalid(b".5", 0, "expected a JSON value but found '.'");
    assert_invalid(b"+1", 0, "expected a JSON value but found '+'");
    assert_invalid(b"NaN", 0, "expected a JSON value but found 'N'");
}

#[test]
fn strings_escape_only_what_rfc8785_escapes() {
    assert_nc("\"\\u0041\"", 1, "expected \"A\" but found \"\\u0041\"");
    assert_nc("\"a\\/b\"", 2, "expected \"/\" but found \"\\/\"");
    assert_nc(
        "\"\\u001F\"",
        6,
        "expected \"\\u001f\" but found \"\\u001F\"",
    );
    assert_nc("\"\\u000a\"", 2, "expected \"\\n\" but found \"\\u000a\"");
    assert_nc(
        "\"\\u00e9\"",
        1,
        "expected \"\u{e9}\" but found \"\\u00e9\"",
    );
    assert_nc(
        "\"\\ud83d\\ude02\"",
        1,
        "expected \"\u{1F602}\" but found \"\\ud83d\\ude02\"",
    );
    assert_nc(
        "\"\\u007f\"",
        1,
        "expected \"\u{7f}\" but found \"\\u007f\"",
    );
    assert_nc("\"\\u0022\"", 2, "expected \"\\\"\" but found \"\\u0022\"");
    for ok in [
        "\"\\u001f\"",
        "\"\\u0000\"",
        "\"\\b\\t\\n\\f\\r\"",
        "\"\\\"\\\\\"",
        "\"/\u{e9}\u{1F602}\u{7f}\"",
    ] {
        assert_canonical(ok);
    }
}

#[test]
fn broken_strings_are_invalid() {
    assert_invalid(b"\"\\ud800\"", 1, "lone surrogate \\ud800");
    assert_invalid(b"\"\\udc00\"", 1, "lone surrogate \\udc00");
    assert_invalid(b"\"\\ud800\\u0041\"", 1, "lone surrogate \\ud800");
    assert_invalid(b"\"\\ud800x\"", 1, "lone surrogate \\ud800");
    assert_invalid(b"\"ab\xff\"", 3, "invalid UTF-8 in string");
    assert_invalid(b"\"\xc3\"", 1, "invalid UTF-8 in string");
    assert_invalid(b"\"\xc0\xaf\"", 1, "invalid UTF-8 in string");
    assert_invalid(b"\"\xed\xa0\x80\"", 1, "invalid UTF-8 in string");
    assert_invalid(b"\xff", 0, "expected a JSON value but found byte 0xff");
    assert_invalid(
        b"\xef\xbb\xbf1",
        0,
        "expected a JSON value but found byte 0xef",
    );
    assert_invalid(b"\"a\nb\"", 2, "control byte 0x0a must be escaped");
    assert_invalid(b"\"abc", 4, "unterminated string");
    assert_invalid(b"\"abc\\", 5, "unterminated string");
    assert_invalid(b"\"\\x\"", 1, "invalid escape \\x");
    assert_invalid(b"\"\\u12G4\"", 5, "expected 4 hex digits after \\u");
    assert_invalid(b"\"\\u12", 5, "expected 4 hex digits after \\u");
}

#[test]
fn syntax_errors_and_trailing_data_are_invalid() {
    assert_invalid(b"", 0, "empty input");
    assert_invalid(b"  \n", 3, "expected a JSON value but found end of input");
    assert_invalid(b"{}x", 2, "expected end of input but found 'x'");
    assert_invalid(b"1 2", 2, "expected end of input but found '2'");
    assert_invalid(b"[]]", 2, "expected end of input but found ']'");
    assert_invalid(b"[1,]", 3, "expected a JSON value but found ']'");
    assert_invalid(b"[1", 2, "expected ',' or ']' but found end of input");
    assert_invalid(b"{\"a\"}", 4, "expected ':' but found '}'");
    assert_invalid(b"{\"a\":1,}", 7, "expected a string key but found '}'");
    assert_invalid(b"{'a':1}", 1, "expected a string key but found '''");
    assert_invalid(
        b"{\"a\":1 \"b\":2}",
        7,
        "expected ',' or '}' but found '\"'",
    );
    assert_invalid(b"tru", 0, "expected a JSON value but found 't'");
    assert_invalid(b"nul", 0, "expected a JSON value but found 'n'");
    // A syntax error is reported even when non-canonical text comes first.
    assert_invalid(b"{ \"a\":1,}", 8, "expected a string key but found '}'");
}

#[test]
fn nesting_is_limited_without_recursing_deeply() {
    let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
    assert_canonical(&nested(MAX_DEPTH));
    assert_invalid(
        nested(MAX_DEPTH + 1).as_bytes(),
        MAX_DEPTH,
        "nesting deeper than 64 levels",
    );
    assert_invalid(
        "[".repeat(100_000).as_bytes(),
        MAX_DEPTH,
        "nesting deeper than 64 levels",
    );
    let objects = "{\"a\":".repeat(100_000);
    assert_invalid(
        objects.as_bytes(),
        5 * MAX_DEPTH,
        "nesting deeper than 64 levels",
    );
    let big = vec![b'['; 4 << 20];
    assert_invalid(&big, MAX_DEPTH, "nesting deeper than 64 levels");
}

#[test]
fn hostile_sizes_stay_linear() {
    let digits = vec![b'9'; 4 << 20];
    assert_invalid(&digits, 0, "number is too large for a 64-bit float");
    let mut tiny = b"0.".to_vec();
    tiny.extend(std::iter::repeat_n(b'0', 4 << 20));
    tiny.push(b'1');
    assert_eq!(
        not_canonical(&tiny),
        (1, "number must be written 0".to_string())
    );
    let string = format!("\"{}\"", "\u{e9}x".repeat(1 << 20));
    assert_canonical(&string);
    let escapes = format!("\"{}\"", "\\u00e9".repeat(1 << 19));
    assert_eq!(not_canonical(escapes.as_bytes()).0, 1);
    let many: String = (0..200_000).map(|i| format!("\"k{i:06}\":{i},")).collect();
    let object = format!("{{{}\"z\":0}}", many);
    assert_canonical(&object);
    let reversed: String = (0..200_000)
        .rev()
        .map(|i| format!("\"k{i:06}\":{i},"))
        .collect();
    let (position, reason) = not_canonical(format!("{{{reversed}\"z\":0}}").as_bytes());
    assert_eq!(
        (position, reason.as_str()),
        (
            3,
            "object keys must be sorted: \"k000000\" before \"k199999\""
        )
    );
    let array = format!("[{}0]", "0,".repeat(1 << 20));
    assert_canonical(&array);
}

#[test]
fn canonical_documents_pass() {
    assert_canonical("{}");
    assert_canonical("[]");
    assert_canonical("null");
    assert_canonical("true");
    assert_canonical("\"\"");
    assert_canonical("{\"a\":[1,2.5,-3e-7,{\"b\":null}],\"c\":\"\\n\u{e9}\",\"d\":false}");
    assert_canonical("{\"fact\":{\"id\":\"x-1\",\"value\":1e+21},\"ts\":1700000000000}");
}

#[test]
fn errors_display_position_and_reason() {
    let err = check_canonical(b"{\"b\":1,\"a\":2}")
        .err()
        .map(|e| e.to_string());
    let want = "object_json is not in canonical form (RFC 8785) at byte 2: \
                object keys must be sorted: \"a\" before \"b\"";
    assert_eq!(err.as_deref(), Some(want));
    let err = check_canonical(b"").err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("object_json is not valid JSON at byte 0: empty input")
    );
}

/// A small deterministic generator of JSON texts mixing canonical and non-canonical spellings.
struct Gen(u64);

impl Gen {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options
            .get(self.next(options.len()))
            .copied()
            .unwrap_or_default()
    }

    fn ws(&mut self, out: &mut String) {
        if self.next(12) == 0 {
            out.push_str(self.pick(&[" ", "\n", "\t", "\r\n  "]));
        }
    }

    fn string(&mut self, out: &mut String) {
        const UNITS: [&str; 20] = [
            "a",
            "b",
            "A",
            "z",
            "\u{e9}",
            "\u{20ac}",
            "\u{1F602}",
            "\u{FB33}",
            "\u{10000}",
            "\\n",
            "\\u000a",
            "\\u001F",
            "\\u001f",
            "\\/",
            "\\\"",
            "\\\\",
            "\\u0041",
            "\\ud83d\\ude02",
            "\\t",
            "\u{7f}",
        ];
        out.push('"');
        for _ in 0..self.next(4) {
            out.push_str(self.pick(&UNITS));
        }
        out.push('"');
    }

    fn value(&mut self, depth: usize, out: &mut String) {
        const NUMBERS: [&str; 16] = [
            "0",
            "-0",
            "1",
            "1.0",
            "1e2",
            "1E+2",
            "0.5",
            "5e-1",
            "1e21",
            "1e+21",
            "-1.5e-7",
            "4.50",
            "1e-27",
            "333333333.33333329",
            "100",
            "123456789012345678901",
        ];
        match self.next(if depth > 3 { 3 } else { 5 }) {
            0 => out.push_str(self.pick(&["true", "false", "null"])),
            1 => out.push_str(self.pick(&NUMBERS)),
            2 => self.string(out),
            3 => self.list(depth, out, false),
            _ => self.list(depth, out, true),
        }
    }

    fn list(&mut self, depth: usize, out: &mut String, object: bool) {
        out.push(if object { '{' } else { '[' });
        for n in 0..self.next(4) {
            if n > 0 {
                self.ws(out);
                out.push(',');
            }
            self.ws(out);
            if object {
                self.string(out);
                self.ws(out);
                out.push(':');
                self.ws(out);
            }
            self.value(depth + 1, out);
        }
        self.ws(out);
        out.push(if object { '}' } else { ']' });
    }
}

#[test]
fn generated_documents_agree_with_byte_comparison() {
    let mut generator = Gen(0x9E37_79B9_7F4A_7C15);
    let (mut canonical, mut different, mut duplicates) = (0, 0, 0);
    for _ in 0..20_000 {
        let mut text = String::new();
        generator.ws(&mut text);
        generator.value(0, &mut text);
        generator.ws(&mut text);
        let input = text.as_bytes();
        let Ok(doc) = parse(input) else {
            panic!("generated text does not parse: {text:?}");
        };
        let canon = doc.serialize();
        match (doc.duplicate_error(), first_mismatch(input, &canon)) {
            (Some(dup), diff) => {
                duplicates += 1;
                let got = check_canonical(input).err();
                match diff.zip(locate(&doc, input)) {
                    Some((at, found)) if at < dup_position(&dup) => {
                        assert_eq!(found.0, at, "{text:?}");
                        assert_eq!(
                            got,
                            Some(JcsError::NotCanonical {
                                position: at,
                                reason: found.1
                            })
                        );
                    }
                    _ => assert_eq!(got, Some(dup), "{text:?}"),
                }
            }
            (None, None) => {
                canonical += 1;
                assert_eq!(check_canonical(input), Ok(()), "{text:?}");
            }
            (None, Some(_)) => {
                different += 1;
                located(input);
                assert_eq!(check_canonical(&canon), Ok(()), "{text:?}");
            }
        }
    }
    assert!(
        canonical > 1000 && different > 1000 && duplicates > 100,
        "{canonical} {different} {duplicates}"
    );
}

fn dup_position(err: &JcsError) -> usize {
    match err {
        JcsError::Invalid { position, .. } | JcsError::NotCanonical { position, .. } => *position,
    }
}

#[test]
fn mutated_documents_never_panic_and_stay_consistent() {
    const BYTES: &[u8] = b" \n\"\\{}[]:,0123456789.eE+-ntfalsue\x01\x7f\xc3\xa9\xed\xff";
    let mut generator = Gen(0x0123_4567_89AB_CDEF);
    let mut seen = [0; 4];
    for _ in 0..20_000 {
        let mut text = String::new();
        generator.value(0, &mut text);
        let mut input = text.into_bytes();
        for _ in 0..1 + generator.next(3) {
            let at = generator.next(input.len() + 1);
            let byte = BYTES
                .get(generator.next(BYTES.len()))
                .copied()
                .unwrap_or(b' ');
            match generator.next(3) {
                0 if at < input.len() => drop(input.remove(at)),
                1 if at < input.len() => input.get_mut(at).into_iter().for_each(|b| *b = byte),
                _ => input.insert(at, byte),
            }
        }
        let checked = check_canonical(&input);
        let kind = match &checked {
            Ok(()) => 0,
            Err(JcsError::NotCanonical { reason, .. }) if reason.starts_with("duplicate") => 1,
            Err(JcsError::NotCanonical { .. }) => 2,
            Err(JcsError::Invalid { .. }) => 3,
        };
        seen[kind] += 1;
        match canonicalize(&input) {
            Ok(canon) if canon == input => assert_eq!(checked, Ok(()), "{:?}", lossy(&input)),
            Ok(canon) => {
                let at = first_mismatch(&input, &canon);
                assert!(
                    matches!(checked, Err(JcsError::NotCanonical { position, .. }) if Some(position) == at)
                );
                let walked = parse(&input)
                    .ok()
                    .and_then(|doc| locate(&doc, &input))
                    .map(|f| f.0);
                assert_eq!(walked, at, "{:?}", lossy(&input));
            }
            Err(JcsError::Invalid { .. }) => assert_eq!(checked.err(), canonicalize(&input).err()),
            Err(dup) => assert!(checked.is_err() && dup_position(&dup) < input.len()),
        }
    }
    let [ok, _duplicate, not_canonical, invalid] = seen;
    assert!(ok > 500 && not_canonical > 500 && invalid > 500, "{seen:?}");
}
