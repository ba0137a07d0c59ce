//! `wayline step`: at a breakpoint, let the next ready steps start; the execution pauses again
//! before the ones after them, once they finished.

use wayline_core::execution::Control;

use crate::error::{Exit, Result};
use crate::remote::Target;
use crate::request;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Execution id (any unique prefix).
    id: String,
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

pub fn exec(args: Args) -> Result<Exit> {
    request::dispatch(&args.target, &args.id, Control::Step { actor: request::actor(args.reason) })
}
