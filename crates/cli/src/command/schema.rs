//! `wayline schema`: the JSON Schema of the workflow format, generated from the tables
//! validation uses.

use crate::error::{Exit, Result};

pub fn exec() -> Result<Exit> {
    outln!("{}", serde_json::to_string_pretty(&wayline_lang::schema::schema())?)?;
    Ok(Exit::Success)
}
