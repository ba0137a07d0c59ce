//! URL templates: each `${{ }}` of an `http.url` is encoded for the part of the URL it sits in,
//! so a value can be a piece of the host, a path segment or a query value, but can never
//! change the host, climb out of the path or start a query of its own.
//!
//! Where a substitution sits is decided once, from the template's literal text (a value never
//! moves the boundaries), and decides how its value is inserted:
//!
//! | where | example | the value |
//! |---|---|---|
//! | the whole URL | `${{ inputs.url }}` | taken as is; must be an absolute `http`/`https` URL |
//! | scheme or host | `https://${{ inputs.region }}.api.example` | letters, digits, `-`, `.` only |
//! | port | `http://127.0.0.1:${{ inputs.port }}` | digits only |
//! | user info | `https://${{ inputs.user }}@host` | percent-encoded |
//! | path, query, fragment | `/items/${{ inputs.id }}?q=${{ inputs.q }}` | percent-encoded |
//!
//! Percent-encoding keeps only RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`), so
//! `/`, `?`, `#`, `&`, `=`, `@` and `%` arrive as data. A value that is not allowed where it
//! sits fails the attempt (never retried: the same value fails again), with a message that
//! names the template, never the value, which may be a secret.
//!
//! `raw(x)` as the whole expression of a substitution is the explicit way out: its value is
//! inserted verbatim, and validation warns about it. A `raw()` in the scheme is taken to
//! supply the scheme and the host (a base URL), so the text after it is a path.

use crate::expr::{EvalError, Expression, Part, Scope, Template, to_text};

/// How the value of one substitution is inserted into a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The template is exactly this substitution: the value is the whole URL.
    Whole,
    /// `raw(x)`: inserted verbatim.
    Raw,
    /// In the scheme or the host: plain host text only.
    Host,
    /// After a `:` in the authority: digits only.
    Port,
    /// Before an `@` in the authority: percent-encoded.
    UserInfo,
    /// Percent-encoded, and never a whole `.` or `..` segment.
    Path,
    /// Percent-encoded.
    Query,
    /// Percent-encoded.
    Fragment,
}

impl Slot {
    fn describe(self) -> &'static str {
        match self {
            Slot::Whole => "the whole URL",
            Slot::Raw => "raw",
            Slot::Host => "in the scheme or host",
            Slot::Port => "in the port",
            Slot::UserInfo => "in the user info",
            Slot::Path => "in the path",
            Slot::Query => "in the query",
            Slot::Fragment => "in the fragment",
        }
    }
}

/// A URL template that cannot give an absolute http(s) URL, whatever its values are; reported
/// by validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutError {
    pub message: String,
    pub help: String,
}

