//! How a chat sink cuts its queue into messages, in the spirit of
//! Alertmanager's `group_wait`: a window opens at the oldest change waiting
//! for the sink and closes `group_wait` later; what arrived by then is one
//! message (at most [`MAX_GROUP`] events; the rest open the next window at
//! once). The next change opens the next window. So a storm is a few
//! messages, and a lone change arrives within `group_wait`.

use crate::model::UnixMs;
use std::time::Duration;

/// Events in one chat message at most (the message lists at most a few
/// names per line; this bounds the work and the request).
pub const MAX_GROUP: usize = 500;

/// `times` are the event times of the sink's due deliveries, oldest first.
/// `Ok(n)`: the first `n` go into a message now. `Err(t)`: the window
/// closes at `t`; nothing goes yet.
pub fn cut(times: &[UnixMs], now: UnixMs, group_wait: Duration) -> Result<usize, UnixMs> {
    let Some(&first) = times.first() else {
        return Ok(0);
    };
    let closes = first.saturating_add(group_wait.as_millis() as i64);
    if now < closes {
        return Err(closes);
    }
    Ok(times
        .iter()
        .take(MAX_GROUP)
        .take_while(|t| **t <= closes)
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(10);

    #[test]
    fn a_window_closes_group_wait_after_its_first_change() {
        assert_eq!(cut(&[], 0, W), Ok(0));
        assert_eq!(cut(&[1_000], 5_000, W), Err(11_000));
        assert_eq!(cut(&[1_000], 11_000, W), Ok(1));
        // Changes inside the window join it; a later one waits for the next.
        assert_eq!(cut(&[1_000, 4_000, 11_000, 11_001], 12_000, W), Ok(3));
        // A long-waiting queue (a slow receiver) still goes window by window.
        assert_eq!(cut(&[0, 20_000, 40_000], 100_000, W), Ok(1));
    }

    #[test]
    fn a_storm_is_cut_at_the_cap() {
        let times: Vec<UnixMs> = (0..1_200).collect();
        assert_eq!(cut(&times, 20_000, W), Ok(MAX_GROUP));
        assert_eq!(cut(&times[MAX_GROUP..], 20_000, W), Ok(MAX_GROUP));
    }
}
