//! Substituted values against a real shell: every context a `${{ }}` can sit in, crossed with
//! values that try to break out of it. Each pair either runs with the value arriving as one
//! literal word (and nothing injected runs) or is refused at validation at the substitution's
//! exact line and column.

use std::borrow::Cow;
use std::path::Path;

use serde_json::{Value, json};
use wayline_lang::expr::Scope;
use wayline_lang::model::{Body, Program};

/// What a context must do with a value.
enum Expect {
    /// Print exactly this, with `{p}` standing for the value.
    Prints(&'static str),
    /// Run without injecting anything; what it prints depends on the value (`echo`).
    Harmless,
    /// Be refused by validation.
    Refused,
}

/// `{P}` stands for `${{ inputs.p }}`.
const CONTEXTS: &[(&str, &str, Expect)] = &[
    ("bare word", "printf '[%s]\\n' {P}", Expect::Prints("[{p}]\n")),
    ("double quotes", "printf '[%s]\\n' \"{P}\"", Expect::Prints("[{p}]\n")),
    ("inside double quotes", "printf '[%s]\\n' \"x{P}y\"", Expect::Prints("[x{p}y]\n")),
    ("inside single quotes", "printf '[%s]\\n' 'x{P}y'", Expect::Prints("[x{p}y]\n")),
    ("glued to text", "printf '[%s]\\n' x{P}y", Expect::Prints("[x{p}y]\n")),
    ("two in one word", "printf '[%s]\\n' {P}-\"{P}\"", Expect::Prints("[{p}-{p}]\n")),
    ("assignment", "v={P}; printf '[%s]\\n' \"$v\"", Expect::Prints("[{p}]\n")),
    ("export", "export v={P}; printf '[%s]\\n' \"$v\"", Expect::Prints("[{p}]\n")),
    (
        "assignment before a command",
        "v={P} sh -c 'printf \"[%s]\\n\" \"$v\"'",
        Expect::Prints("[{p}]\n"),
    ),
    ("command substitution", "printf '[%s]\\n' \"$(printf '%s' {P})\"", Expect::Prints("[{p}]\n")),
    (
        "command substitution inside double quotes",
        "printf '[%s]\\n' \"x$(printf '%s' {P})y\"",
        Expect::Prints("[x{p}y]\n"),
    ),
    (
        "double quotes inside command substitution",
        "printf '[%s]\\n' \"$(printf '%s' \"{P}\")\"",
        Expect::Prints("[{p}]\n"),
    ),
    (
        "nested command substitution",
        "printf '[%s]\\n' \"$(printf '%s' \"$(printf '%s' {P})\")\"",
        Expect::Prints("[{p}]\n"),
    ),
    (
        "single quotes inside command substitution",
        "printf '[%s]\\n' \"$(printf '%s' 'a{P}b')\"",
        Expect::Prints("[a{p}b]\n"),
    ),
    ("echo inside command substitution", "echo \"x$(echo {P})y\"", Expect::Harmless),
    ("backquotes", "printf '[%s]\\n' \"`printf '%s' {P}`\"", Expect::Refused),
    ("backquotes inside double quotes", "echo \"`echo {P}`\"", Expect::Refused),
    ("here-document", "cat <<EOF\n<{P}>\nEOF", Expect::Prints("<{p}>\n")),
    ("here-document with tabs", "cat <<-EOF\n\t<{P}>\n\tEOF", Expect::Prints("<{p}>\n")),
    (
        "quotes in a here-document",
        "cat <<EOF\n\"{P}\" '{P}'\nEOF",
        Expect::Prints("\"{p}\" '{p}'\n"),
    ),
    ("quoted here-document", "cat <<'EOF'\n{P}\nEOF", Expect::Refused),
    ("double-quoted here-document", "cat <<\"EOF\"\n{P}\nEOF", Expect::Refused),
    ("escaped here-document", "cat <<\\EOF\n{P}\nEOF", Expect::Refused),
    ("here-document delimiter", "cat <<{P}\nx\n", Expect::Refused),
    (
        "here-document inside command substitution",
        "printf '[%s]\\n' \"$(cat <<EOF\n{P}\nEOF\n)\"",
        Expect::Prints("[{p}]\n"),
    ),
    ("arithmetic", "printf '%s\\n' $(( {P} + 1 ))", Expect::Refused),
    ("arithmetic in double quotes", "printf '%s\\n' \"$(( {P} ))\"", Expect::Refused),
    ("bash arithmetic command", "(( {P} )) ; printf 'ok\\n'", Expect::Refused),
    ("let", "let x={P}", Expect::Refused),
    ("comment line", "# {P}\nprintf 'ok\\n'", Expect::Prints("ok\n")),
    ("comment after a command", "printf 'ok\\n' # {P}", Expect::Prints("ok\n")),
    ("line continuation", "printf '[%s]\\n' \\\n  {P}", Expect::Prints("[{p}]\n")),
    ("after a backslash", "printf '[%s]\\n' \\{P}", Expect::Refused),
    ("after a backslash in double quotes", "printf '[%s]\\n' \"\\{P}\"", Expect::Refused),
    ("after a dollar", "printf '[%s]\\n' ${P}", Expect::Refused),
    (
        "case subject and pattern",
        "case {P} in {P}) printf 'match\\n';; *) printf 'no\\n';; esac",
        Expect::Prints("match\n"),
    ),
    ("case alternatives", "case v in {P}|v) printf 'v\\n';; esac", Expect::Prints("v\n")),
    (
        "case inside command substitution",
        "printf '[%s]\\n' \"$(case x in x) printf '%s' {P};; esac)\"",
        Expect::Prints("[{p}]\n"),
    ),
    ("brace group", "{ printf '[%s]\\n' {P}; }", Expect::Prints("[{p}]\n")),
    ("subshell", "( printf '[%s]\\n' {P} )", Expect::Prints("[{p}]\n")),
    ("pipeline", "printf '[%s]\\n' {P} | cat", Expect::Prints("[{p}]\n")),
    ("and list", "true && printf '[%s]\\n' {P}", Expect::Prints("[{p}]\n")),
    ("for list", "for x in {P}; do printf '[%s]\\n' \"$x\"; done", Expect::Prints("[{p}]\n")),
    ("test", "if [ {P} = \"{P}\" ]; then printf 'same\\n'; fi", Expect::Prints("same\n")),
    ("parameter default", "printf '[%s]\\n' ${UNSET_X:-{P}}", Expect::Prints("[{p}]\n")),
    (
        "parameter default in double quotes",
        "printf '[%s]\\n' \"${UNSET_X:-{P}}\"",
        Expect::Prints("[{p}]\n"),
    ),
    ("parameter alternative", "X=1; printf '[%s]\\n' \"${X:+{P}}\"", Expect::Prints("[{p}]\n")),
    (
        "parameter pattern",
        "X=pre{P}post; printf '[%s]\\n' \"${X#pre{P}}\"",
        Expect::Prints("[post]\n"),
    ),
    ("bash substring", "X=abc; printf '%s\\n' \"${X:{P}}\"", Expect::Refused),
    ("variable name", "printf '%s\\n' \"${{P}}\"", Expect::Refused),
    (
        "redirection target",
        "printf 'ok\\n' > \"$DIR\"/out; cat \"$DIR\"/out {P} 2>/dev/null; printf 'done\\n'",
        Expect::Harmless,
    ),
    ("eval", "eval \"printf '%s' {P}\"", Expect::Refused),
    ("sh -c script", "sh -c \"printf '%s' {P}\"", Expect::Refused),
    ("sh -c script in single quotes", "sh -c 'printf \"%s\" {P}'", Expect::Refused),
    ("bash -c after options", "bash -e -o pipefail -c \"echo {P}\"", Expect::Refused),
    (
        "sh -c positional argument",
        "sh -c 'printf \"[%s]\\n\" \"$1\"' sh {P}",
        Expect::Prints("[{p}]\n"),
    ),
    ("trap", "trap \"echo {P}\" EXIT", Expect::Refused),
    ("alias", "alias x={P}", Expect::Refused),
    ("declare a name", "export {P}=1", Expect::Refused),
    ("integer variable", "declare -i n={P}", Expect::Refused),
    ("array subscript", "a[{P}]=1", Expect::Refused),
    ("printf -v", "printf -v {P} x", Expect::Refused),
    ("dollar quotes", "printf '%s\\n' $'x{P}'", Expect::Refused),
];

/// `$MARK` is a file that exists only if an injected command ran.
const PAYLOADS: &[&str] = &[
    "$(touch \"$MARK\")",
    "`touch \"$MARK\"`",
    "'; touch \"$MARK\"; '",
    "\"; touch \"$MARK\"; \"",
    "x\ntouch \"$MARK\"",
    "; touch \"$MARK\"",
    "& touch \"$MARK\"",
    "| touch \"$MARK\"",
    "> \"$MARK\"",
    "EOF\ntouch \"$MARK\"\nEOF",
    "a[$(touch \"$MARK\")]",
    "$((1+1))",
    "\\",
    "\\$(touch \"$MARK\")",
    "'",
    "\"",
    "$MARK ${MARK}",
    "${MARK:?}",
    "*",
    "  spaced  out  ",
    "-n",
    ")",
    ";;",
    "x # y",
    "",
    "é ✓ \t",
];

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
    fn secret(&self, _: &str) -> Option<String> {
        None
    }
    fn execution(&self) -> Value {
        json!({})
    }
    fn workflow_name(&self) -> &str {
        "t"
    }
}

