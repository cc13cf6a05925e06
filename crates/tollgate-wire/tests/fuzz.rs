//! Property tests: no parser or framer panics on any input, and the relay scanner forwards
//! every byte exactly once whatever the read boundaries. Case count: env `PROPTEST_CASES`
//! (default 512).

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use tollgate_wire::backend;
use tollgate_wire::frame::read_message;
use tollgate_wire::frontend;
use tollgate_wire::scanner::{Chunk, Scanner};
use tollgate_wire::startup::read_startup;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    ProptestConfig::with_cases(cases)
}

/// One framed message: (tag, whole frame bytes).
fn message() -> impl Strategy<Value = (u8, Vec<u8>)> {
    (
        prop::sample::select(b"DZTCEdNSp".to_vec()),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(tag, body)| {
            let mut buf = BytesMut::new();
            buf.put_u8(tag);
            buf.put_i32(body.len() as i32 + 4);
            buf.put_slice(&body);
            (tag, buf.to_vec())
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parsers_never_panic_on_random_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = backend::parse_ready_for_query(&body);
        let _ = backend::parse_parameter_status(&body);
        let _ = backend::parse_backend_key_data(&body);
        let _ = backend::parse_error_fields(&body);
        let _ = backend::parse_authentication(&body);
        let _ = frontend::parse_query(&body);
        let _ = frontend::parse_parse(&body);
        let _ = frontend::parse_bind_names(&body);
        let _ = frontend::parse_close(&body);
        let _ = frontend::parse_describe(&body);
        let _ = frontend::parse_password(&body);
        let _ = frontend::parse_sasl_initial_response(&body);
    }

    /// Query and Parse text is bytes in the client's encoding: any bytes but NUL come back
    /// exactly as sent, and structure (terminators, counts) is still checked.
    #[test]
    fn query_and_parse_keep_any_non_nul_bytes(
        name in prop::collection::vec(1u8..=255, 0..40),
        sql in prop::collection::vec(1u8..=255, 0..300),
    ) {
        let mut q = sql.clone();
        q.push(0);
        prop_assert_eq!(frontend::parse_query(&q), Ok(&sql[..]));
        prop_assert!(frontend::parse_query(&sql).is_err());
        let mut p = name.clone();
        p.push(0);
        p.extend_from_slice(&sql);
        p.push(0);
        p.extend_from_slice(&0i16.to_be_bytes());
        let parsed = frontend::parse_parse(&p).expect("well-formed Parse");
        prop_assert_eq!(parsed.name, &name[..]);
        prop_assert_eq!(parsed.query, &sql[..]);
        p.pop();
        prop_assert!(frontend::parse_parse(&p).is_err());
    }

    #[test]
    fn read_message_and_startup_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        max_len in 0usize..1024,
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(m)) = read_message(&mut buf, max_len) {
            prop_assert!(m.body.len() + 5 <= max_len);
        }
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = read_startup(&mut buf) {}
        let mut scanner = Scanner::new();
        let mut rest = &bytes[..];
        while let Ok(Chunk::Whole { len: n, .. } | Chunk::Pass { n, .. }) =
            scanner.next(rest, |t| t % 2 == 0, max_len)
        {
            prop_assert!(n > 0 && n <= rest.len());
            rest = &rest[n..];
        }
    }

    #[test]
    fn scanner_reassembles_any_split(
        messages in prop::collection::vec(message(), 0..20),
        inspected in prop::collection::vec(any::<bool>(), 9),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
    ) {
        let tags = b"DZTCEdNSp";
        let inspect = |t: u8| {
            tags.iter().position(|&x| x == t).and_then(|i| inspected.get(i).copied()) == Some(true)
        };
        let input: Vec<u8> = messages.iter().flat_map(|(_, f)| f.clone()).collect();
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
        cuts.push(input.len());
        cuts.sort_unstable();

        let mut scanner = Scanner::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut output = Vec::new();
        let mut wholes = Vec::new();
        let mut started_tags = Vec::new();
        let mut start = 0;
        for end in cuts {
            pending.extend_from_slice(&input[start..end]);
            start = end;
            loop {
                match scanner.next(&pending, inspect, 1024).expect("valid stream") {
                    Chunk::Whole { tag, len } => {
                        prop_assert_eq!(pending[0], tag);
                        wholes.push(pending[..len].to_vec());
                        started_tags.push(tag);
                        output.extend(pending.drain(..len));
                    }
                    Chunk::Pass { n, tag } => {
                        prop_assert!(n > 0);
                        if let Some(t) = tag {
                            prop_assert!(!inspect(t));
                            started_tags.push(t);
                        }
                        output.extend(pending.drain(..n));
                    }
                    Chunk::NeedMore => break,
                }
            }
        }
        prop_assert!(pending.is_empty());
        prop_assert!(!scanner.mid_message());
        prop_assert_eq!(&output, &input);
        let expected_wholes: Vec<Vec<u8>> = messages
            .iter()
            .filter(|(t, _)| inspect(*t))
            .map(|(_, f)| f.clone())
            .collect();
        prop_assert_eq!(wholes, expected_wholes);
        let all_tags: Vec<u8> = messages.iter().map(|(t, _)| *t).collect();
        prop_assert_eq!(started_tags, all_tags);
    }
}
