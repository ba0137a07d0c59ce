//! `wayline cancel`: running steps are stopped, nothing new starts; with `--rollback`, the
//! succeeded steps are compensated.

use wayline_core::execution::Control;

use crate::error::{Exit, Result};
use crate::remote::Target;
use crate::request;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Execution id (any unique prefix).
    id: String,
    /// Run the compensations of the succeeded steps.
    #[arg(long)]
    rollback: bool,
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

pub fn exec(args: Args) -> Result<Exit> {
    let control = Control::Cancel { actor: request::actor(args.reason), rollback: args.rollback };
    request::dispatch(&args.target, &args.id, control)
}
