//! Where each `${{ }}` of a `run` script lands, as a POSIX shell reads the script, so that a
//! substituted value can never become shell syntax.
//!
//! Values never enter the script. Each substitution is replaced by a reference to an
//! environment variable (`"${WAYLINE_VALUE_1}"`) that the runtime sets to the value, and a
//! shell never parses the value of a variable as code — except where it evaluates text on
//! purpose: arithmetic (`$(( ))`, `let`, `(( ))`, `[[ -eq ]]`, bash integer variables), `eval`,
//! `sh -c`, `trap`, `alias`, and, in bash, a value used as a variable name (`declare`,
//! `printf -v`, `unset`, subscripts). So the only question left is how the reference must be
//! written where it sits: quoted as a word (`"${V}"`), bare inside `"…"` and expanding
//! here-documents (`${V}`), or spliced into `'…'` (`'"${V}"'`). This module answers it with a
//! scanner that follows the POSIX token rules (quoting, every `$` expansion, backquotes,
//! here-documents, comments, operators, `case` patterns), and refuses every place where no
//! reference can be safe, with the reason and what to write instead.
//!
//! Safety comes from the construction, not from recognising attacks: a mistake in this scanner
//! can make a reference expand to the wrong text or split into several words, but never turns
//! a value into code, because the value is not in the script. Where the scanner cannot tell how
//! a substitution will be read, it refuses it. The command rules (`eval`, `sh -c`, …) are the
//! part that recognises programs; they also look at the list form of `run`, where elements are
//! passed verbatim.

use std::ops::Range;

use crate::expr::{EvalError, Expression, Part, Scope, Template};

/// How the reference to a substitution's variable is written into the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// An unquoted word or part of one: `"${V}"`, one field, no globbing.
    Word,
    /// Inside `"…"` or an expanding here-document: `${V}`.
    Quoted,
    /// Inside `'…'`: the quote is closed around `"${V}"` and reopened, `'"${V}"'`.
    SingleQuoted,
    /// Inside a comment: nothing is written and the expression is not evaluated.
    Comment,
}

/// A problem with one substitution (or with the script), at a character offset of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The substitution concerned (index among the text's `${{ }}`), if any.
    pub slot: Option<usize>,
    /// Character offset and length in the script text.
    pub offset: usize,
    pub len: usize,
    pub message: String,
    pub help: String,
}

/// The verdict on one script: a placement for every substitution, or why not.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// One per substitution, in order. Meaningful only when `errors` is empty.
    pub placements: Vec<Placement>,
    /// Substitutions that cannot be made safe: validation refuses the script.
    pub errors: Vec<Finding>,
    /// Places that are safe for the shell but hand the value to a program that may run it as
    /// code (`python -c`, `ssh`, `sed`, …), and doubtful script syntax.
    pub warnings: Vec<Finding>,
}

/// One element of a list-form `run`: its literal text and the substitutions it holds.
#[derive(Debug, Clone, Default)]
pub struct Element {
    /// The literal text, with substitutions left out.
    pub text: String,
    /// Indexes of the substitutions in the element (among all of the list's, in order), with
    /// their character offsets and lengths in the element's text.
    pub slots: Vec<(usize, usize, usize)>,
}

/// Analyses a `run` script. `slots` are the byte ranges of its `${{ … }}` (delimiters
/// included), in order.
///
/// ```
/// use wayline_lang::shell::{analyse_script, Placement};
/// let text = r#"echo ${{ a }} "x${{ b }}" 'y${{ c }}' # ${{ d }}"#;
/// let analysis = analyse_script(text, &wayline_lang::expr::expression_ranges(text));
/// assert!(analysis.errors.is_empty());
/// use Placement::*;
/// assert_eq!(analysis.placements, [Word, Quoted, SingleQuoted, Comment]);
/// assert!(!analyse_script("echo $(( ${{ a }} + 1 ))", &[9..17]).errors.is_empty());
/// ```
pub fn analyse_script(text: &str, slots: &[Range<usize>]) -> Analysis {
    let mut units = Vec::with_capacity(text.len());
    let mut slot_spans = Vec::with_capacity(slots.len());
    let mut offset = 0usize;
    let mut byte = 0usize;
    let mut next = slots.iter().peekable();
    for (at, c) in text.char_indices() {
        if at < byte {
            continue;
        }
        if let Some(range) = next.peek()
            && range.start == at
        {
            let len = text.get((*range).clone()).map_or(1, |slot| slot.chars().count());
            units.push(Unit { kind: Kind::Slot(slot_spans.len()), offset });
            slot_spans.push((offset, len));
            offset += len;
            byte = range.end;
            next.next();
            continue;
        }
        units.push(Unit { kind: Kind::Char(c), offset });
        offset += 1;
        byte = at + c.len_utf8();
    }
    let mut scanner =
        Scanner { units, pos: 0, report: Report::new(slot_spans), refusing: None, in_test: false };
    scanner.list(Until::End);
    scanner.report.finish()
}

/// Checks the list form of `run` (`[program, arg, …]`): elements are passed verbatim, so only
/// the programs that run an argument as code matter (`sh -c`, `su -c`) or may (`python -c`, …).
pub fn analyse_argv(elements: &[Element]) -> Analysis {
    let spans: Vec<(usize, usize)> = elements
        .iter()
        .flat_map(|element| element.slots.iter().map(|&(_, offset, len)| (offset, len)))
        .collect();
    let mut report = Report::new(spans);
    let words: Vec<Word> = elements
        .iter()
        .map(|element| Word {
            text: element.text.clone(),
            slots: element.slots.iter().map(|&(slot, _, _)| slot).collect(),
            plain: element.slots.is_empty(),
            ..Word::default()
        })
        .collect();
    commands::check(&mut report, &words, commands::Form::Argv);
    for placement in &mut report.placements {
        placement.get_or_insert(Placement::Word);
    }
    report.finish()
}

/// Why a substitution cannot be made safe where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Arithmetic,
    Backquote,
    Escaped,
    AfterDollar,
    QuotedHeredoc,
    HeredocDelimiter,
    DollarQuote,
    VariableName,
    Subscript,
    BashExpansion,
    Eval,
    ShellScript,
    Trap,
    Alias,
    ArithmeticTest,
    IntegerVariable,
    Unclassified,
}

