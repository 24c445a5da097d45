//! The classifier on arbitrary answers: any status, `Retry-After` header and
//! body bytes, with or without the sync check. It must never panic, and
//! online must come without an error and everything else with one.

#![no_main]

use connwatch::classify::{classify, parse_retry_after, Answer, Rules};
use connwatch::config::{Expect, SyncExpect};
use connwatch::model::Outcome;
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fuzz_target!(|data: &[u8]| {
    // Layout: 2 bytes status, 1 byte flags, 1 byte Retry-After length, then
    // the Retry-After header, then the body.
    if data.len() < 4 {
        return;
    }
    let status = u16::from_le_bytes([data[0], data[1]]);
    let flags = data[2];
    let ra_len = usize::from(data[3]).min(data.len() - 4);
    let (ra, body) = data[4..].split_at(ra_len);
    let retry_after = (flags & 1 != 0).then(|| String::from_utf8_lossy(ra).into_owned());
    let mut expect = Expect::default();
    if flags & 2 != 0 {
        expect.sync = Some(SyncExpect {
            status: "/sync/status".into(),
            finished_at: "/sync/finished_at".into(),
            max_age: Some(Duration::from_secs(60)),
            failed: vec!["failed".into()],
        });
    }
    if flags & 4 != 0 {
        expect.json_pointer = None;
    }
    if flags & 8 != 0 {
        expect.status = Some(vec![200, 404, status]);
    }
    let rules = Rules {
        expect: &expect,
        degraded_after: (flags & 16 != 0).then(|| Duration::from_millis(u64::from(flags))),
        max_body: 65536,
    };
    let answer = Answer {
        status,
        retry_after: retry_after.clone(),
        body: body.to_vec(),
        truncated: flags & 32 != 0,
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
    let c = classify(
        &Ok(answer),
        Duration::from_millis(u64::from(flags) * 7),
        rules,
        now,
    );
    assert_eq!(c.outcome == Outcome::Online, c.error.is_none(), "{c:?}");
    if status == 429 {
        assert_eq!(c.outcome, Outcome::RateLimited);
    }
    if let Some(ra) = retry_after {
        let _ = parse_retry_after(&ra, now);
        let _ = parse_retry_after(&ra, SystemTime::UNIX_EPOCH);
    }
});
