//! Which shard probes a connection: Prometheus's `hashmod`, so another
//! tool (a relabel rule, a script) computes the same split.
//!
//! `shard_of(key, n)` = the last 8 bytes of the MD5 digest of `key`, read
//! as a big-endian unsigned 64-bit integer, modulo `n`; shard `i/n` takes
//! the connections whose value is `i - 1`. The key is the connection's id,
//! or, for a connection with `depends_on`, the id at the root of its chain,
//! so that a parent and its children share one shard (suppression needs the
//! parent's health where the child is probed).
//!
//! Worked example: MD5("sap-prod") = `e362922fcb2a744d bfc856aeaffea05e`;
//! the last 8 bytes `bfc856aeaffea05e` = 13819390764863365214, and
//! 13819390764863365214 mod 3 = 2, so with `n = 3` "sap-prod" is probed by
//! shard `3/3`.

use crate::config::{Connection, Shard};
use md5::{Digest, Md5};
use std::collections::HashMap;
use std::sync::Arc;

/// `hashmod` of `key` with modulus `n` (0-based).
pub fn shard_of(key: &str, n: u32) -> u32 {
    let sum = Md5::digest(key.as_bytes());
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&sum[8..16]);
    (u64::from_be_bytes(tail) % u64::from(n.max(1))) as u32
}

/// The connections `shard` takes, in their order.
pub fn take(connections: Vec<Arc<Connection>>, shard: Shard) -> Vec<Arc<Connection>> {
    if shard.count <= 1 {
        return connections;
    }
    let parent: HashMap<&str, &str> = connections
        .iter()
        .filter_map(|c| Some((c.id.as_str(), c.depends_on.as_deref()?)))
        .collect();
    let root = |id: &str| -> String {
        let mut cur = id;
        // Bounded: validation refuses cycles, but a key must not hang.
        for _ in 0..64 {
            match parent.get(cur) {
                Some(p) => cur = p,
                None => break,
            }
        }
        cur.to_string()
    };
    let keep: Vec<bool> = connections
        .iter()
        .map(|c| shard_of(&root(&c.id), shard.count) == shard.index - 1)
        .collect();
    connections
        .into_iter()
        .zip(keep)
        .filter_map(|(c, k)| k.then_some(c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worked_example_holds() {
        assert_eq!(shard_of("sap-prod", 3), 2);
        // Cross-checked with Python's hashlib: the same three values.
        assert_eq!(shard_of("c0000", 3), 2);
        assert_eq!(shard_of("c0001", 3), 2);
        assert_eq!(shard_of("anything", 1), 0);
    }

    #[test]
    fn shards_cover_every_connection_once_and_keep_chains_together() {
        let text = (0..300)
            .map(|i| {
                let dep = if i % 10 == 1 {
                    format!("depends_on = \"c{:03}\"\n", i - 1)
                } else {
                    String::new()
                };
                format!("[[connection]]\nid = \"c{i:03}\"\nurl = \"http://127.0.0.1:1/\"\n{dep}")
            })
            .collect::<String>();
        let config =
            crate::config::Config::parse(std::path::Path::new("/tmp/x.toml"), &text, &|_| None)
                .unwrap();
        let mut seen = std::collections::HashMap::new();
        for index in 1..=3 {
            let got = take(config.connections.clone(), Shard { index, count: 3 });
            assert!(got.len() > 60, "shard {index} takes {}", got.len());
            for c in got {
                assert!(seen.insert(c.id.clone(), index).is_none(), "{} twice", c.id);
            }
        }
        assert_eq!(seen.len(), 300);
        for i in (1..300).step_by(10) {
            assert_eq!(seen[&format!("c{i:03}")], seen[&format!("c{:03}", i - 1)]);
        }
    }
}
