//! `wayline pause`: running steps finish, nothing new starts until `resume` (or `--until`).

use wayline_core::execution::Control;
use wayline_runtime::clock::Clock;

use crate::error::{Exit, Result};
use crate::remote::Target;
use crate::request;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Execution id (any unique prefix).
    id: String,
    /// Resume by itself at this time (RFC 3339) or after this long (`30m`).
    #[arg(long, value_name = "WHEN")]
    until: Option<String>,
    /// Not now: pause before this step starts, a breakpoint (repeatable, or comma-separated).
    #[arg(long, value_name = "STEP", value_delimiter = ',', conflicts_with = "until")]
    before: Vec<String>,
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

pub fn exec(args: Args) -> Result<Exit> {
    if !args.before.is_empty() {
        let control =
            Control::Break { steps: args.before, every: false, actor: request::actor(args.reason) };
        return request::dispatch(&args.target, &args.id, control);
    }
    let until = match &args.until {
        Some(text) => Some(request::parse_until(text, Clock::system().now())?),
        None => None,
    };
    let control = Control::Pause { actor: request::actor(args.reason), until };
    request::dispatch(&args.target, &args.id, control)
}
