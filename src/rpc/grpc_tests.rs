//! gRPC framing, timeouts and status encoding, without a network.

use super::{
    reply::{frame, status_trailers, trailer_frame},
    *,
};
use flate2::{Compression, write::GzEncoder};
use std::io::Write;

#[test]
fn timeouts() {
    assert_eq!(
        parse_timeout("1500m").ok(),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(parse_timeout("2S").ok(), Some(Duration::from_secs(2)));
    assert_eq!(parse_timeout("1H").ok(), Some(Duration::from_secs(3600)));
    assert_eq!(
        parse_timeout("99999999n").ok(),
        Some(Duration::from_nanos(99_999_999))
    );
    for bad in [
        "",
        "S",
        "5",
        "123456789S",
        "5 S",
        "5s",
        "-1S",
        "1.5S",
        "5 seconds",
    ] {
        assert!(parse_timeout(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn content_types() {
    let mode = |s: &str| GrpcMode::parse(s).map(|m| (m.flavor, m.codec, m.content_type));
    assert_eq!(
        mode("application/grpc"),
        Some((Flavor::Grpc, Codec::Proto, "application/grpc"))
    );
    assert_eq!(
        mode("application/grpc+json"),
        Some((Flavor::Grpc, Codec::Json, "application/grpc+json"))
    );
    assert_eq!(
        mode("application/grpc-web+proto"),
        Some((Flavor::Web, Codec::Proto, "application/grpc-web+proto"))
    );
    assert_eq!(mode("application/grpc-web-text"), None);
    assert_eq!(mode("application/grpc+thrift"), None);
}

#[test]
fn one_message_per_request() {
    let limit = 1024;
    let plain = frame(0, b"abc").freeze();
    assert_eq!(
        unframe(plain, None, limit).ok(),
        Some(Bytes::from_static(b"abc"))
    );
    let empty = frame(0, b"").freeze();
    assert_eq!(unframe(empty, None, limit).ok(), Some(Bytes::new()));
    let code = |body: &[u8], encoding: Option<&str>| {
        unframe(Bytes::copy_from_slice(body), encoding, limit)
            .err()
            .map(|e| e.code)
    };
    assert_eq!(code(b"", None), Some(Code::InvalidArgument));
    assert_eq!(code(&[0, 0, 0], None), Some(Code::InvalidArgument));
    assert_eq!(code(&[0, 0, 0, 0, 9, 1], None), Some(Code::InvalidArgument));
    assert_eq!(code(&[0x80, 0, 0, 0, 0], None), Some(Code::InvalidArgument));
    let mut two = frame(0, b"a");
    two.extend_from_slice(&frame(0, b"b"));
    assert_eq!(code(&two, None), Some(Code::InvalidArgument));
    assert_eq!(code(&[0, 0, 0, 8, 0], None), Some(Code::ResourceExhausted));
    // Compressed without grpc-encoding, and a gzip bomb.
    assert_eq!(code(&frame(1, b"x"), None), Some(Code::InvalidArgument));
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(&vec![0u8; 1 << 20]).ok();
    let bomb = encoder.finish().unwrap_or_default();
    assert_eq!(
        code(&frame(1, &bomb), Some("gzip")),
        Some(Code::ResourceExhausted)
    );
}

#[test]
fn messages_are_percent_encoded() {
    let error = RpcError::invalid("100% wrong:\n caf\u{e9}");
    let trailers = status_trailers(Some(&error));
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(b"3".as_ref())
    );
    assert_eq!(
        trailers.get("grpc-message").map(|v| v.as_bytes()),
        Some(b"100%25 wrong:%0A caf%C3%A9".as_ref())
    );
    let web = trailer_frame(&trailers);
    assert_eq!(web[0], 0x80);
    assert_eq!(
        &web[5..],
        b"grpc-status: 3\r\ngrpc-message: 100%25 wrong:%0A caf%C3%A9\r\n".as_ref()
    );
}