impl Refusal {
    fn message(self) -> &'static str {
        match self {
            Refusal::Arithmetic => {
                "a substitution inside shell arithmetic would be evaluated by the shell \
                 (bash even runs `$( )` found in it)"
            }
            Refusal::Backquote => "substitutions inside backquotes (`…`) are not supported",
            Refusal::Escaped => "a `\\` right before `${{ }}` would escape the substitution",
            Refusal::AfterDollar => "a `$` right before `${{ }}` changes how the shell reads it",
            Refusal::QuotedHeredoc => {
                "the here-document's delimiter is quoted, so the shell expands nothing in it"
            }
            Refusal::HeredocDelimiter => "a here-document delimiter cannot be substituted",
            Refusal::DollarQuote => "substitutions inside `$'…'` or `$\"…\"` are not supported",
            Refusal::VariableName => "the value would be used as a variable name",
            Refusal::Subscript => "the value would be an array subscript, which bash evaluates",
            Refusal::BashExpansion => {
                "this parameter expansion is bash's, and bash evaluates parts of it as arithmetic"
            }
            Refusal::Eval => "`eval` runs its arguments as shell code",
            Refusal::ShellScript => "the value would become part of the script a shell runs",
            Refusal::Trap => "`trap` runs its first argument as shell code",
            Refusal::Alias => "an alias is read as shell code when it is used",
            Refusal::ArithmeticTest => {
                "bash evaluates the operands of `-eq`, `-lt`, … inside `[[ ]]` as arithmetic"
            }
            Refusal::IntegerVariable => {
                "the script declares integer variables (`-i`), and bash evaluates every value \
                 assigned to them as arithmetic"
            }
            Refusal::Unclassified => "wayline cannot tell how the shell reads this substitution",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Refusal::Arithmetic | Refusal::ArithmeticTest | Refusal::IntegerVariable => {
                "compute the number in the expression instead, e.g. `${{ inputs.count + 1 }}`, \
                 and compare with `[ \"$x\" -eq 1 ]`"
            }
            Refusal::Backquote => "use `$( … )` for command substitution",
            Refusal::Escaped | Refusal::AfterDollar => {
                "write the `\\` or `$` elsewhere, or put it inside the expression"
            }
            Refusal::QuotedHeredoc => "use an unquoted delimiter (`<<EOF`)",
            Refusal::HeredocDelimiter | Refusal::Unclassified => {
                "pass the value in an `env:` variable and read it in the script: `\"$NAME\"`"
            }
            Refusal::DollarQuote => "use '…' or \"…\" around the substitution",
            Refusal::VariableName | Refusal::Subscript | Refusal::BashExpansion => {
                "pick the variable in the script and only use the value as data"
            }
            Refusal::Eval | Refusal::Alias | Refusal::Trap => {
                "run the command directly, with the value as an argument"
            }
            Refusal::ShellScript => {
                "pass the value as an argument of the inner shell: \
                 `sh -c 'echo \"$1\"' sh \"${{ inputs.x }}\"`"
            }
        }
    }
}