/// Why a URL could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// An expression could not be evaluated.
    Eval(EvalError),
    /// A value is not allowed where it sits. The message names the URL template, not the
    /// value.
    Rejected(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Eval(error) => error.fmt(f),
            Error::Rejected(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

impl From<EvalError> for Error {
    fn from(error: EvalError) -> Error {
        Error::Eval(error)
    }
}

/// Whether a substitution is the explicit escape hatch: its whole expression is a call of
/// `raw`. Decided from the syntax, so validation and rendering agree without evaluating.
pub fn is_raw(expression: &Expression) -> bool {
    expression.is_call_to("raw")
}

/// Where each substitution of a URL template sits, in order.
///
/// ```
/// use wayline_lang::expr::Template;
/// use wayline_lang::url::{Slot, layout};
/// let slots = |text: &str| layout(&Template::parse(text).unwrap());
/// assert_eq!(slots("${{ inputs.url }}"), Ok(vec![Slot::Whole]));
/// assert_eq!(
///     slots("https://${{ inputs.region }}.api.example:${{ inputs.port }}/v1/${{ inputs.id }}?q=${{ inputs.q }}#${{ inputs.f }}"),
///     Ok(vec![Slot::Host, Slot::Port, Slot::Path, Slot::Query, Slot::Fragment]),
/// );
/// assert!(slots("${{ inputs.base }}/items").is_err());
/// ```
pub fn layout(template: &Template) -> Result<Vec<Slot>, LayoutError> {
    let parts = template.parts();
    if let [Part::Expr(..)] = parts {
        return Ok(vec![Slot::Whole]);
    }
    let mut slots = Vec::new();
    let mut cursor = Cursor::default();
    for (index, part) in parts.iter().enumerate() {
        match part {
            Part::Text(text) => cursor.text(text, |_, _| ())?,
            Part::Expr(expression, _) => {
                let slot = if is_raw(expression) {
                    Slot::Raw
                } else {
                    match cursor.state {
                        State::Scheme => Slot::Host,
                        State::Authority { port } => {
                            if user_info_follows(&parts[index + 1..]) {
                                Slot::UserInfo
                            } else if port {
                                Slot::Port
                            } else {
                                Slot::Host
                            }
                        }
                        State::Path => Slot::Path,
                        State::Query => Slot::Query,
                        State::Fragment => Slot::Fragment,
                    }
                };
                cursor.substitution(slot);
                slots.push(slot);
            }
        }
    }
    cursor.finish()?;
    Ok(slots)
}

const DOT_SEGMENT: &str =
    "a substituted value makes a `.` or `..` path segment, which would move up the path";

/// Renders a URL template, each value encoded for where it sits.
///
/// ```
/// use wayline_lang::expr::{Scope, Template};
/// # use std::borrow::Cow; use serde_json::{json, Value};
/// # struct S; impl Scope for S {
/// #   fn inputs(&self) -> Cow<'_, Value> { Cow::Owned(json!({"p": "../../admin?x=1#", "q": "a&b=c d"})) }
/// #   fn step(&self, _: &str) -> Option<Value> { None }
/// #   fn env(&self) -> Cow<'_, Value> { Cow::Owned(json!({})) }
/// #   fn secret(&self, _: &str) -> Option<String> { None }
/// #   fn execution(&self) -> Value { json!({}) }
/// #   fn workflow_name(&self) -> &str { "w" } }
/// let url = Template::parse("https://api.example/v1/items/${{ inputs.p }}?q=${{ inputs.q }}").unwrap();
/// assert_eq!(
///     wayline_lang::url::render(&url, &S).unwrap(),
///     "https://api.example/v1/items/..%2F..%2Fadmin%3Fx%3D1%23?q=a%26b%3Dc%20d",
/// );
/// ```
pub fn render(template: &Template, scope: &dyn Scope) -> Result<String, Error> {
    let reject =
        |what: String| Error::Rejected(format!("the URL template `{}`: {what}", source(template)));
    let slots = layout(template).map_err(|error| reject(error.message))?;
    let mut out = String::new();
    let mut cursor = Cursor::default();
    // The current path segment: where it starts in `out`, and whether a value is in it.
    let mut segment = (0, false);
    let mut slots = slots.into_iter();
    for part in template.parts() {
        match part {
            Part::Text(text) => {
                let mut bad_segment = false;
                cursor
                    .text(text, |state, c| {
                        if state == State::Path && c != '/' {
                            out.push(c);
                            return;
                        }
                        if segment.1 && is_dot_segment(&out[segment.0..]) {
                            bad_segment = true;
                        }
                        out.push(c);
                        segment = (out.len(), false);
                    })
                    .map_err(|error| reject(error.message))?;
                if bad_segment {
                    return Err(reject(DOT_SEGMENT.into()));
                }
            }
            Part::Expr(expression, _) => {
                // One slot per substitution; were one ever missing, encode rather than trust.
                let slot = slots.next().unwrap_or(Slot::Query);
                let value = to_text(&expression.evaluate(scope)?);
                let rejected = |rule: &str| {
                    reject(format!(
                        "`${{{{ {} }}}}` is {}, and its value is {rule}",
                        expression.source(),
                        slot.describe()
                    ))
                };
                match slot {
                    Slot::Whole => {
                        if !is_absolute_http(&value) {
                            return Err(rejected("not an absolute http:// or https:// URL"));
                        }
                        out.push_str(&value);
                    }
                    Slot::Raw => out.push_str(&value),
                    Slot::Host => {
                        let host = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
                        if !value.bytes().all(host) {
                            return Err(rejected(
                                "not plain host text (letters, digits, `-` and `.`)",
                            ));
                        }
                        out.push_str(&value);
                    }
                    Slot::Port => {
                        if !value.bytes().all(|b| b.is_ascii_digit()) {
                            return Err(rejected("not a port number (digits only)"));
                        }
                        out.push_str(&value);
                    }
                    Slot::Path => {
                        out.push_str(&encode(&value));
                        segment.1 = true;
                    }
                    Slot::UserInfo | Slot::Query | Slot::Fragment => out.push_str(&encode(&value)),
                }
                cursor.substitution(slot);
            }
        }
    }
    if cursor.state == State::Path && segment.1 && is_dot_segment(&out[segment.0..]) {
        return Err(reject(DOT_SEGMENT.into()));
    }
    Ok(out)
}

/// Percent-encodes every byte of `text` (as UTF-8) outside RFC 3986's unreserved characters:
/// the value is then data in any part of a URL, and in `application/x-www-form-urlencoded`
/// text too. `urlencode(x)` in expressions is this function.
///
/// ```
/// assert_eq!(wayline_lang::url::encode("a b&c=d/é~"), "a%20b%26c%3Dd%2F%C3%A9~");
/// ```
pub fn encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
    out
}

/// The part of the URL the literal text has reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Before `://`.
    #[default]
    Scheme,
    /// Between `://` and the first `/`, `?` or `#`; `port` after a `:` (until an `@`).
    Authority {
        port: bool,
    },
    Path,
    Query,
    Fragment,
}

