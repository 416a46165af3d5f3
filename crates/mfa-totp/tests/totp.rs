//! Integration tests: RFC test vectors, verification rules, base32,
//! otpauth URIs and QR round trips.

use mfa_totp::{
    Algorithm, DEFAULT_WINDOW, MAX_ACCOUNT_BYTES, MAX_ISSUER_BYTES, MAX_LOOK_AHEAD, OtpauthUri,
    Secret, TotpError, TotpParams, VerifyError, hotp, is_well_formed_code, issuer_for_environment,
    qr_png, qr_svg, qr_terminal, time_step, totp, totp_at_step, verify_hotp, verify_totp,
};

const SEED_SHA1: &[u8] = b"12345678901234567890";
const SEED_SHA256: &[u8] = b"12345678901234567890123456789012";
const SEED_SHA512: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

fn secret(bytes: &[u8]) -> Secret {
    Secret::from_bytes(bytes.to_vec())
}

fn params(algorithm: Algorithm, digits: u32, period: u64) -> TotpParams {
    TotpParams::new(algorithm, digits, period).unwrap()
}

// ---------------------------------------------------------------- RFC vectors

#[test]
fn rfc4226_appendix_d() {
    let expected = [
        "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871",
        "520489",
    ];
    let s = secret(SEED_SHA1);
    let p = TotpParams::default();
    for (counter, want) in (0u64..).zip(expected) {
        assert_eq!(hotp(&s, counter, &p), want, "counter {counter}");
    }
}

#[test]
fn rfc6238_appendix_b() {
    let times = [
        59u64,
        1111111109,
        1111111111,
        1234567890,
        2000000000,
        20000000000,
    ];
    let table: [(Algorithm, &[u8], [&str; 6]); 3] = [
        (
            Algorithm::Sha1,
            SEED_SHA1,
            [
                "94287082", "07081804", "14050471", "89005924", "69279037", "65353130",
            ],
        ),
        (
            Algorithm::Sha256,
            SEED_SHA256,
            [
                "46119246", "68084774", "67062674", "91819424", "90698825", "77737706",
            ],
        ),
        (
            Algorithm::Sha512,
            SEED_SHA512,
            [
                "90693936", "25091201", "99943326", "93441116", "38618901", "47863826",
            ],
        ),
    ];
    for (algorithm, seed, codes) in table {
        let p = params(algorithm, 8, 30);
        let s = secret(seed);
        for (time, want) in times.into_iter().zip(codes) {
            assert_eq!(totp(&s, time, &p), want, "{algorithm} at {time}");
            assert_eq!(totp_at_step(&s, time_step(time, 30), &p), want);
        }
    }
}

#[test]
fn time_step_boundaries() {
    assert_eq!(time_step(0, 30), 0);
    assert_eq!(time_step(29, 30), 0);
    assert_eq!(time_step(30, 30), 1);
    assert_eq!(time_step(59, 30), 1);
    assert_eq!(time_step(1111111109, 30), 0x23523EC);
}

// ------------------------------------------------------------------- params

#[test]
fn params_defaults_and_validation() {
    let d = TotpParams::default();
    assert_eq!((d.algorithm, d.digits, d.period), (Algorithm::Sha1, 6, 30));
    assert_eq!(Algorithm::default(), Algorithm::Sha1);
    assert!(TotpParams::new(Algorithm::Sha256, 8, 60).is_ok());
    for digits in [0, 5, 7, 9, 10] {
        assert!(matches!(
            TotpParams::new(Algorithm::Sha1, digits, 30),
            Err(TotpError::InvalidParams(_))
        ));
    }
    assert!(matches!(
        TotpParams::new(Algorithm::Sha1, 6, 0),
        Err(TotpError::InvalidParams(_))
    ));
    assert!(TotpParams::new(Algorithm::Sha1, 6, 1).is_ok());
}

