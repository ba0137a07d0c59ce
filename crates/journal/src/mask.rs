//! Secret masking: the one place that decides what a secret looks like in text, so logs,
//! outputs and messages are masked the same way (docs/design.md §2.1, §5).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

/// Replaces every occurrence of a secret value with `***`.
///
/// Where secrets overlap, the longest one starting at a position wins, and scanning resumes
/// after it; the replacement itself is never re-scanned, so a secret like `**` cannot eat into
/// the `***` of another. Empty secrets are ignored. A secret spanning several lines (a PEM key)
/// also registers each of its lines, because logs are masked one line at a time.
///
/// Cheap to clone. Its `Debug` output shows how many secrets it holds, never the secrets.
///
/// ```
/// use wayline_journal::Masker;
///
/// let masker = Masker::new(["hunter2", "hunter2-admin"]);
/// assert_eq!(masker.mask("pw=hunter2-admin, pw=hunter2"), "pw=***, pw=***");
/// assert_eq!(masker.mask("nothing to hide"), "nothing to hide");
/// ```
#[derive(Clone, Default)]
pub struct Masker {
    /// Distinct, non-empty, longest first: the first secret that matches at a position is the
    /// longest one there.
    secrets: Arc<[Box<str>]>,
}

impl Masker {
    /// What a secret is replaced with.
    pub const REPLACEMENT: &str = "***";

    /// A masker for these secret values.
    pub fn new<I>(secrets: I) -> Masker
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut all: Vec<Box<str>> = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.contains('\n') {
                all.extend(secret.lines().map(|line| line.trim_end_matches('\r').into()));
            }
            all.push(secret.into());
        }
        all.retain(|secret| !secret.is_empty());
        all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        all.dedup();
        Masker { secrets: all.into() }
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret replaced by [`Masker::REPLACEMENT`]; borrowed when nothing matched.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.is_empty() {
            return Cow::Borrowed(text);
        }
        let bytes = text.as_bytes();
        let mut masked = String::new();
        let mut copied = 0;
        let mut position = 0;
        while position < bytes.len() {
            match self.match_at(bytes, position) {
                Some(length) => {
                    // Matches start and end on char boundaries: a secret is valid UTF-8, so
                    // its first byte is never a continuation byte.
                    masked.push_str(&text[copied..position]);
                    masked.push_str(Self::REPLACEMENT);
                    position += length;
                    copied = position;
                }
                None => position += 1,
            }
        }
        if copied == 0 {
            return Cow::Borrowed(text);
        }
        masked.push_str(&text[copied..]);
        Cow::Owned(masked)
    }

    /// Masks every string in a JSON value, object keys included.
    pub fn mask_value(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(text) => {
                if let Cow::Owned(masked) = self.mask(text) {
                    *text = masked;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.mask_value(item)),
            Value::Object(map) => self.mask_map(map),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// Masks every string in a JSON object, keys included.
    pub fn mask_map(&self, map: &mut serde_json::Map<String, Value>) {
        if self.is_empty() {
            return;
        }
        for (key, mut item) in std::mem::take(map) {
            self.mask_value(&mut item);
            map.insert(self.mask(&key).into_owned(), item);
        }
    }

    /// The length of the longest secret: how far past a cut point a secret that starts before
    /// it can reach.
    pub fn longest(&self) -> usize {
        self.secrets.first().map_or(0, |secret| secret.len())
    }

    /// The first position at or after `at_least` where `bytes` can be split without cutting a
    /// secret or a UTF-8 character in two, or `bytes.len()`. `bytes` must extend at least
    /// [`Masker::longest`] + 3 bytes past `at_least`, or end where the text ends, for the
    /// answer to be exact.
    pub fn safe_cut(&self, bytes: &[u8], at_least: usize) -> usize {
        let mut position = 0;
        // The same left-to-right scan as `mask`, so the cut falls between the same matches.
        while position < at_least && position < bytes.len() {
            position += self.match_at(bytes, position).unwrap_or(1);
        }
        while position < bytes.len() && is_continuation(bytes[position]) {
            position += 1;
        }
        position.min(bytes.len())
    }

    fn match_at(&self, bytes: &[u8], position: usize) -> Option<usize> {
        let rest = &bytes[position..];
        self.secrets
            .iter()
            .find(|secret| rest.starts_with(secret.as_bytes()))
            .map(|secret| secret.len())
    }
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker").field("secrets", &self.secrets.len()).finish()
    }
}

fn is_continuation(byte: u8) -> bool {
    byte & 0b1100_0000 == 0b1000_0000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(secrets: &[&str], text: &str, expected: &str) {
        assert_eq!(Masker::new(secrets).mask(text), expected, "secrets {secrets:?}");
    }

    #[test]
    fn masks_every_occurrence() {
        check(&["s3cr3t"], "a s3cr3t and s3cr3ts3cr3t", "a *** and ******");
    }

    #[test]
    fn longest_secret_wins_where_secrets_overlap() {
        check(&["abc", "abcdef"], "xabcdefx abcx", "x***x ***x");
        check(&["bcd", "abc"], "abcd", "***d");
    }

    #[test]
    fn replacement_is_not_rescanned() {
        check(&["**", "token"], "token", "***");
    }

    #[test]
    fn empty_secrets_are_ignored() {
        assert!(Masker::new([""]).is_empty());
        check(&["", "x"], "axb", "a***b");
    }

    #[test]
    fn text_without_secrets_is_borrowed() {
        assert!(matches!(Masker::new(["zzz"]).mask("plain"), Cow::Borrowed("plain")));
        assert!(matches!(Masker::default().mask("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn multi_line_secrets_mask_each_line() {
        let key = "-----BEGIN KEY-----\r\nMIIBOgIBAAJBAK\n-----END KEY-----";
        check(&[key], "line: MIIBOgIBAAJBAK", "line: ***");
    }

    #[test]
    fn non_ascii_text_and_secrets() {
        check(&["pässwörd"], "é pässwörd ü", "é *** ü");
    }

    #[test]
    fn json_strings_and_keys_are_masked() {
        let masker = Masker::new(["tok"]);
        let mut value = serde_json::json!({"a": ["tok", 1, {"tok": "x-tok"}], "n": null});
        masker.mask_value(&mut value);
        assert_eq!(value, serde_json::json!({"a": ["***", 1, {"***": "x-***"}], "n": null}));
    }

    #[test]
    fn safe_cut_never_splits_a_secret_or_a_character() {
        let masker = Masker::new(["secret"]);
        // A cut at 4 would fall inside "secret" (bytes 2..8): it moves to the end of the match.
        assert_eq!(masker.safe_cut(b"a secret b", 4), 8);
        assert_eq!(masker.safe_cut(b"a secret b", 1), 1);
        // "é" is two bytes; a cut between them moves past the character.
        assert_eq!(Masker::default().safe_cut("aé".as_bytes(), 2), 3);
        assert_eq!(Masker::default().safe_cut(b"abc", 10), 3);
    }
}