fn workflow(script: &str) -> String {
    let body: String = script.lines().map(|line| format!("      {line}\n")).collect();
    format!(
        "name: t\ninputs: {{ p: {{ type: string }} }}\nsteps:\n  - id: s\n    run: |\n{}",
        body.replace("{P}", "${{ inputs.p }}")
    )
}

/// Runs `script` with its values the way the executor does: a fresh environment holding only
/// what it is given.
fn run_shell(
    shell: &Path,
    script: &str,
    values: &[(String, String)],
    dir: &Path,
) -> (String, bool) {
    let mark = dir.join("injected");
    // Tests of the shell boundary start real shells.
    #[allow(clippy::disallowed_methods)]
    let output = std::process::Command::new(shell)
        .arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("MARK", &mark)
        .env("DIR", dir)
        .envs(values.iter().map(|(name, value)| (name, value)))
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the shell starts");
    (String::from_utf8_lossy(&output.stdout).into_owned(), mark.exists())
}

#[test]
fn every_context_and_payload_is_safe_or_refused_with_its_position() {
    let shells: Vec<&Path> =
        ["/bin/sh", "/bin/bash"].iter().map(Path::new).filter(|shell| shell.exists()).collect();
    assert!(!shells.is_empty(), "no shell to test against");
    let mut failures = Vec::new();
    let mut runs = 0;
    for (name, script, expect) in CONTEXTS {
        let text = workflow(script);
        let loaded = wayline_lang::load(&text);
        let errors: Vec<_> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
        if let Expect::Refused = expect {
            if errors.is_empty() {
                failures.push(format!("{name}: not refused"));
            }
            for error in &errors {
                // The diagnostic points at the substitution itself.
                let line = text.lines().nth(error.span.line as usize - 1).unwrap_or("");
                let at: String = line.chars().skip(error.span.column as usize - 1).collect();
                if error.code != wayline_lang::Code::ShellSubstitution || !at.starts_with("${{") {
                    failures.push(format!(
                        "{name}: refused at {}:{} ({at:?}): {}",
                        error.span.line, error.span.column, error.message
                    ));
                }
            }
            continue;
        }
        let Some(workflow) = loaded.workflow else {
            failures.push(format!(
                "{name}: refused: {:?}",
                errors.iter().map(|e| &e.message).collect::<Vec<_>>()
            ));
            continue;
        };
        let Body::Run(command) = &workflow.steps[0].body else { unreachable!() };
        let Program::Shell(program) = &command.program else { unreachable!() };
        for payload in PAYLOADS {
            let rendered = program.render(&Inputs(json!({ "p": payload }))).unwrap();
            if payload.contains("touch") {
                assert!(!rendered.script.contains("touch"), "{name}: the value is in the script");
            }
            for shell in &shells {
                let dir = tempfile::tempdir().unwrap();
                let (stdout, injected) =
                    run_shell(shell, &rendered.script, &rendered.values, dir.path());
                runs += 1;
                if injected {
                    failures.push(format!(
                        "{name} / {payload:?} / {}: an injected command ran",
                        shell.display()
                    ));
                }
                if let Expect::Prints(expected) = expect {
                    let expected = expected.replace("{p}", payload);
                    if stdout != expected {
                        failures.push(format!(
                            "{name} / {payload:?} / {}: printed {stdout:?}, expected {expected:?}",
                            shell.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} runs went wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(runs >= CONTEXTS.len() * PAYLOADS.len() / 2, "{runs} runs");
}