#[test]
fn algorithm_names() {
    for a in [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512] {
        assert_eq!(a.as_str().parse::<Algorithm>(), Ok(a));
        assert_eq!(a.as_str().to_lowercase().parse::<Algorithm>(), Ok(a));
    }
    assert_eq!(Algorithm::Sha256.as_str(), "SHA256");
    assert_eq!("sHa512".parse::<Algorithm>(), Ok(Algorithm::Sha512));
    assert!("MD5".parse::<Algorithm>().is_err());
    assert!("".parse::<Algorithm>().is_err());
}

// -------------------------------------------------------------- verify HOTP

/// RFC 4226 appendix D, counters 0 to 9.
const RFC4226_CODES: [&str; 10] = [
    "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871",
    "520489",
];

#[test]
fn hotp_verify_moves_through_the_counters_one_code_at_a_time() {
    let s = secret(SEED_SHA1);
    let p = TotpParams::default();
    let mut next = 0;
    for (counter, code) in (0u64..).zip(RFC4226_CODES) {
        assert_eq!(verify_hotp(&s, code, &p, next, 0), Ok(counter));
        next = counter + 1;
        // Once accepted, a code is never accepted again.
        assert_eq!(
            verify_hotp(&s, code, &p, next, 3),
            Err(VerifyError::Mismatch)
        );
    }
}

#[test]
fn hotp_verify_looks_ahead_as_far_as_asked_and_no_further() {
    let s = secret(SEED_SHA1);
    let p = TotpParams::default();
    // Three presses without a login: counter 5's code, expected counter 2.
    assert_eq!(verify_hotp(&s, RFC4226_CODES[5], &p, 2, 3), Ok(5));
    assert_eq!(
        verify_hotp(&s, RFC4226_CODES[5], &p, 2, 2),
        Err(VerifyError::Mismatch)
    );
    // A code from before the expected counter is not looked for.
    assert_eq!(
        verify_hotp(&s, RFC4226_CODES[1], &p, 2, 5),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        verify_hotp(&s, "12345", &p, 0, 5),
        Err(VerifyError::Malformed)
    );
}

#[test]
fn hotp_verify_caps_the_look_ahead_and_the_counter() {
    let s = secret(SEED_SHA1);
    let p = TotpParams::default();
    let at_cap = hotp(&s, MAX_LOOK_AHEAD, &p);
    let beyond = hotp(&s, MAX_LOOK_AHEAD + 1, &p);
    assert_eq!(
        verify_hotp(&s, &at_cap, &p, 0, u64::MAX),
        Ok(MAX_LOOK_AHEAD)
    );
    // The code past the cap is the code of no counter within it (this seed).
    assert!((0..=MAX_LOOK_AHEAD).all(|c| hotp(&s, c, &p) != beyond));
    assert_eq!(
        verify_hotp(&s, &beyond, &p, 0, u64::MAX),
        Err(VerifyError::Mismatch)
    );
    // The last counter there is: the window ends there rather than wrapping.
    let last = hotp(&s, u64::MAX, &p);
    assert_eq!(verify_hotp(&s, &last, &p, u64::MAX - 1, 5), Ok(u64::MAX));
}

#[test]
fn hotp_verify_returns_the_lowest_matching_counter() {
    let s = secret(SEED_SHA1);
    let p = TotpParams::default();
    // Six digits repeat: counters 2386 and 2394 of the RFC seed share a code.
    assert_eq!(hotp(&s, 2386, &p), "709847");
    assert_eq!(hotp(&s, 2394, &p), "709847");
    assert_eq!(verify_hotp(&s, "709847", &p, 2380, 20), Ok(2386));
    assert_eq!(verify_hotp(&s, "709847", &p, 2387, 20), Ok(2394));
}

// ------------------------------------------------------------------- verify

const NOW: u64 = 1_700_000_000;

fn code_at_offset(s: &Secret, p: &TotpParams, offset: i64) -> (u64, String) {
    let step = time_step(NOW, p.period).checked_add_signed(offset).unwrap();
    (step, totp_at_step(s, step, p))
}

