//! `wayline token create|list|revoke`: the API tokens of the servers on a database, managed
//! on the database itself (whoever can write it administers its servers).

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::PathBuf;

use wayline_runtime::clock::Clock;
use wayline_server::tokens::{self, Role};
use wayline_store::Store;

use super::{Db, block_on};
use crate::error::{Error, Exit, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    pub db: Db,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Make a token and print it (it is shown this once; only its hash is stored).
    Create {
        /// The token's name: what the events it causes record as their actor.
        name: String,
        /// What it may do: read (GET), operate (read + start and steer executions), admin
        /// (everything), agent (the agent endpoints only).
        #[arg(long, value_parser = ["read", "operate", "admin", "agent"])]
        role: String,
        /// Make it stop working after this long (`90d`, `12h`).
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// List the tokens: name, role, creation and expiry (never the tokens themselves).
    List {
        /// One JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Delete a token; requests that carry it are refused from then on.
    Revoke {
        /// The token's name.
        name: String,
    },
}

pub fn exec(args: Args) -> Result<Exit> {
    let location = args.db.location()?;
    let named = location.clone();
    block_on(async move {
        let store = wayline_backend::open(&location).await?;
        match args.action {
            Action::Create { name, role, expires } => {
                let role = Role::parse(&role).ok_or_else(|| Error::invalid("unknown role"))?;
                let now = Clock::system().now();
                let expires_at = match expires {
                    None => None,
                    Some(text) => {
                        Some(now.after(wayline_journal::duration::parse(&text).map_err(|_| {
                            Error::invalid(format!("`--expires {text}`: give a duration like 90d"))
                        })?))
                    }
                };
                let issued = tokens::issue(&name, role, now, expires_at).map_err(Error::invalid)?;
                store.add_token(issued.record).await.map_err(|error| match error {
                    wayline_store::Error::Exists(_) => {
                        Error::invalid(format!("a token named `{name}` exists; revoke it first"))
                    }
                    other => other.into(),
                })?;
                outln!("{}", issued.token)?;
            }
            Action::List { json } => {
                let tokens = store.tokens().await?;
                if json {
                    outln!("{}", serde_json::to_string_pretty(&tokens)?)?;
                } else {
                    for token in tokens {
                        let expires = token.expires_at.map_or("never".into(), |t| t.rfc3339());
                        outln!(
                            "{:<24} {:<8} created {}  expires {expires}",
                            token.name,
                            token.role,
                            token.created_at.rfc3339()
                        )?;
                    }
                }
            }
            Action::Revoke { name } => {
                if !store.revoke_token(&name).await? {
                    return Err(Error::invalid(format!("there is no token named `{name}`")));
                }
                say!("wayline: token `{name}` revoked");
            }
        }
        Ok(Exit::Success)
    })
    .map_err(|error| error.located(&named))
}

/// Where the server leaves the token it makes on first start, for the local CLI:
/// `$XDG_CONFIG_HOME/wayline/token` (`~/.config/wayline/token`).
pub fn token_file() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .map(|dir| dir.join("wayline").join("token"))
}

/// On a database with no token yet, makes an `admin` token named `admin` and writes it to
/// [`token_file`] (0600, its directory 0700); returns the file's path when it did.
pub async fn bootstrap<S: Store>(store: &S) -> Result<Option<PathBuf>> {
    if !store.tokens().await?.is_empty() {
        return Ok(None);
    }
    let path = token_file().ok_or_else(|| {
        Error::invalid("neither XDG_CONFIG_HOME nor HOME is set: nowhere to put the first token")
    })?;
    let issued = tokens::issue("admin", Role::Admin, Clock::system().now(), None)
        .map_err(Error::infrastructure)?;
    match store.add_token(issued.record).await {
        Ok(()) => {}
        // Another server on the database made one first.
        Err(wayline_store::Error::Exists(_)) => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let written = (|| -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        writeln!(file, "{}", issued.token)
    })();
    if let Err(error) = written {
        // A token nobody can read would keep the next start from making one.
        let _ = store.revoke_token("admin").await;
        return Err(Error::infrastructure(format!("cannot write {}: {error}", path.display())));
    }
    Ok(Some(path))
}
