//! `wayline decide`: what happens to an escalated step — retry, skip (optionally with
//! outputs), rollback or fail.

use wayline_core::execution::Control;
use wayline_journal::Decision;

use crate::error::{Error, Exit, Result};
use crate::remote::Target;
use crate::request;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Execution id (any unique prefix).
    id: String,
    /// The escalated step.
    step: String,
    #[arg(value_name = "retry|skip|rollback|fail")]
    action: String,
    /// With `skip`: outputs the step gets (`key=value`, value as JSON when it parses).
    #[arg(long = "output", value_name = "KEY=VALUE")]
    outputs: Vec<String>,
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

pub fn exec(args: Args) -> Result<Exit> {
    let decision = Decision::parse(&args.action).ok_or_else(|| {
        Error::invalid(format!(
            "`{}` is not a decision; use retry, skip, rollback or fail",
            args.action
        ))
    })?;
    let outputs = request::parse_outputs(&args.outputs)?;
    let actor = request::actor(args.reason);
    let control = Control::Decide { step: args.step, decision, outputs, actor };
    request::dispatch(&args.target, &args.id, control)
}