#[test]
fn verify_accepts_window_and_returns_step() {
    let s = secret(SEED_SHA1);
    let p = TotpParams::default();
    for offset in [-1, 0, 1] {
        let (step, code) = code_at_offset(&s, &p, offset);
        assert_eq!(
            verify_totp(&s, &code, NOW, &p, DEFAULT_WINDOW, None),
            Ok(step),
            "offset {offset}"
        );
    }
    for offset in [-2, 2] {
        let (_, code) = code_at_offset(&s, &p, offset);
        assert_eq!(
            verify_totp(&s, &code, NOW, &p, DEFAULT_WINDOW, None),
            Err(VerifyError::Mismatch),
            "offset {offset}"
        );
    }
}

#[test]
fn verify_window_zero_and_two() {
    let s = secret(SEED_SHA1);
    let p = TotpParams::default();
    let (_, previous) = code_at_offset(&s, &p, -1);
    assert_eq!(
        verify_totp(&s, &previous, NOW, &p, 0, None),
        Err(VerifyError::Mismatch)
    );
    let (step, two_ahead) = code_at_offset(&s, &p, 2);
    assert_eq!(verify_totp(&s, &two_ahead, NOW, &p, 2, None), Ok(step));
}

#[test]
fn verify_refuses_replay_and_accepts_later_step() {
    let s = secret(SEED_SHA1);
    let p = TotpParams::default();
    let (step, code) = code_at_offset(&s, &p, 0);
    let used = verify_totp(&s, &code, NOW, &p, DEFAULT_WINDOW, None).unwrap();
    assert_eq!(used, step);

    assert_eq!(
        verify_totp(&s, &code, NOW, &p, DEFAULT_WINDOW, Some(used)),
        Err(VerifyError::Replayed { step })
    );
    let (earlier_step, earlier) = code_at_offset(&s, &p, -1);
    assert_eq!(
        verify_totp(&s, &earlier, NOW, &p, DEFAULT_WINDOW, Some(used)),
        Err(VerifyError::Replayed { step: earlier_step })
    );
    let (later_step, later) = code_at_offset(&s, &p, 1);
    assert_eq!(
        verify_totp(&s, &later, NOW, &p, DEFAULT_WINDOW, Some(used)),
        Ok(later_step)
    );
    // A wrong code is a mismatch, not a replay, even with a last-used step.
    let window = [earlier, code, later];
    let wrong = ["000000", "111111", "222222", "333333"]
        .into_iter()
        .find(|c| !window.iter().any(|w| w == c))
        .unwrap();
    assert_eq!(
        verify_totp(&s, wrong, NOW, &p, DEFAULT_WINDOW, Some(used)),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn verify_rejects_malformed() {
    let s = secret(SEED_SHA1);
    let p = TotpParams::default();
    for bad in [
        "12345",
        "1234567",
        " 123456",
        "123456 ",
        "123 456",
        "１２３４５６",
        "١٢٣٤٥٦",
        "12345a",
        "+12345",
        "-12345",
        "",
    ] {
        assert_eq!(
            verify_totp(&s, bad, NOW, &p, DEFAULT_WINDOW, None),
            Err(VerifyError::Malformed),
            "{bad:?}"
        );
    }
}

#[test]
fn verify_eight_digits() {
    let s = secret(SEED_SHA256);
    let p = params(Algorithm::Sha256, 8, 30);
    // RFC 6238 row: SHA256 at 1111111109 is 68084774.
    assert_eq!(
        verify_totp(&s, "68084774", 1111111109, &p, DEFAULT_WINDOW, None),
        Ok(time_step(1111111109, 30))
    );
    assert_eq!(
        verify_totp(&s, "084774", 1111111109, &p, DEFAULT_WINDOW, None),
        Err(VerifyError::Malformed)
    );
    let six = TotpParams::default();
    assert_eq!(
        verify_totp(&s, "68084774", 1111111109, &six, DEFAULT_WINDOW, None),
        Err(VerifyError::Malformed)
    );
}

#[test]
fn well_formed_code() {
    assert!(is_well_formed_code("000000", 6));
    assert!(is_well_formed_code("12345678", 8));
    assert!(!is_well_formed_code("12345678", 6));
    assert!(!is_well_formed_code("１２３４５６", 6));
    assert!(!is_well_formed_code("١٢٣٤٥٦", 6));
    assert!(!is_well_formed_code("", 0));
}

// ------------------------------------------------------------------- base32

#[test]
fn base32_round_trip() {
    let s = secret(SEED_SHA1);
    assert_eq!(s.to_base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    assert_eq!(Secret::from_base32(&s.to_base32()), Ok(s));
    for len in 1..=40 {
        let s = Secret::from_bytes((0..len).collect());
        let text = s.to_base32();
        assert!(!text.contains('='), "{text}");
        assert_eq!(text, text.to_uppercase());
        assert_eq!(Secret::from_base32(&text), Ok(s));
    }
}

#[test]
fn base32_is_tolerant_of_human_formatting() {
    let want = Secret::from_bytes(b"foobar".to_vec());
    assert_eq!(want.to_base32(), "MZXW6YTBOI");
    for input in [
        "mzxw6ytboi",
        "mzxw 6ytb oi",
        "MZXW-6YTB-OI",
        "MZXW6YTBOI======",
        " mzxw6ytboi== ",
    ] {
        assert_eq!(Secret::from_base32(input).as_ref(), Ok(&want), "{input:?}");
    }
}

#[test]
fn base32_rejects_invalid() {
    for input in [
        "",
        "   ",
        "====",
        "MZXW1YTBOI",
        "MZXW6YTB!I",
        "MZXW6YTBO",
        "ÄBCD",
    ] {
        assert_eq!(
            Secret::from_base32(input),
            Err(TotpError::InvalidSecret),
            "{input:?}"
        );
    }
}

#[test]
fn generated_secrets() {
    let a = Secret::generate();
    let b = Secret::generate();
    assert_eq!(Secret::DEFAULT_LEN, 20);
    assert_eq!(a.as_bytes().len(), Secret::DEFAULT_LEN);
    assert_eq!(b.as_bytes().len(), Secret::DEFAULT_LEN);
    assert_ne!(a, b);
    assert_eq!(a.to_base32().len(), 32);
}

#[test]
fn secret_debug_is_redacted() {
    let s = secret(SEED_SHA1);
    assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    let uri = example_uri();
    let debug = format!("{uri:?}");
    assert!(!debug.contains(&uri.secret.to_base32()), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
}

// ------------------------------------------------------------------ otpauth

fn example_uri() -> OtpauthUri {
    OtpauthUri {
        issuer: "Acme".to_owned(),
        account: "alice@example.com".to_owned(),
        secret: secret(SEED_SHA1),
        params: TotpParams::default(),
    }
}

#[test]
fn otpauth_exact_format() {
    assert_eq!(
        example_uri().to_uri(),
        "otpauth://totp/Acme:alice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
         &issuer=Acme&algorithm=SHA1&digits=6&period=30"
    );
}

#[test]
fn otpauth_encodes_space_and_colon() {
    let uri = OtpauthUri {
        issuer: "Acme: Corp (sandbox)".to_owned(),
        account: "bob smith:x".to_owned(),
        secret: secret(SEED_SHA256),
        params: params(Algorithm::Sha256, 8, 60),
    };
    let text = uri.to_uri();
    assert!(
        text.starts_with("otpauth://totp/Acme%3A%20Corp%20%28sandbox%29:bob%20smith%3Ax?"),
        "{text}"
    );
    assert!(
        text.contains("&issuer=Acme%3A%20Corp%20%28sandbox%29&"),
        "{text}"
    );
    assert!(
        text.ends_with("&algorithm=SHA256&digits=8&period=60"),
        "{text}"
    );
    assert!(!text.contains(' '));
    assert_eq!(OtpauthUri::parse(&text), Ok(uri));
}

#[test]
fn otpauth_round_trip() {
    let cases = [
        example_uri(),
        OtpauthUri {
            issuer: issuer_for_environment("Acme", "sandbox"),
            account: "ünïcode+tag@example.com".to_owned(),
            secret: Secret::generate(),
            params: params(Algorithm::Sha512, 8, 15),
        },
        OtpauthUri {
            issuer: String::new(),
            account: "a:b".to_owned(),
            secret: Secret::generate(),
            params: TotpParams::default(),
        },
    ];
    for uri in cases {
        assert_eq!(
            OtpauthUri::parse(&uri.to_uri()).as_ref(),
            Ok(&uri),
            "{}",
            uri.to_uri()
        );
    }
}

#[test]
fn otpauth_parse_is_tolerant() {
    let want = example_uri();
    let secret = want.secret.to_base32();
    for text in [
        // Defaults for algorithm, digits and period.
        format!("otpauth://totp/Acme:alice%40example.com?secret={secret}&issuer=Acme"),
        // Issuer only in the label; literal '@'.
        format!("otpauth://totp/Acme:alice@example.com?secret={secret}"),
        // Issuer only in the query.
        format!("otpauth://totp/alice%40example.com?secret={secret}&issuer=Acme"),
        // Encoded separator and the optional space before the account.
        format!("otpauth://totp/Acme%3A%20alice%40example.com?issuer=Acme&secret={secret}"),
        format!(
            "otpauth://totp/Acme:%20alice@example.com?secret={}",
            secret.to_lowercase()
        ),
        // Scheme/type case, unknown parameters, fragment.
        format!("OTPAUTH://TOTP/Acme:alice@example.com?secret={secret}&image=x&algorithm=sha1#f"),
    ] {
        assert_eq!(OtpauthUri::parse(&text).as_ref(), Ok(&want), "{text}");
    }
    let plus = format!("otpauth://totp/Acme%20Co:bob?secret={secret}&issuer=Acme+Co");
    assert_eq!(
        OtpauthUri::parse(&plus).map(|u| u.issuer),
        Ok("Acme Co".to_owned())
    );
}

#[test]
fn otpauth_parse_errors() {
    let secret = secret(SEED_SHA1).to_base32();
    let invalid_uri = [
        format!("otpauth://hotp/Acme:alice?secret={secret}&counter=0"),
        format!("https://totp/Acme:alice?secret={secret}"),
        "otpauth://totp/Acme:alice?issuer=Acme".to_owned(),
        "otpauth://totp/Acme:alice".to_owned(),
        format!("otpauth://totp/Acme:alice?secret={secret}&issuer=Evil"),
        format!("otpauth://totp/Acme:?secret={secret}"),
        format!("otpauth://totp?secret={secret}"),
        format!("otpauth://totp/Acme:alice?secret={secret}&secret=AAAA"),
        format!("otpauth://totp/Acme:%FF?secret={secret}"),
        format!("otpauth://totp/Acme:al%ZZice?secret={secret}"),
        format!("otpauth://totp/Acme:alice%4?secret={secret}"),
        String::new(),
    ];
    for text in invalid_uri {
        let err = OtpauthUri::parse(&text);
        assert!(
            matches!(err, Err(TotpError::InvalidUri(_))),
            "{text}: {err:?}"
        );
        if let Err(e) = err {
            assert!(!e.to_string().contains(&secret), "{e}");
        }
    }
    assert_eq!(
        OtpauthUri::parse("otpauth://totp/Acme:alice?secret=not*base32"),
        Err(TotpError::InvalidSecret)
    );
    assert_eq!(
        OtpauthUri::parse("otpauth://totp/Acme:alice?secret="),
        Err(TotpError::InvalidSecret)
    );
    for bad_params in [
        "&digits=7",
        "&digits=six",
        "&period=0",
        "&period=-30",
        "&period=3601",
        "&period=18446744073709551615",
        "&algorithm=MD5",
    ] {
        let text = format!("otpauth://totp/Acme:alice?secret={secret}{bad_params}");
        assert!(
            matches!(OtpauthUri::parse(&text), Err(TotpError::InvalidParams(_))),
            "{text}"
        );
    }
}

#[test]
fn issuer_environment_suffix() {
    assert_eq!(issuer_for_environment("Acme", "production"), "Acme");
    assert_eq!(issuer_for_environment("Acme", "PRODUCTION"), "Acme");
    assert_eq!(issuer_for_environment("Acme", "Production"), "Acme");
    assert_eq!(issuer_for_environment("Acme", ""), "Acme");
    assert_eq!(issuer_for_environment("Acme", "sandbox"), "Acme (sandbox)");
    assert_eq!(issuer_for_environment("Acme", "staging"), "Acme (staging)");
    assert_eq!(issuer_for_environment("Acme", "prod"), "Acme (prod)");
}

// ----------------------------------------------------------------------- QR

fn decode_luma(image: image::GrayImage) -> String {
    let mut prepared = rqrr::PreparedImage::prepare(image);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "expected exactly one QR code");
    grids[0].decode().unwrap().1
}

#[test]
fn qr_png_decodes_to_uri() {
    let uri = example_uri().to_uri();
    let png = qr_png(&uri).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let image = image::load_from_memory(&png).unwrap().to_luma8();
    assert!(image.width() >= 200 && image.height() >= 200);
    assert_eq!(decode_luma(image), uri);
}

#[test]
fn qr_svg_document() {
    let svg = qr_svg(&example_uri().to_uri()).unwrap();
    assert!(svg.contains("<svg"));
    assert!(svg.ends_with("</svg>"));
    assert!(
        !svg.contains("GEZDGNBV"),
        "the secret must only be in the modules"
    );
}

#[test]
fn qr_terminal_decodes_to_uri() {
    let uri = example_uri().to_uri();
    let text = qr_terminal(&uri).unwrap();
    let rows: Vec<Vec<char>> = text.lines().map(|l| l.chars().collect()).collect();
    assert!(rows.len() > 10);
    let width = rows[0].len();
    assert!(rows.iter().all(|r| r.len() == width));
    // Quiet zone: the glyphs are the light modules, so the border is full blocks.
    assert!(rows[0].iter().all(|&c| c == '█'));

    // Glyphs are light on a dark terminal: ink = light module, blank = dark.
    const SCALE: usize = 4;
    let prepared =
        rqrr::PreparedImage::prepare_from_bitmap(width * SCALE, rows.len() * 2 * SCALE, |x, y| {
            let cell = rows[y / (2 * SCALE)][x / SCALE];
            let top = (y / SCALE).is_multiple_of(2);
            let light = match cell {
                '█' => true,
                '▀' => top,
                '▄' => !top,
                _ => false,
            };
            !light
        });
    let mut prepared = prepared;
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1);
    assert_eq!(grids[0].decode().unwrap().1, uri);
}

#[test]
fn qr_rejects_oversized_data() {
    let huge = "x".repeat(10_000);
    assert!(matches!(qr_png(&huge), Err(TotpError::Qr(_))));
    assert!(matches!(qr_svg(&huge), Err(TotpError::Qr(_))));
    assert!(matches!(qr_terminal(&huge), Err(TotpError::Qr(_))));
}

#[test]
fn the_longest_issuer_and_account_fit_in_a_qr_code() {
    // Every byte percent-encoded: multi-byte characters in the issuer,
    // reserved ASCII in the account.
    let uri = OtpauthUri {
        issuer: "\u{1f600}".repeat(MAX_ISSUER_BYTES / 4),
        account: "+".repeat(MAX_ACCOUNT_BYTES),
        secret: secret(SEED_SHA512),
        params: params(Algorithm::Sha512, 8, mfa_totp::MAX_PERIOD_SECS),
    }
    .to_uri();
    assert_eq!(uri.len(), 2135);
    assert!(qr_svg(&uri).is_ok());
    let png = qr_png(&uri).unwrap();
    // Drawn at 4 px a module at least, however many modules it has.
    let image = image::load_from_memory(&png).unwrap().to_luma8();
    let code = qrcode::QrCode::new(uri.as_bytes()).unwrap();
    let modules = u32::try_from(code.width()).unwrap() + 8; // and the quiet zone
    assert!(
        image.width() >= modules * mfa_totp::MIN_MODULE_PX,
        "{}",
        image.width()
    );
    assert_eq!(decode_luma(image), uri);
}