/// Follows a template's literal text through the parts of a URL.
#[derive(Debug, Default)]
struct Cursor {
    state: State,
    /// The scheme as written, when it is all literal text.
    scheme: String,
    /// A substitution is in the scheme or host, so the scheme is not known before running.
    scheme_templated: bool,
}

impl Cursor {
    /// Moves through literal `text`, telling `each` every character with the part of the URL
    /// it belongs to (a `/`, `?` or `#` that starts a part belongs to it).
    fn text(&mut self, text: &str, mut each: impl FnMut(State, char)) -> Result<(), LayoutError> {
        let mut chars = text.char_indices();
        while let Some((at, c)) = chars.next() {
            if self.state == State::Scheme && text[at..].starts_with("://") {
                self.check_scheme()?;
                "://".chars().for_each(|c| each(State::Scheme, c));
                chars.nth(1);
                self.state = State::Authority { port: false };
                continue;
            }
            self.state = match (self.state, c) {
                (State::Scheme, '/' | '?' | '#') => return Err(no_scheme()),
                (State::Scheme, c) => {
                    if !self.scheme_templated {
                        self.scheme.push(c);
                    }
                    State::Scheme
                }
                (State::Authority { .. } | State::Path, '?') => State::Query,
                (State::Authority { .. } | State::Path | State::Query, '#') => State::Fragment,
                (State::Authority { .. }, '/') => State::Path,
                (State::Authority { .. }, ':') => State::Authority { port: true },
                (State::Authority { .. }, '@') => State::Authority { port: false },
                (state, _) => state,
            };
            each(self.state, c);
        }
        Ok(())
    }

    fn substitution(&mut self, slot: Slot) {
        if self.state == State::Scheme {
            self.scheme_templated = true;
            // A raw() base URL supplies the scheme and the host; what follows is the path.
            if slot == Slot::Raw {
                self.state = State::Authority { port: false };
            }
        }
    }

    fn finish(&self) -> Result<(), LayoutError> {
        match self.state {
            State::Scheme => Err(no_scheme()),
            _ => Ok(()),
        }
    }

    /// A scheme written out in full must be http or https; one from a substitution is
    /// checked with the whole URL before the request is sent.
    fn check_scheme(&self) -> Result<(), LayoutError> {
        let scheme = &self.scheme;
        if self.scheme_templated
            || scheme.eq_ignore_ascii_case("http")
            || scheme.eq_ignore_ascii_case("https")
        {
            return Ok(());
        }
        Err(LayoutError {
            message: format!("the URL's scheme `{scheme}` is not http or https"),
            help: "wayline calls HTTP endpoints only, e.g. `https://hooks.example/deploy`".into(),
        })
    }
}

fn no_scheme() -> LayoutError {
    LayoutError {
        message: "the URL does not start with its scheme and host (`https://…`)".into(),
        help: "write them out (`https://${{ inputs.host }}/items`), or make the whole URL one \
               expression (`${{ inputs.base + '/items' }}`)"
            .into(),
    }
}

/// Whether `text` starts with `http://` or `https://`, in any case (URL schemes are
/// case-insensitive); the executor parses the rest.
fn is_absolute_http(text: &str) -> bool {
    let text = text.trim_start().as_bytes();
    ["http://", "https://"].iter().any(|prefix| {
        text.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
    })
}

/// Whether an `@` follows in the literal text of the authority: the substitution is then in
/// the user info, not the host.
fn user_info_follows(rest: &[Part]) -> bool {
    for part in rest {
        if let Part::Text(text) = part {
            for c in text.chars() {
                match c {
                    '@' => return true,
                    '/' | '?' | '#' => return false,
                    _ => {}
                }
            }
        }
    }
    false
}

/// `.` and `..` segments, also written `%2e`, are removed by URL parsers and by servers: a
/// value that makes one would move the request up the path.
fn is_dot_segment(segment: &str) -> bool {
    let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
    decoded == "." || decoded == ".."
}