/// A warning about a program that may run an argument as code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caution {
    /// `ssh host cmd …` joins its arguments into a command line for the remote shell.
    RemoteShell,
    /// `python -c`, `perl -e`, `node -e`, …: the value becomes part of a program.
    Program(&'static str),
    /// `sed`, `awk`, `jq`: the value becomes part of their script.
    Script(&'static str),
    /// `psql -c`, `mysql -e`, `sqlite3`: the value becomes part of SQL.
    Sql(&'static str),
    /// `watch` runs its arguments through `sh -c`.
    Watch,
}

impl Caution {
    fn message(self) -> String {
        match self {
            Caution::RemoteShell => {
                "`ssh` joins its arguments into a command line for the remote shell, so the value \
                 is read as shell code there"
                    .into()
            }
            Caution::Program(name) => {
                format!("the value becomes part of the program `{name}` runs")
            }
            Caution::Script(name) => format!("the value becomes part of the `{name}` script"),
            Caution::Sql(name) => format!("the value becomes part of the SQL `{name}` runs"),
            Caution::Watch => "`watch` runs its arguments through `sh -c`".into(),
        }
    }

    fn help(self) -> String {
        match self {
            Caution::RemoteShell => {
                "quote it for the remote shell yourself (`printf %q`), or send it on stdin".into()
            }
            Caution::Program(_) => {
                "pass it as data: an argument the program reads (`sys.argv`, `ARGV`, \
                 `process.argv`) or an `env:` variable"
                    .into()
            }
            Caution::Script("jq") => {
                "pass it with `--arg name \"${{ … }}\"` and use `$name`".into()
            }
            Caution::Script(_) => "pass it with `-v name=…` (awk) or an `env:` variable".into(),
            Caution::Sql(_) => "pass it as a query parameter (`psql -v name=…`, `:'name'`)".into(),
            Caution::Watch => "run a script file with the value as its argument".into(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Unit {
    kind: Kind,
    /// Character offset in the script text.
    offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Char(char),
    Slot(usize),
}

/// What the scan found out, per substitution.
struct Report {
    /// Character offset and length of each substitution.
    spans: Vec<(usize, usize)>,
    placements: Vec<Option<Placement>>,
    refused: Vec<Option<Refusal>>,
    cautions: Vec<Option<Caution>>,
    /// Script-level doubts (an unterminated quote), as warnings.
    doubts: Vec<Finding>,
    /// `declare -i`, `typeset -i`, `local -i` somewhere in the script.
    integer_variables: bool,
    /// Substitutions in assignment values, refused once integer variables are seen.
    assigned: Vec<usize>,
}

impl Report {
    fn new(spans: Vec<(usize, usize)>) -> Report {
        let count = spans.len();
        Report {
            spans,
            placements: vec![None; count],
            refused: vec![None; count],
            cautions: vec![None; count],
            doubts: Vec::new(),
            integer_variables: false,
            assigned: Vec::new(),
        }
    }

    fn place(&mut self, slot: usize, placement: Placement) {
        if let Some(entry) = self.placements.get_mut(slot) {
            entry.get_or_insert(placement);
        }
    }

    fn refuse(&mut self, slot: usize, refusal: Refusal) {
        if let Some(entry) = self.refused.get_mut(slot) {
            entry.get_or_insert(refusal);
        }
    }

    fn caution(&mut self, slot: usize, caution: Caution) {
        if let Some(entry) = self.cautions.get_mut(slot) {
            entry.get_or_insert(caution);
        }
    }

    fn doubt(&mut self, offset: usize, message: impl Into<String>) {
        self.doubts.push(Finding {
            slot: None,
            offset,
            len: 1,
            message: message.into(),
            help: "the shell will probably refuse this script".into(),
        });
    }

    fn finish(mut self) -> Analysis {
        if self.integer_variables {
            for slot in std::mem::take(&mut self.assigned) {
                self.refuse(slot, Refusal::IntegerVariable);
            }
        }
        let mut analysis = Analysis { warnings: self.doubts, ..Analysis::default() };
        for (slot, &(offset, len)) in self.spans.iter().enumerate() {
            let refusal = self.refused[slot].or(match self.placements[slot] {
                None => Some(Refusal::Unclassified),
                Some(_) => None,
            });
            if let Some(refusal) = refusal {
                analysis.errors.push(Finding {
                    slot: Some(slot),
                    offset,
                    len,
                    message: refusal.message().into(),
                    help: refusal.help().into(),
                });
            } else if let Some(caution) = self.cautions[slot] {
                analysis.warnings.push(Finding {
                    slot: Some(slot),
                    offset,
                    len,
                    message: caution.message(),
                    help: caution.help(),
                });
            }
            analysis.placements.push(self.placements[slot].unwrap_or(Placement::Word));
        }
        analysis
    }
}

/// Where a list of commands ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    End,
    /// The `)` closing a `$(`.
    Paren,
}

/// How `$` expansions are read where they sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Unquoted,
    DoubleQuoted,
    Heredoc,
}

/// A word of a simple command, as far as the command rules need it.
#[derive(Debug, Clone, Default)]
struct Word {
    /// The literal text after quote removal; an expansion leaves a `\u{1}`.
    text: String,
    /// Substitutions in the word.
    slots: Vec<usize>,
    /// Substitutions before the first unquoted `=`.
    slots_before_eq: usize,
    /// Holds an unquoted `=`.
    has_eq: bool,
    /// Starts with `NAME=`: an assignment when it comes before the command name.
    assignment: bool,
    /// No quoting, expansion or substitution: the text is exactly what the shell sees.
    plain: bool,
    /// Some part was quoted (for here-document delimiters).
    quoted: bool,
}

impl Word {
    /// The word as a literal, if it is one (quotes removed, no expansion).
    fn literal(&self) -> Option<&str> {
        (self.slots.is_empty() && !self.text.contains('\u{1}')).then_some(self.text.as_str())
    }

    /// The program name a word would run (`/usr/bin/python3` → `python3`).
    fn program(&self) -> Option<&str> {
        self.literal().map(|text| text.rsplit('/').next().unwrap_or(text))
    }
}

/// A here-document whose body starts at the next newline.
struct Heredoc {
    delimiter: Option<Vec<char>>,
    quoted: bool,
    strip_tabs: bool,
}

/// `case WORD in PATTERN) … ;; esac`, tracked so that a pattern's `)` is not taken for the end
/// of a `$( )`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Subject,
    Patterns,
    Body,
}

struct Scanner {
    units: Vec<Unit>,
    pos: usize,
    report: Report,
    /// Set while scanning a place where every substitution is refused.
    refusing: Option<Refusal>,
    /// Inside `[[ … ]]`, where `&&`, `(`, `<` are operands.
    in_test: bool,
}

impl Scanner {
    fn peek(&self) -> Option<Kind> {
        self.units.get(self.pos).map(|unit| unit.kind)
    }

    fn peek_at(&self, ahead: usize) -> Option<Kind> {
        self.units.get(self.pos + ahead).map(|unit| unit.kind)
    }

    fn is(&self, c: char) -> bool {
        self.peek() == Some(Kind::Char(c))
    }

    fn is_at(&self, ahead: usize, c: char) -> bool {
        self.peek_at(ahead) == Some(Kind::Char(c))
    }

    fn offset(&self) -> usize {
        self.units.get(self.pos).or(self.units.last()).map_or(0, |unit| unit.offset)
    }

    fn bump(&mut self) -> Option<Kind> {
        let kind = self.peek()?;
        self.pos += 1;
        Some(kind)
    }

    /// A substitution met at `placement`, or refused while `refusing`.
    fn slot(&mut self, slot: usize, placement: Placement) {
        match self.refusing {
            Some(refusal) => self.report.refuse(slot, refusal),
            None => self.report.place(slot, placement),
        }
    }

    fn refusing<T>(&mut self, refusal: Refusal, scan: impl FnOnce(&mut Scanner) -> T) -> T {
        let saved = self.refusing;
        self.refusing = Some(saved.unwrap_or(refusal));
        let out = scan(self);
        self.refusing = saved;
        out
    }

    /// A list of commands, up to `until`. For [`Until::Paren`] the closing `)` is left to the
    /// caller.
    fn list(&mut self, until: Until) {
        let mut words: Vec<Word> = Vec::new();
        let mut heredocs: Vec<Heredoc> = Vec::new();
        let mut depth = 0usize;
        let mut cases: Vec<Case> = Vec::new();
        let mut not_a_command = false;
        loop {
            let Some(kind) = self.peek() else {
                if until == Until::Paren {
                    self.report.doubt(self.offset(), "`$(` is never closed with `)`");
                }
                break;
            };
            let start = words.is_empty();
            match kind {
                Kind::Char(' ' | '\t') => {
                    self.bump();
                }
                Kind::Char('\\') if self.is_at(1, '\n') => {
                    self.pos += 2;
                }
                Kind::Char('\n') => {
                    self.bump();
                    self.end_command(&mut words, &mut not_a_command);
                    for heredoc in std::mem::take(&mut heredocs) {
                        self.heredoc_body(&heredoc);
                    }
                }
                Kind::Char('#') => self.comment(),
                Kind::Char(c @ ('&' | '|' | '(' | ')' | '<' | '>')) if self.in_test => {
                    self.bump();
                    if self.is(c) && c != '(' && c != ')' {
                        self.bump();
                    }
                    words.push(Word { text: c.into(), plain: true, ..Word::default() });
                }
                Kind::Char(';') => {
                    self.bump();
                    // `;;`, `;&` and `;;&` end a case item.
                    let item_end = self.is(';') || self.is('&');
                    if item_end {
                        self.bump();
                        if self.is('&') {
                            self.bump();
                        }
                    }
                    self.end_command(&mut words, &mut not_a_command);
                    if item_end && cases.last() == Some(&Case::Body) {
                        cases.pop();
                        cases.push(Case::Patterns);
                    }
                }
                Kind::Char('&') => {
                    self.bump();
                    if self.is('&') || self.is('>') {
                        self.bump();
                    }
                    self.end_command(&mut words, &mut not_a_command);
                }
                Kind::Char('|') => {
                    self.bump();
                    if self.is('|') || self.is('&') {
                        self.bump();
                    }
                    // `a | b` in a case pattern separates alternatives.
                    if cases.last() != Some(&Case::Patterns) {
                        self.end_command(&mut words, &mut not_a_command);
                    }
                }
                Kind::Char('(') => {
                    if start && self.is_at(1, '(') && cases.last() != Some(&Case::Patterns) {
                        // bash's arithmetic command `(( … ))`.
                        self.pos += 2;
                        self.arithmetic_body();
                        self.end_command(&mut words, &mut not_a_command);
                    } else {
                        self.bump();
                        if cases.last() != Some(&Case::Patterns) {
                            depth += 1;
                            self.end_command(&mut words, &mut not_a_command);
                        }
                    }
                }
                Kind::Char(')') => {
                    if cases.last() == Some(&Case::Patterns) {
                        self.bump();
                        cases.pop();
                        cases.push(Case::Body);
                        words.clear();
                        continue;
                    }
                    if depth == 0 && until == Until::Paren {
                        break;
                    }
                    self.bump();
                    depth = depth.saturating_sub(1);
                    self.end_command(&mut words, &mut not_a_command);
                }
                Kind::Char('<' | '>') => self.redirection(&mut heredocs),
                Kind::Char(_) | Kind::Slot(_) => {
                    let word = self.word(start);
                    let literal = word.literal().map(str::to_owned);
                    match (literal.as_deref(), cases.last()) {
                        (Some("esac"), Some(Case::Patterns)) | (Some("esac"), Some(Case::Body))
                            if start || cases.last() == Some(&Case::Patterns) =>
                        {
                            cases.pop();
                            continue;
                        }
                        (Some("in"), Some(Case::Subject)) => {
                            cases.pop();
                            cases.push(Case::Patterns);
                            words.clear();
                            not_a_command = false;
                            continue;
                        }
                        (_, Some(Case::Patterns)) => continue,
                        _ => {}
                    }
                    if start && !not_a_command {
                        match literal.as_deref() {
                            Some(
                                "if" | "then" | "else" | "elif" | "fi" | "do" | "done" | "while"
                                | "until" | "!" | "{" | "}" | "time" | "function",
                            ) => continue,
                            Some("case") => {
                                cases.push(Case::Subject);
                                not_a_command = true;
                                continue;
                            }
                            Some("for" | "select") => not_a_command = true,
                            Some("[[") => self.in_test = true,
                            _ => {}
                        }
                    }
                    if self.in_test && literal.as_deref() == Some("]]") {
                        words.push(word);
                        self.end_command(&mut words, &mut not_a_command);
                        continue;
                    }
                    words.push(word);
                }
            }
        }
        self.end_command(&mut words, &mut not_a_command);
    }

    fn end_command(&mut self, words: &mut Vec<Word>, not_a_command: &mut bool) {
        self.in_test = false;
        if !std::mem::take(not_a_command) && !words.is_empty() {
            commands::check(&mut self.report, words, commands::Form::Script);
        }
        words.clear();
    }

    fn comment(&mut self) {
        while let Some(kind) = self.peek() {
            match kind {
                Kind::Char('\n') => break,
                Kind::Slot(slot) => self.slot(slot, Placement::Comment),
                Kind::Char(_) => {}
            }
            self.bump();
        }
    }

    /// `<`, `>`, `>>`, `<&`, `>&`, `<>`, `>|`, `<<`, `<<-`, `<<<`, then their target word.
    fn redirection(&mut self, heredocs: &mut Vec<Heredoc>) {
        let first = self.bump();
        if first == Some(Kind::Char('<')) && self.is('<') {
            self.bump();
            if self.is('<') {
                // bash's here-string: the word is data.
                self.bump();
            } else {
                let strip_tabs = self.is('-');
                if strip_tabs {
                    self.bump();
                }
                self.blanks();
                let start = self.offset();
                let word = self.word(false);
                for &slot in &word.slots {
                    self.report.refuse(slot, Refusal::HeredocDelimiter);
                }
                let delimiter = word.literal().map(|text| text.chars().collect());
                if word.text.is_empty() {
                    self.report.doubt(start, "a here-document needs a delimiter after `<<`");
                }
                heredocs.push(Heredoc { delimiter, quoted: word.quoted, strip_tabs });
                return;
            }
        } else if matches!(self.peek(), Some(Kind::Char('>' | '&' | '|'))) {
            self.bump();
        }
        self.blanks();
        // The target is an ordinary word (a file name, a descriptor); it is not a command word.
        let _ = self.word(false);
    }

    fn blanks(&mut self) {
        while self.is(' ') || self.is('\t') {
            self.bump();
        }
    }

    /// Reads a here-document body: lines up to the delimiter line.
    fn heredoc_body(&mut self, heredoc: &Heredoc) {
        loop {
            if self.peek().is_none() {
                return;
            }
            // Is this line the delimiter?
            let mut at = self.pos;
            if heredoc.strip_tabs {
                while self.units.get(at).is_some_and(|unit| unit.kind == Kind::Char('\t')) {
                    at += 1;
                }
            }
            if let Some(delimiter) = &heredoc.delimiter {
                let end = at + delimiter.len();
                let matches = self.units.get(at..end).is_some_and(|line| {
                    line.iter().zip(delimiter).all(|(unit, &c)| unit.kind == Kind::Char(c))
                });
                let line_ends =
                    self.units.get(end).is_none_or(|unit| unit.kind == Kind::Char('\n'));
                if matches && line_ends {
                    self.pos = (end + 1).min(self.units.len());
                    return;
                }
            }
            self.heredoc_line(heredoc.quoted);
        }
    }

    /// One line of a here-document body, up to and including its newline.
    fn heredoc_line(&mut self, quoted: bool) {
        while let Some(kind) = self.peek() {
            match kind {
                Kind::Char('\n') => {
                    self.bump();
                    return;
                }
                Kind::Slot(slot) if quoted => {
                    self.report.refuse(slot, Refusal::QuotedHeredoc);
                    self.bump();
                }
                _ if quoted => {
                    self.bump();
                }
                Kind::Slot(slot) => {
                    self.slot(slot, Placement::Quoted);
                    self.bump();
                }
                Kind::Char('\\') => {
                    self.bump();
                    match self.peek() {
                        Some(Kind::Slot(slot)) => {
                            self.report.refuse(slot, Refusal::Escaped);
                            self.bump();
                        }
                        // `\<newline>` joins lines; the newline is not the end of this one.
                        Some(Kind::Char('$' | '`' | '\\' | '\n')) => {
                            self.bump();
                        }
                        _ => {}
                    }
                }
                Kind::Char('$') => self.dollar(Context::Heredoc),
                Kind::Char('`') => self.backquote(),
                Kind::Char(_) => {
                    self.bump();
                }
            }
        }
    }

    /// One word, up to an unquoted blank, newline or operator. `command_start`: the word may be
    /// a command name or an assignment.
    fn word(&mut self, command_start: bool) -> Word {
        let mut word = Word { plain: true, ..Word::default() };
        let mut bracket = false;
        let mut first = true;
        while let Some(kind) = self.peek() {
            match kind {
                Kind::Char(' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')' | '<' | '>') => break,
                Kind::Slot(slot) => {
                    self.bump();
                    if bracket && !word.has_eq && command_start {
                        self.report.refuse(slot, Refusal::Subscript);
                    }
                    self.slot(slot, Placement::Word);
                    self.add_slot(&mut word, slot);
                }
                Kind::Char('\\') => {
                    self.bump();
                    word.plain = false;
                    word.quoted = true;
                    match self.bump() {
                        Some(Kind::Slot(slot)) => {
                            self.report.refuse(slot, Refusal::Escaped);
                            self.add_slot(&mut word, slot);
                        }
                        Some(Kind::Char('\n')) => {}
                        Some(Kind::Char(c)) => word.text.push(c),
                        None => {}
                    }
                }
                Kind::Char('\'') => {
                    word.plain = false;
                    word.quoted = true;
                    self.single_quoted(&mut word);
                }
                Kind::Char('"') => {
                    word.plain = false;
                    word.quoted = true;
                    self.double_quoted(&mut word);
                }
                Kind::Char('$') => {
                    word.plain = false;
                    let before = self.pos;
                    self.dollar(Context::Unquoted);
                    if self.pos == before + 1 {
                        word.text.push('$');
                    } else {
                        word.text.push('\u{1}');
                    }
                    self.collect_slots(before, &mut word);
                }
                Kind::Char('`') => {
                    word.plain = false;
                    let before = self.pos;
                    self.backquote();
                    word.text.push('\u{1}');
                    self.collect_slots(before, &mut word);
                }
                Kind::Char(c) => {
                    self.bump();
                    if c == '=' && !word.has_eq {
                        word.has_eq = true;
                        word.assignment = command_start && is_name(&word.text) && word.plain;
                    }
                    if c == '[' && first {
                        // `[[`, `[`: a test, not a subscript.
                    } else if c == '[' && is_name(&word.text) {
                        bracket = true;
                    } else if c == ']' {
                        bracket = false;
                    }
                    word.text.push(c);
                }
            }
            first = false;
        }
        word
    }

    fn add_slot(&mut self, word: &mut Word, slot: usize) {
        word.plain = false;
        word.text.push('\u{1}');
        word.slots.push(slot);
        if !word.has_eq {
            word.slots_before_eq += 1;
        }
    }

    /// Substitutions met between `from` and here belong to the word.
    fn collect_slots(&mut self, from: usize, word: &mut Word) {
        let slots: Vec<usize> = self.units[from..self.pos]
            .iter()
            .filter_map(|unit| match unit.kind {
                Kind::Slot(slot) => Some(slot),
                Kind::Char(_) => None,
            })
            .collect();
        for slot in slots {
            word.slots.push(slot);
            if !word.has_eq {
                word.slots_before_eq += 1;
            }
        }
    }

    fn single_quoted(&mut self, word: &mut Word) {
        let start = self.offset();
        self.bump();
        loop {
            match self.bump() {
                None => {
                    self.report.doubt(start, "`'` is never closed");
                    return;
                }
                Some(Kind::Char('\'')) => return,
                Some(Kind::Slot(slot)) => {
                    self.slot(slot, Placement::SingleQuoted);
                    word.slots.push(slot);
                    if !word.has_eq {
                        word.slots_before_eq += 1;
                    }
                    word.text.push('\u{1}');
                }
                Some(Kind::Char(c)) => word.text.push(c),
            }
        }
    }

    fn double_quoted(&mut self, word: &mut Word) {
        let start = self.offset();
        self.bump();
        loop {
            let Some(kind) = self.peek() else {
                self.report.doubt(start, "`\"` is never closed");
                return;
            };
            match kind {
                Kind::Char('"') => {
                    self.bump();
                    return;
                }
                Kind::Char('\\') => {
                    self.bump();
                    match self.peek() {
                        Some(Kind::Slot(slot)) => {
                            self.report.refuse(slot, Refusal::Escaped);
                            self.bump();
                            word.slots.push(slot);
                        }
                        Some(Kind::Char(c @ ('$' | '`' | '"' | '\\'))) => {
                            self.bump();
                            word.text.push(c);
                        }
                        Some(Kind::Char('\n')) => {
                            self.bump();
                        }
                        _ => word.text.push('\\'),
                    }
                }
                Kind::Char('$') => {
                    let before = self.pos;
                    self.dollar(Context::DoubleQuoted);
                    if self.pos == before + 1 {
                        word.text.push('$');
                    } else {
                        word.text.push('\u{1}');
                    }
                    self.collect_slots(before, word);
                }
                Kind::Char('`') => {
                    let before = self.pos;
                    self.backquote();
                    word.text.push('\u{1}');
                    self.collect_slots(before, word);
                }
                Kind::Slot(slot) => {
                    self.bump();
                    self.slot(slot, Placement::Quoted);
                    word.slots.push(slot);
                    if !word.has_eq {
                        word.slots_before_eq += 1;
                    }
                    word.text.push('\u{1}');
                }
                Kind::Char(c) => {
                    self.bump();
                    word.text.push(c);
                }
            }
        }
    }

    fn backquote(&mut self) {
        let start = self.offset();
        self.bump();
        self.refusing(Refusal::Backquote, |scanner| {
            loop {
                match scanner.bump() {
                    None => {
                        scanner.report.doubt(start, "`` ` `` is never closed");
                        return;
                    }
                    Some(Kind::Char('`')) => return,
                    Some(Kind::Char('\\')) => {
                        if let Some(Kind::Slot(slot)) = scanner.bump() {
                            scanner.slot(slot, Placement::Word);
                        }
                    }
                    Some(Kind::Slot(slot)) => scanner.slot(slot, Placement::Word),
                    Some(Kind::Char(_)) => {}
                }
            }
        });
    }

    /// A `$` and what follows it.
    fn dollar(&mut self, context: Context) {
        self.bump();
        match self.peek() {
            Some(Kind::Char('{')) => self.parameter(context),
            Some(Kind::Char('(')) if self.is_at(1, '(') => {
                self.pos += 2;
                self.arithmetic_body();
            }
            Some(Kind::Char('(')) => {
                let start = self.offset();
                self.bump();
                // A command substitution is a script of its own: quoting starts afresh inside.
                let in_test = std::mem::take(&mut self.in_test);
                self.list(Until::Paren);
                self.in_test = in_test;
                if self.is(')') {
                    self.bump();
                } else if self.peek().is_some() {
                    self.report.doubt(start, "`$(` is never closed with `)`");
                }
            }
            Some(Kind::Char('[')) => {
                // bash's old arithmetic `$[ … ]`.
                self.bump();
                self.refusing(Refusal::Arithmetic, |scanner| scanner.until_bracket());
            }
            Some(Kind::Char('\'')) if context == Context::Unquoted => {
                self.bump();
                self.refusing(Refusal::DollarQuote, |scanner| {
                    while let Some(kind) = scanner.bump() {
                        match kind {
                            Kind::Char('\'') => return,
                            Kind::Char('\\') => {
                                if let Some(Kind::Slot(slot)) = scanner.bump() {
                                    scanner.slot(slot, Placement::Word);
                                }
                            }
                            Kind::Slot(slot) => scanner.slot(slot, Placement::Word),
                            Kind::Char(_) => {}
                        }
                    }
                });
            }
            Some(Kind::Char('"')) if context == Context::Unquoted => {
                self.refusing(Refusal::DollarQuote, |scanner| {
                    scanner.double_quoted(&mut Word::default());
                });
            }
            Some(Kind::Slot(slot)) => {
                self.bump();
                self.report.refuse(slot, Refusal::AfterDollar);
            }
            Some(Kind::Char(c)) if c.is_ascii_alphabetic() || c == '_' => {
                while matches!(self.peek(), Some(Kind::Char(c)) if c.is_ascii_alphanumeric() || c == '_')
                {
                    self.bump();
                }
            }
            Some(Kind::Char(c)) if c.is_ascii_digit() || "@*#?$!-".contains(c) => {
                self.bump();
            }
            _ => {}
        }
    }

    /// Up to the `]` matching an opened `[`.
    fn until_bracket(&mut self) {
        self.balanced('[', ']');
    }

    /// The inside of `$(( … ))` or `(( … ))`, after the two parentheses.
    fn arithmetic_body(&mut self) {
        let start = self.offset();
        self.refusing(Refusal::Arithmetic, |scanner| {
            if !scanner.balanced('(', ')') {
                scanner.report.doubt(start, "`((` is never closed with `))`");
            } else if scanner.is(')') {
                scanner.bump();
            }
        });
    }

    /// Up to and past the `close` that matches, over nested `open … close` pairs, quotes and
    /// expansions; a substitution there is placed as in a word. Whether `close` was found.
    fn balanced(&mut self, open: char, close: char) -> bool {
        let mut depth = 0usize;
        while let Some(kind) = self.peek() {
            match kind {
                Kind::Char(c) if c == close && depth == 0 => {
                    self.bump();
                    return true;
                }
                Kind::Char(c) if c == close => depth -= 1,
                Kind::Char(c) if c == open => depth += 1,
                Kind::Char('$') => {
                    self.dollar(Context::DoubleQuoted);
                    continue;
                }
                Kind::Char('"') => {
                    self.double_quoted(&mut Word::default());
                    continue;
                }
                Kind::Char('\'') => {
                    self.single_quoted(&mut Word::default());
                    continue;
                }
                Kind::Char('`') => {
                    self.backquote();
                    continue;
                }
                Kind::Slot(slot) => self.slot(slot, Placement::Word),
                Kind::Char(_) => {}
            }
            self.bump();
        }
        false
    }

    /// `${ … }`, after the `$`.
    fn parameter(&mut self, context: Context) {
        let start = self.offset();
        self.bump();
        // `${#name}` (length) and bash's `${!name}` (indirection) prefixes.
        if (self.is('#') || self.is('!'))
            && matches!(self.peek_at(1), Some(Kind::Char(c)) if c.is_ascii_alphanumeric() || c == '_')
        {
            self.bump();
        }
        match self.peek() {
            Some(Kind::Slot(slot)) => {
                self.bump();
                self.report.refuse(slot, Refusal::VariableName);
            }
            Some(Kind::Char(c)) if c.is_ascii_alphabetic() || c == '_' => {
                while matches!(self.peek(), Some(Kind::Char(c)) if c.is_ascii_alphanumeric() || c == '_')
                {
                    self.bump();
                }
            }
            Some(Kind::Char(c)) if c.is_ascii_digit() => {
                while matches!(self.peek(), Some(Kind::Char(c)) if c.is_ascii_digit()) {
                    self.bump();
                }
            }
            Some(Kind::Char(c)) if "@*#?$!-".contains(c) => {
                self.bump();
            }
            _ => {}
        }
        if self.is('[') {
            self.bump();
            self.refusing(Refusal::Subscript, |scanner| scanner.until_bracket());
        }
        let pattern = match self.peek() {
            Some(Kind::Char('}')) => {
                self.bump();
                return;
            }
            Some(Kind::Char(':'))
                if matches!(self.peek_at(1), Some(Kind::Char('-' | '=' | '?' | '+'))) =>
            {
                self.pos += 2;
                Some(false)
            }
            Some(Kind::Char('-' | '=' | '?' | '+')) => {
                self.bump();
                Some(false)
            }
            Some(Kind::Char(c @ ('#' | '%'))) => {
                self.bump();
                if self.is(c) {
                    self.bump();
                }
                Some(true)
            }
            // `${x:1:2}`, `${x/a/b}`, `${x^^}`, `${x,,}`, `${x@Q}`: bash only, partly arithmetic.
            Some(Kind::Char(':' | '/' | '^' | ',' | '@')) => {
                self.bump();
                None
            }
            _ => None,
        };
        match pattern {
            Some(pattern) => self.parameter_word(context, pattern, start),
            None => self.refusing(Refusal::BashExpansion, |scanner| {
                scanner.parameter_word(context, false, start)
            }),
        }
    }

    /// The word of `${name:-word}` and friends, up to the closing `}`.
    fn parameter_word(&mut self, context: Context, pattern: bool, start: usize) {
        loop {
            let Some(kind) = self.peek() else {
                self.report.doubt(start, "`${` is never closed with `}`");
                return;
            };
            match kind {
                Kind::Char('}') => {
                    self.bump();
                    return;
                }
                Kind::Char('\\') => {
                    self.bump();
                    if let Some(Kind::Slot(slot)) = self.bump() {
                        self.report.refuse(slot, Refusal::Escaped);
                    }
                }
                Kind::Char('$') => {
                    let inner =
                        if context == Context::Unquoted { context } else { Context::DoubleQuoted };
                    self.dollar(inner);
                }
                Kind::Char('`') => self.backquote(),
                Kind::Char('"') => self.double_quoted(&mut Word::default()),
                Kind::Char('\'') if context == Context::Unquoted => {
                    self.single_quoted(&mut Word::default())
                }
                Kind::Slot(slot) => {
                    self.bump();
                    // A quoted pattern matches literally; elsewhere inside "…" the reference
                    // is already quoted.
                    let placement = if context == Context::Unquoted || pattern {
                        Placement::Word
                    } else {
                        Placement::Quoted
                    };
                    self.slot(slot, placement);
                }
                Kind::Char(_) => {
                    self.bump();
                }
            }
        }
    }
}

/// A shell variable name.
fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The rules about commands that run an argument as code.
mod commands {
    use super::{Caution, Refusal, Report, Word};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Form {
        /// A simple command of a script: shell builtins count.
        Script,
        /// The list form of `run`: only programs count.
        Argv,
    }

    const SHELLS: &[&str] =
        &["sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "ash", "yash", "posh", "busybox"];

    /// Commands that run the rest of their arguments as another command.
    const WRAPPERS: &[&str] = &[
        "command", "builtin", "exec", "nohup", "time", "nice", "ionice", "chrt", "taskset",
        "stdbuf", "setsid", "env", "sudo", "doas", "xargs", "timeout", "unbuffer", "chroot",
    ];

    pub(super) fn check(report: &mut Report, words: &[Word], form: Form) {
        let mut at = 0;
        if form == Form::Script {
            while words.get(at).is_some_and(|word| word.assignment) {
                for &slot in &words[at].slots {
                    report.assigned.push(slot);
                }
                at += 1;
            }
        }
        // Skip wrappers and their options: the command they run is what matters.
        while let Some(name) = words.get(at).and_then(Word::program) {
            if !WRAPPERS.contains(&name) {
                break;
            }
            at += 1;
            let takes_value = name == "timeout" || name == "chroot";
            while let Some(word) = words.get(at) {
                let option = word.literal().is_some_and(|text| text.starts_with('-'));
                let variable = name == "env" && word.has_eq && word.slots_before_eq == 0;
                if !(option || variable) {
                    break;
                }
                at += 1;
            }
            if takes_value {
                at += 1;
            }
        }
        // Shells may appear further in (`find . -exec sh -c …`, `docker exec c sh -c …`).
        for start in at..words.len() {
            if words[start].program().is_some_and(|name| SHELLS.contains(&name)) {
                shell(report, &words[start + 1..]);
            }
        }
        let Some(name) = words.get(at).and_then(Word::program) else { return };
        let args = &words[at + 1..];
        match (form, name) {
            (Form::Script, "eval") => refuse_all(report, args, Refusal::Eval),
            (Form::Script, "alias") => refuse_all(report, args, Refusal::Alias),
            (Form::Script, "let") => refuse_all(report, args, Refusal::Arithmetic),
            (Form::Script, "trap") => {
                if let Some(word) = operands(args).next() {
                    refuse_word(report, word, Refusal::Trap);
                }
            }
            (Form::Script, "declare" | "typeset" | "local" | "export" | "readonly") => {
                declarations(report, args)
            }
            (Form::Script, "unset") => refuse_all(report, args, Refusal::VariableName),
            (Form::Script, "read") => read(report, args),
            (Form::Script, "getopts") => {
                // `getopts OPTSTRING NAME [ARG…]`: only NAME names a variable.
                if let Some(word) = operands(args).nth(1) {
                    refuse_word(report, word, Refusal::VariableName);
                }
            }
            (Form::Script, "printf") => after_option(report, args, &["-v"], Refusal::VariableName),
            (Form::Script, "test" | "[") => {
                after_option(report, args, &["-v"], Refusal::VariableName)
            }
            (Form::Script, "[[") => {
                let arithmetic = args.iter().any(|word| {
                    matches!(word.literal(), Some("-eq" | "-ne" | "-lt" | "-le" | "-gt" | "-ge"))
                });
                if arithmetic {
                    refuse_all(report, args, Refusal::ArithmeticTest);
                }
            }
            (_, "su" | "runuser") => {
                after_option(report, args, &["-c", "--command"], Refusal::ShellScript)
            }
            (_, "ssh") => {
                for word in args {
                    caution_word(report, word, Caution::RemoteShell);
                }
            }
            (_, "watch") => {
                for word in args {
                    caution_word(report, word, Caution::Watch);
                }
            }
            (_, program) => interpreters(report, program, args),
        }
    }

    /// `sh [options] -c SCRIPT [name [args…]]`: the script is the first operand.
    fn shell(report: &mut Report, args: &[Word]) {
        let mut command_string = false;
        let mut value_next = false;
        for word in args {
            if std::mem::take(&mut value_next) {
                continue;
            }
            match word.literal() {
                // Options that take a value: `-o pipefail`, `--rcfile FILE`.
                Some("-o" | "+o" | "-O" | "+O" | "--rcfile" | "--init-file") => value_next = true,
                Some(text)
                    if (text.starts_with('-') || text.starts_with('+'))
                        && text != "-"
                        && text != "--" =>
                {
                    if !text.starts_with("--") && text[1..].contains('c') {
                        command_string = true;
                    }
                }
                Some("--") => {}
                _ => {
                    if command_string {
                        refuse_word(report, word, Refusal::ShellScript);
                    }
                    return;
                }
            }
        }
    }

    /// `read [-p PROMPT] [-d DELIM] … NAME…`: the names are variable names, the option values
    /// are data.
    fn read(report: &mut Report, args: &[Word]) {
        let mut value_next = false;
        for word in args {
            if std::mem::take(&mut value_next) {
                continue;
            }
            match word.literal() {
                Some("-p" | "-d" | "-t" | "-n" | "-N" | "-u" | "-i") => value_next = true,
                Some(text) if text.starts_with('-') => {}
                _ => refuse_word(report, word, Refusal::VariableName),
            }
        }
    }

    fn declarations(report: &mut Report, args: &[Word]) {
        let mut integer = false;
        for word in args {
            if let Some(text) = word.literal()
                && text.starts_with('-')
            {
                integer |= text.contains('i');
                continue;
            }
            if word.slots.is_empty() {
                continue;
            }
            if !word.has_eq || word.slots_before_eq > 0 {
                refuse_word(report, word, Refusal::VariableName);
            } else if integer {
                refuse_word(report, word, Refusal::IntegerVariable);
            } else {
                report.assigned.extend(&word.slots);
            }
        }
        if integer {
            report.integer_variables = true;
        }
    }

    fn interpreters(report: &mut Report, program: &str, args: &[Word]) {
        let name = program.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
        match name {
            "python" | "pypy" | "perl" | "ruby" | "node" | "nodejs" | "php" | "lua" | "luajit"
            | "Rscript" | "deno" | "bun" | "osascript" | "pwsh" | "powershell" => {
                let code_options = ["-c", "-e", "-E", "-r", "--eval", "--command", "-p", "--print"];
                let caution = Caution::Program(static_name(name));
                let mut code_next = false;
                for word in args {
                    if code_next {
                        caution_word(report, word, caution);
                        code_next = false;
                        continue;
                    }
                    if let Some(text) = word.literal()
                        && code_options.contains(&text)
                    {
                        code_next = true;
                    }
                }
            }
            "awk" | "gawk" | "mawk" | "nawk" | "sed" | "gsed" | "jq" | "yq" => {
                let caution = Caution::Script(static_name(name));
                // The script is the argument of `-e`/`-f`… or else the first operand.
                let mut script_next = false;
                let mut seen_script = false;
                let mut value_next = false;
                for word in args {
                    if script_next {
                        caution_word(report, word, caution);
                        script_next = false;
                        seen_script = true;
                        continue;
                    }
                    if value_next {
                        value_next = false;
                        continue;
                    }
                    match word.literal() {
                        Some("-e" | "--expression") => script_next = true,
                        Some("-f" | "--file") => seen_script = true,
                        Some("-v" | "--arg" | "--argjson" | "-F" | "-i") if name != "sed" => {
                            value_next = true
                        }
                        Some(text) if text.starts_with('-') => {}
                        _ if !seen_script => {
                            caution_word(report, word, caution);
                            seen_script = true;
                        }
                        _ => {}
                    }
                }
            }
            "psql" => after_caution(report, args, &["-c", "--command"], Caution::Sql("psql")),
            "mysql" | "mariadb" => {
                after_caution(report, args, &["-e", "--execute"], Caution::Sql("mysql"))
            }
            "sqlite" => {
                // `sqlite3 [options] FILE [SQL]`.
                let sql = operands(args).nth(1);
                if let Some(word) = sql {
                    caution_word(report, word, Caution::Sql("sqlite3"));
                }
            }
            _ => {}
        }
    }

    fn static_name(name: &str) -> &'static str {
        const NAMES: &[&str] = &[
            "python",
            "pypy",
            "perl",
            "ruby",
            "node",
            "nodejs",
            "php",
            "lua",
            "luajit",
            "Rscript",
            "deno",
            "bun",
            "osascript",
            "pwsh",
            "powershell",
            "awk",
            "gawk",
            "mawk",
            "nawk",
            "sed",
            "gsed",
            "jq",
            "yq",
        ];
        NAMES.iter().find(|known| **known == name).copied().unwrap_or("the program")
    }

    /// Arguments that are not options.
    fn operands(args: &[Word]) -> impl Iterator<Item = &Word> {
        args.iter().filter(|word| !word.literal().is_some_and(|text| text.starts_with('-')))
    }

    /// The word after one of `options` (or `--option=VALUE`).
    fn after_option(report: &mut Report, args: &[Word], options: &[&str], refusal: Refusal) {
        let mut next = false;
        for word in args {
            if next {
                refuse_word(report, word, refusal);
                next = false;
                continue;
            }
            if let Some(text) = word.text.split('=').next()
                && options.contains(&text)
            {
                if word.has_eq {
                    refuse_word(report, word, refusal);
                } else {
                    next = true;
                }
            }
        }
    }

    fn after_caution(report: &mut Report, args: &[Word], options: &[&str], caution: Caution) {
        let mut next = false;
        for word in args {
            if next {
                caution_word(report, word, caution);
                next = false;
                continue;
            }
            if let Some(text) = word.text.split('=').next()
                && options.contains(&text)
            {
                if word.has_eq {
                    caution_word(report, word, caution);
                } else {
                    next = true;
                }
            }
        }
    }

    fn refuse_all(report: &mut Report, words: &[Word], refusal: Refusal) {
        for word in words {
            refuse_word(report, word, refusal);
        }
    }

    fn refuse_word(report: &mut Report, word: &Word, refusal: Refusal) {
        for &slot in &word.slots {
            report.refuse(slot, refusal);
        }
    }

    fn caution_word(report: &mut Report, word: &Word, caution: Caution) {
        for &slot in &word.slots {
            report.caution(slot, caution);
        }
    }
}

/// The environment variables that carry substituted values are named this, then a number.
pub const VALUE_VARIABLE: &str = "WAYLINE_VALUE_";

/// Linux's limit for one environment string (`MAX_ARG_STRLEN`: `NAME=value` and its NUL).
pub const MAX_VALUE_BYTES: usize = 128 * 1024;

/// A `run` script and where each of its substitutions goes; built by validation, so every
/// substitution has a safe place.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    template: Template,
    placements: Vec<Placement>,
}

/// A script ready to run: the text has references, `values` the variables they name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub script: String,
    pub values: Vec<(String, String)>,
}

impl Script {
    /// `placements` has one entry per expression of `template`, from [`analyse_script`] on the
    /// template's text, with no error.
    pub(crate) fn new(template: Template, placements: Vec<Placement>) -> Script {
        Script { template, placements }
    }

    pub fn template(&self) -> &Template {
        &self.template
    }

    /// Evaluates the substitutions and writes the script with references to them. Equal
    /// expressions share one variable.
    ///
    /// ```
    /// # use std::borrow::Cow; use serde_json::{json, Value};
    /// # use wayline_lang::expr::Scope;
    /// # struct S; impl Scope for S {
    /// #   fn inputs(&self) -> Cow<'_, Value> { Cow::Owned(json!({"x": "a'; rm -rf / #"})) }
    /// #   fn step(&self, _: &str) -> Option<Value> { None }
    /// #   fn env(&self) -> Cow<'_, Value> { Cow::Owned(json!({})) }
    /// #   fn secret(&self, _: &str) -> Option<String> { None }
    /// #   fn execution(&self) -> Value { json!({}) }
    /// #   fn workflow_name(&self) -> &str { "w" } }
    /// let loaded = wayline_lang::load(
    ///     "name: w\ninputs: { x: { type: string } }\nsteps:\n  - id: a\n    run: echo ${{ inputs.x }} \"v=${{ inputs.x }}\"\n",
    /// );
    /// let workflow = loaded.workflow.unwrap();
    /// let wayline_lang::model::Body::Run(command) = &workflow.steps[0].body else { panic!() };
    /// let wayline_lang::model::Program::Shell(script) = &command.program else { panic!() };
    /// let rendered = script.render(&S).unwrap();
    /// assert_eq!(rendered.script, r#"echo "${WAYLINE_VALUE_1}" "v=${WAYLINE_VALUE_1}""#);
    /// assert_eq!(rendered.values, [("WAYLINE_VALUE_1".to_owned(), "a'; rm -rf / #".to_owned())]);
    /// ```
    pub fn render(&self, scope: &dyn Scope) -> Result<Rendered, EvalError> {
        // One budget for the whole script, as for any template.
        let mut meter = crate::eval::Meter::default();
        let mut script = String::new();
        let mut values: Vec<(String, String)> = Vec::new();
        let mut sources: Vec<&str> = Vec::new();
        let mut slot = 0;
        for part in self.template.parts() {
            let expression = match part {
                Part::Text(text) => {
                    script.push_str(text);
                    continue;
                }
                Part::Expr(expression, _) => expression,
            };
            let placement = self.placements.get(slot).copied().unwrap_or(Placement::Word);
            slot += 1;
            if placement == Placement::Comment {
                continue;
            }
            let number = match sources.iter().position(|source| *source == expression.source()) {
                Some(index) => index + 1,
                None => {
                    let value =
                        crate::expr::to_text(&expression.evaluate_metered(scope, &mut meter)?);
                    let name = format!("{VALUE_VARIABLE}{}", values.len() + 1);
                    check_value(expression, &name, &value)?;
                    values.push((name, value));
                    sources.push(expression.source());
                    values.len()
                }
            };
            let name = format!("{VALUE_VARIABLE}{number}");
            match placement {
                Placement::Word => script.push_str(&format!("\"${{{name}}}\"")),
                Placement::Quoted => script.push_str(&format!("${{{name}}}")),
                Placement::SingleQuoted => script.push_str(&format!("'\"${{{name}}}\"'")),
                Placement::Comment => {}
            }
        }
        Ok(Rendered { script, values })
    }
}

/// A value must fit in one environment variable.
fn check_value(expression: &Expression, name: &str, value: &str) -> Result<(), EvalError> {
    if value.contains('\0') {
        return Err(EvalError {
            message: format!(
                "`{}`: the value contains a NUL byte, which a command cannot be given",
                expression.source()
            ),
        });
    }
    // `NAME=value` and the terminating NUL.
    let size = name.len() + 1 + value.len() + 1;
    if size > MAX_VALUE_BYTES {
        return Err(EvalError {
            message: format!(
                "`{}`: the value is {} bytes; a value substituted into a command is limited to \
                 {} KiB (Linux's limit for one environment variable); write it to a file in an \
                 earlier step and read the file instead",
                expression.source(),
                value.len(),
                MAX_VALUE_BYTES / 1024
            ),
        });
    }
    Ok(())
}
