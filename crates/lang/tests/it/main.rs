//! wayline-lang's integration tests, in one binary so the crate links its tests once: invalid
//! and warned-about fixtures against snapshots of their diagnostics, every example, property
//! tests, substituted values against a real shell, and the expression evaluator against the
//! `cel` crate's interpreter.

mod eval;
mod examples;
mod imports;
mod invalid;
mod properties;
mod shell;
mod warnings;

use std::path::{Path, PathBuf};

/// A path under the crate directory, so tests run the same from any working directory.
fn crate_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Every diagnostic of `text`, rendered exactly as `wayline validate` prints it.
fn render(name: &str, text: &str) -> String {
    wayline_lang::load(text).diagnostics.iter().map(|d| d.render(name, text)).collect()
}
