//! Execution ids: 26 characters, lower-case Crockford base32, sortable by creation time
//! (48 bits of milliseconds, 80 random bits), like ULIDs. Any unique prefix names one.

use wayline_journal::Time;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A new id for an execution created at `now`.
pub fn new(now: Time) -> String {
    let mut random = [0u8; 10];
    // Without randomness ids could collide across processes; failing loudly is better.
    getrandom::fill(&mut random).expect("the operating system provides random bytes");
    let millis = (now.as_micros() / 1000).max(0) as u128 & ((1 << 48) - 1);
    let mut value = millis << 80;
    for (i, byte) in random.iter().enumerate() {
        value |= u128::from(*byte) << (8 * (9 - i));
    }
    let mut out = [0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `text` looks like (a prefix of) an execution id.
pub fn is_valid_prefix(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 26
        && text.bytes().all(|b| ALPHABET.contains(&b.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_differ() {
        let a = new(Time::from_millis(1_000));
        let b = new(Time::from_millis(2_000));
        assert_eq!(a.len(), 26);
        assert!(a < b);
        assert_ne!(new(Time::from_millis(1_000)), a);
        assert!(is_valid_prefix(&a[..8]));
        assert!(!is_valid_prefix("not-an-id"));
    }
}
