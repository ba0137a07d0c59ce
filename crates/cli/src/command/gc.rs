//! `wayline gc`: delete finished executions older than a duration, with their events and logs.

use wayline_backend::Location;
use wayline_journal::Time;
use wayline_runtime::clock::Clock;
use wayline_store::Store;

use super::Db;
use crate::error::{Error, Exit, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value = "7d", value_name = "DURATION")]
    older_than: String,
    #[command(flatten)]
    pub db: Db,
}

pub async fn exec(args: Args, location: Location) -> Result<Exit> {
    let older_than = &args.older_than;
    let age = wayline_journal::duration::parse(older_than)
        .map_err(|error| Error::invalid(format!("--older-than: {error}")))?;
    let store = wayline_backend::open(&location).await?;
    let before = Time::from_micros(Clock::system().now().as_micros() - age.as_micros() as i64);
    let removed = store.gc(before).await?;
    say!(
        "wayline: removed {removed} finished execution{} older than {older_than}",
        if removed == 1 { "" } else { "s" }
    );
    Ok(Exit::Success)
}
