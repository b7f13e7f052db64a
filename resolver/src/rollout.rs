//! Staged rollouts: which devices take a channel's candidate release.
//!
//! Membership is a pure function of the rollout, the device's key and the percent, so
//! every origin instance and the CDN's viewer-request function compute the same answer.
//! It is sticky (a device keeps its answer while the percent stays) and monotone
//! (raising the percent only adds devices): a device's position in a rollout is fixed,
//! and it is in while its position is below the percent.

use sha2::{Digest, Sha256};

/// Hex digits of a rollout id.
pub const ROLLOUT_ID_LEN: usize = 8;

/// Positions a rollout spreads devices over: a percent is a multiple of 100 of them.
const POSITIONS: u32 = 10_000;

/// A rollout's name in cache keys and in the CDN function's state: the first
/// [`ROLLOUT_ID_LEN`] hex digits of the SHA-256 of `<app>/<channel>/<version>` (app and
/// channel in lowercase). A halted and resumed rollout of the same release keeps its id,
/// and with it its devices.
pub fn rollout_id(app: &str, channel: &str, version: &str) -> String {
    let name = format!(
        "{}/{}/{version}",
        app.to_ascii_lowercase(),
        channel.to_ascii_lowercase()
    );
    hex::encode(&Sha256::digest(name.as_bytes())[..ROLLOUT_ID_LEN / 2])
}

/// The device's position in rollout `id`, below 10,000: the first four bytes of the
/// SHA-256 of `<id>/<device key>`, big-endian, modulo 10,000. Each rollout orders the
/// devices differently, so the first devices of one are not those of every other.
pub fn rollout_position(id: &str, device_key: &str) -> u32 {
    let digest = Sha256::digest(format!("{id}/{device_key}").as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % POSITIONS
}

/// Whether the device with `device_key` takes the candidate of rollout `id` at `percent`.
pub fn is_member(id: &str, device_key: &str, percent: u8) -> bool {
    rollout_position(id, device_key) < u32::from(percent.min(100)) * (POSITIONS / 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(count: usize) -> Vec<String> {
        // Keys as devices make them: random-looking, of the allowed characters.
        (0..count)
            .map(|i| {
                let digest = Sha256::digest(format!("device {i}").as_bytes());
                hex::encode(&digest[..12])
            })
            .collect()
    }

    #[test]
    fn rollout_ids_are_eight_hex_digits_and_ignore_name_case() {
        let id = rollout_id("os_armv8", "prod", "1.2.0");
        assert_eq!(id.len(), ROLLOUT_ID_LEN);
        assert!(id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(id, rollout_id("OS_armv8", "Prod", "1.2.0"));
        assert_ne!(id, rollout_id("os_armv8", "prod", "1.2.1"));
        assert_ne!(id, rollout_id("os_armv8", "beta", "1.2.0"));
    }

    #[test]
    fn shares_are_within_one_point_of_the_percent() {
        let keys = keys(10_000);
        let id = rollout_id("os_armv8", "prod", "1.2.0");
        for percent in [1u8, 10, 50] {
            let members = keys
                .iter()
                .filter(|key| is_member(&id, key, percent))
                .count();
            let share = members as f64 / keys.len() as f64 * 100.0;
            assert!(
                (share - f64::from(percent)).abs() <= 1.0,
                "{percent}%: {share:.2}% of devices"
            );
        }
    }

    #[test]
    fn raising_the_percent_only_adds_devices() {
        let keys = keys(10_000);
        let id = rollout_id("scoreboard", "prod", "2.0.0");
        let mut before: Vec<&String> = Vec::new();
        for percent in [0u8, 1, 5, 10, 25, 50, 99, 100] {
            let now: Vec<&String> = keys
                .iter()
                .filter(|key| is_member(&id, key, percent))
                .collect();
            assert!(before.iter().all(|key| now.contains(key)), "{percent}%");
            before = now;
        }
        assert_eq!(before.len(), keys.len(), "100% takes every device");
        assert!(!keys.iter().any(|key| is_member(&id, key, 0)));
    }

    #[test]
    fn rollouts_pick_different_devices() {
        let keys = keys(10_000);
        let (one, other) = (rollout_id("a", "prod", "1"), rollout_id("b", "prod", "1"));
        let both = keys
            .iter()
            .filter(|key| is_member(&one, key, 10) && is_member(&other, key, 10))
            .count();
        // Independent rollouts share about 1% of devices at 10% each, not 10%.
        assert!(both < 200, "{both} devices in both");
    }

    /// Pins the function, which the CDN's viewer-request function computes too (the
    /// expected values come from Python's hashlib): when this changes, devices change
    /// cohorts, and both implementations must change together.
    #[test]
    fn ids_and_positions_are_pinned() {
        assert_eq!(rollout_id("os_armv8", "prod", "1.2.0"), "2d1a5982");
        let positions: Vec<u32> = ["device-1", "device-2", "Zz.9_-"]
            .iter()
            .map(|key| rollout_position("0a1b2c3d", key))
            .collect();
        assert_eq!(positions, [3128, 5085, 40]);
    }
}
