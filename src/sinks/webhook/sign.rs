//! Standard Webhooks signatures.
//!
//! `webhook-id` is the event id; `webhook-timestamp` is the *attempt's* time
//! (re-signed on every retry, since verifiers refuse timestamps older than
//! five minutes); `webhook-signature` is `v1,<base64 HMAC-SHA256 of
//! id.timestamp.body>`, one per configured secret (rotation), space-separated.

use crate::config::Secret;
use base64::Engine;
use hmac::Mac;

/// The three headers for one attempt at `now_s` (unix seconds).
pub fn headers(id: &str, body: &str, secrets: &[Secret], now_s: i64) -> Vec<(String, String)> {
    let ts = now_s.to_string();
    let mut out = vec![
        ("webhook-id".to_string(), id.to_string()),
        ("webhook-timestamp".to_string(), ts.clone()),
    ];
    let sigs: Vec<String> = secrets
        .iter()
        .filter_map(|s| sign(s, id, &ts, body))
        .collect();
    if !sigs.is_empty() {
        out.push(("webhook-signature".to_string(), sigs.join(" ")));
    }
    out
}

/// `v1,<base64>` for one `whsec_` secret.
pub fn sign(secret: &Secret, id: &str, ts: &str, body: &str) -> Option<String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.expose().strip_prefix("whsec_")?)
        .ok()?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    Some(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify_with_reference(
        secret: &str,
        h: &[(String, String)],
        body: &str,
    ) -> Result<(), String> {
        let mut map = http::HeaderMap::new();
        for (k, v) in h {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(body.as_bytes(), &map)
            .map_err(|e| format!("{e:?}"))
    }

    /// The specification's test vector.
    #[test]
    fn matches_the_spec_test_vector() {
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let sig = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    /// An independent implementation (the `standardwebhooks` crate) accepts
    /// what we send, with several secrets during rotation, at the time of a
    /// retry long after the event.
    #[test]
    fn an_independent_verifier_accepts_our_signatures() {
        let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let new = "whsec_c2FuZGJveC1vbmx5LW5vdC1hLXJlYWwtc2VjcmV0";
        let body = r#"{"id":"evt_1","type":"connection.status_changed"}"#;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let h = headers("evt_1", body, &[Secret::new(old), Secret::new(new)], now);
        assert_eq!(h[2].1.split(' ').count(), 2, "one signature per secret");
        assert_eq!(verify_with_reference(old, &h, body), Ok(()));
        assert_eq!(verify_with_reference(new, &h, body), Ok(()));
        assert!(
            verify_with_reference(old, &h, "{}").is_err(),
            "a changed body fails"
        );
        // A retry 20 minutes after the event is signed with the retry's time:
        // still valid. A signature made at the event's time would not be.
        let stale = headers("evt_1", body, &[Secret::new(old)], now - 1_200);
        assert!(verify_with_reference(old, &stale, body).is_err());
        let fresh = headers("evt_1", body, &[Secret::new(old)], now);
        assert_eq!(verify_with_reference(old, &fresh, body), Ok(()));
    }

    #[test]
    fn no_secret_means_no_signature_header() {
        let h = headers("evt_1", "{}", &[], 1);
        assert_eq!(h.len(), 2);
    }
}
