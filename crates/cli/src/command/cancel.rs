//! `wayline cancel`: running steps are stopped, nothing new starts; with `--rollback`, the
//! succeeded steps are compensated.

use wayline_backend::Location;
use wayline_core::execution::Control;

use super::Db;
use crate::error::{Exit, Result};
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
    pub db: Db,
}

pub async fn exec(args: Args, location: Location) -> Result<Exit> {
    let control = Control::Cancel { actor: request::actor(args.reason), rollback: args.rollback };
    request::send(&location, &args.id, control).await
}