/// The template as written in the workflow (expressions with normalised spacing). Only
/// literal text and expression sources: never a value.
fn source(template: &Template) -> String {
    let mut out = String::new();
    for part in template.parts() {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Expr(expression, _) => {
                out.push_str("${{ ");
                out.push_str(expression.source());
                out.push_str(" }}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde_json::{Value, json};

    use super::*;

    struct Inputs(Value);

    impl Scope for Inputs {
        fn inputs(&self) -> Cow<'_, Value> {
            Cow::Borrowed(&self.0)
        }
        fn step(&self, _: &str) -> Option<Value> {
            None
        }
        fn env(&self) -> Cow<'_, Value> {
            Cow::Owned(json!({}))
        }
        fn secret(&self, name: &str) -> Option<String> {
            (name == "KEY").then(|| "s3cret/../x".to_owned())
        }
        fn execution(&self) -> Value {
            json!({})
        }
        fn workflow_name(&self) -> &str {
            "w"
        }
    }

    /// Renders `template` with input `v` set to `value`: the URL, or the error message.
    fn check(template: &str, value: Value) -> String {
        let template = Template::parse(template).unwrap();
        match render(&template, &Inputs(json!({ "v": value }))) {
            Ok(url) => url,
            Err(error) => format!("error: {error}"),
        }
    }

    #[test]
    fn path_values_stay_one_segment() {
        let base = "https://api.example/v1/items/${{ inputs.v }}";
        let cases = [
            ("../../admin?x=1#", "https://api.example/v1/items/..%2F..%2Fadmin%3Fx%3D1%23"),
            ("a@evil", "https://api.example/v1/items/a%40evil"),
            ("%2e%2e", "https://api.example/v1/items/%252e%252e"),
            ("a b", "https://api.example/v1/items/a%20b"),
            ("é☃", "https://api.example/v1/items/%C3%A9%E2%98%83"),
            ("&x=", "https://api.example/v1/items/%26x%3D"),
            ("a\\b\t\n", "https://api.example/v1/items/a%5Cb%09%0A"),
            ("7.1-rc_2~", "https://api.example/v1/items/7.1-rc_2~"),
        ];
        for (value, expected) in cases {
            assert_eq!(check(base, json!(value)), expected, "{value:?}");
        }
        assert_eq!(check(base, json!(42)), "https://api.example/v1/items/42");
        assert_eq!(check(base, json!(null)), "https://api.example/v1/items/");
    }

    #[test]
    fn dot_segments_are_refused() {
        let message = "error: the URL template `https://api.example/v1/${{ inputs.v }}/x`: a \
                       substituted value makes a `.` or `..` path segment, which would move up the path";
        assert_eq!(check("https://api.example/v1/${{ inputs.v }}/x", json!("..")), message);
        assert!(check("https://api.example/v1/${{ inputs.v }}", json!(".")).starts_with("error:"));
        assert!(check("https://a.example/%2e${{ inputs.v }}?q", json!(".")).starts_with("error:"));
        // Dots with anything else in the segment are ordinary data.
        assert_eq!(
            check("https://a.example/${{ inputs.v }}", json!("...")),
            "https://a.example/..."
        );
        assert_eq!(
            check("https://a.example/x${{ inputs.v }}", json!("..")),
            "https://a.example/x.."
        );
        // Literal dot segments are the author's own.
        assert_eq!(
            check("https://a.example/../${{ inputs.v }}", json!("a")),
            "https://a.example/../a"
        );
    }

    #[test]
    fn query_and_fragment_values_are_components() {
        let template = "https://a.example/s?q=${{ inputs.v }}&n=1#${{ inputs.v }}";
        assert_eq!(
            check(template, json!("a&b=c d+e#f?")),
            "https://a.example/s?q=a%26b%3Dc%20d%2Be%23f%3F&n=1#a%26b%3Dc%20d%2Be%23f%3F"
        );
        // A `?` in the path starts the query, even right after a value.
        assert_eq!(
            check("https://a.example/${{ inputs.v }}?k=${{ inputs.v }}", json!("/")),
            "https://a.example/%2F?k=%2F"
        );
    }

    #[test]
    fn host_and_port_values_must_be_plain() {
        let host = "https://${{ inputs.v }}.api.example/v1";
        assert_eq!(check(host, json!("eu-west.2")), "https://eu-west.2.api.example/v1");
        let refused = "error: the URL template `https://${{ inputs.v }}.api.example/v1`: \
                       `${{ inputs.v }}` is in the scheme or host, and its value is not plain host \
                       text (letters, digits, `-` and `.`)";
        for hostile in ["evil.example/", "evil.example#", "a@evil", "evil:80", "é", "a b", "%41"] {
            assert_eq!(check(host, json!(hostile)), refused, "{hostile:?}");
        }
        let port = "http://127.0.0.1:${{ inputs.v }}/x";
        assert_eq!(check(port, json!(8080)), "http://127.0.0.1:8080/x");
        assert!(
            check(port, json!("80@evil"))
                .contains("is in the port, and its value is not a port number")
        );
        assert!(check(port, json!("8a")).starts_with("error:"));
        assert_eq!(check("${{ inputs.v }}://a.example/", json!("https")), "https://a.example/");
    }

    #[test]
    fn user_info_is_encoded() {
        let template = "https://${{ inputs.v }}:${{ inputs.v }}@a.example/";
        assert_eq!(check(template, json!("u:p@x")), "https://u%3Ap%40x:u%3Ap%40x@a.example/");
    }

    #[test]
    fn the_whole_url_is_taken_as_is_when_absolute() {
        let url = "https://a.example/x?y=1#z";
        assert_eq!(check("${{ inputs.v }}", json!(url)), url);
        assert_eq!(check("${{ inputs.v }}", json!("HTTP://A.example")), "HTTP://A.example");
        let refused = "error: the URL template `${{ inputs.v }}`: `${{ inputs.v }}` is the whole \
                       URL, and its value is not an absolute http:// or https:// URL";
        for value in ["ftp://a.example/", "/relative", "a.example", "javascript:alert(1)", ""] {
            assert_eq!(check("${{ inputs.v }}", json!(value)), refused, "{value:?}");
        }
    }

    #[test]
    fn raw_inserts_verbatim_and_a_raw_base_supplies_the_host() {
        let template = "${{ raw(inputs.v) }}/items/${{ inputs.v }}";
        assert_eq!(layout(&Template::parse(template).unwrap()), Ok(vec![Slot::Raw, Slot::Path]));
        assert_eq!(check(template, json!("http://h")), "http://h/items/http%3A%2F%2Fh");
        assert_eq!(
            check("https://a.example/${{ raw(inputs.v) }}", json!("../admin?x=1")),
            "https://a.example/../admin?x=1"
        );
        // Only a top-level call is the escape hatch.
        assert_eq!(
            check("https://a.example/${{ raw(inputs.v) + '' }}", json!("a/b")),
            "https://a.example/a%2Fb"
        );
    }

    #[test]
    fn raw_and_urlencode_evaluate_anywhere() {
        let eval = |text: &str| {
            Template::parse(text)
                .unwrap()
                .evaluate(&Inputs(json!({ "v": "a b/c", "n": 7 })))
                .unwrap()
        };
        assert_eq!(eval("${{ urlencode(inputs.v) }}"), json!("a%20b%2Fc"));
        assert_eq!(eval("q=${{ urlencode(inputs.v + '&') }}"), json!("q=a%20b%2Fc%26"));
        assert_eq!(eval("${{ urlencode(inputs.n) }}"), json!("7"));
        assert_eq!(eval("${{ raw(inputs.v) }}"), json!("a b/c"));
        assert_eq!(eval("${{ raw(inputs.n) }}"), json!(7));
        let url = "https://a.example/${{ urlencode(inputs.v) }}";
        // In a URL template the value is encoded where it sits, so urlencode() encodes twice.
        assert_eq!(check(url, json!("a b")), "https://a.example/a%2520b");
    }

    #[test]
    fn messages_never_quote_the_value() {
        let template = Template::parse("https://${{ secrets.KEY }}.example/").unwrap();
        let error = render(&template, &Inputs(json!({}))).unwrap_err().to_string();
        assert!(!error.contains("s3cret"), "{error}");
        assert!(error.contains("${{ secrets.KEY }}"), "{error}");
    }

    #[test]
    fn layouts_that_cannot_make_an_absolute_url() {
        let error = |text: &str| layout(&Template::parse(text).unwrap()).unwrap_err().message;
        let no_scheme = "the URL does not start with its scheme and host (`https://…`)";
        assert_eq!(error("${{ inputs.base }}/items"), no_scheme);
        assert_eq!(error("a.example/${{ inputs.v }}"), no_scheme);
        assert_eq!(error("${{ inputs.a }}${{ inputs.b }}"), no_scheme);
        assert_eq!(
            error("ftp://${{ inputs.host }}/"),
            "the URL's scheme `ftp` is not http or https"
        );
        assert!(layout(&Template::parse("HTTPS://${{ inputs.host }}/").unwrap()).is_ok());
    }
}
