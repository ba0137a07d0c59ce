//! `wayline workflows`: the registry of named workflow definitions that a server starts
//! executions of by name (`POST /api/v1/executions {"workflow": NAME}`). A registered version
//! never changes; pushing a changed file makes the next version, pushing the same file again
//! changes nothing. It works on a server (`--server`) or on its database directly.

use clap::Subcommand;
use serde_json::{Value, json};
use wayline_runtime::clock::Clock;
use wayline_store::Store;

use super::block_on;
use crate::definition;
use crate::error::{Error, Exit, Result};
use crate::remote::{Remote, Target, segment};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Register workflow files under their `name:`. Every file is validated first; when one
    /// is invalid, none is registered. Prints `NAME VERSION` per file.
    Push {
        #[arg(value_name = "FILE", required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// The registered workflows, each with its newest version.
    List {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a registered workflow's source (the newest version, or VERSION).
    Show {
        name: String,
        #[arg(value_name = "VERSION")]
        number: Option<u32>,
        /// Print the version, its source and the versions there are as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete every version of a workflow (executions keep the source they started with).
    Delete { name: String },
}

/// One registered version, wherever it was read.
struct Version {
    name: String,
    version: u32,
    created_at: String,
}

/// Where the registry is: a server, or a database.
enum Registry {
    Server(Remote),
    Store(wayline_backend::AnyStore),
}

pub fn exec(args: Args) -> Result<Exit> {
    let Args { action, target } = args;
    // Files are read and checked before anything is opened or sent.
    let files = match &action {
        Action::Push { files } => load_all(files)?,
        _ => Vec::new(),
    };
    match target.remote()? {
        Some(remote) => block_on(run(action, files, Registry::Server(remote))),
        None => {
            let location = target.db.location()?;
            block_on(async {
                let store = wayline_backend::open(&location).await?;
                run(action, files, Registry::Store(store)).await
            })
            .map_err(|error| error.located(&location))
        }
    }
}

/// Loads and validates every file (each diagnostic printed); refuses them all when one fails.
fn load_all(files: &[std::path::PathBuf]) -> Result<Vec<(String, String)>> {
    let mut loaded = Vec::new();
    let mut failed = Vec::new();
    for file in files {
        match definition::load(file) {
            // The registry keeps one file per version: a workflow that imports is refused.
            Ok(definition) if !definition.imports.is_empty() => failed.push(format!(
                "{}: the registry stores one file per version, and this one imports {}",
                file.display(),
                definition.imports.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            Ok(definition) => loaded.push((definition.workflow.name, definition.source)),
            Err(error) => failed.push(error.message),
        }
    }
    if !failed.is_empty() {
        return Err(Error::invalid(format!("{}; nothing is registered", failed.join("; "))));
    }
    Ok(loaded)
}

async fn run(action: Action, files: Vec<(String, String)>, registry: Registry) -> Result<Exit> {
    match action {
        Action::Push { .. } => {
            for (name, source) in files {
                let (version, new) = registry.push(&name, &source).await?;
                outln!("{name} {}", version.version)?;
                if new {
                    say!("wayline: registered {name} version {}", version.version);
                } else {
                    say!("wayline: {name} version {} is already this file", version.version);
                }
            }
        }
        Action::List { json } => {
            let versions = registry.list().await?;
            if json {
                let items: Vec<Value> = versions.iter().map(Version::json).collect();
                outln!("{}", serde_json::to_string_pretty(&items)?)?;
            } else if versions.is_empty() {
                say!("no registered workflows");
            } else {
                outln!("{:<32}  {:>7}  {:<20}", "NAME", "VERSION", "CREATED")?;
                for version in versions {
                    let created = &version.created_at[..19.min(version.created_at.len())];
                    outln!("{:<32}  {:>7}  {created:<20}", version.name, version.version)?;
                }
            }
        }
        Action::Show { name, number, json } => {
            let (chosen, source, all) = registry.show(&name, number).await?;
            if json {
                let mut detail = chosen.json();
                detail["source"] = json!(source);
                detail["versions"] = json!(all);
                outln!("{}", serde_json::to_string_pretty(&detail)?)?;
            } else {
                out!("{source}")?;
            }
        }
        Action::Delete { name } => {
            registry.delete(&name).await?;
            say!("wayline: deleted every version of workflow {name}");
        }
    }
    Ok(Exit::Success)
}

impl Version {
    fn json(&self) -> Value {
        json!({"name": self.name, "version": self.version, "created_at": self.created_at})
    }

    fn from_store(version: &wayline_store::WorkflowVersion) -> Version {
        Version {
            name: version.name.clone(),
            version: version.version,
            created_at: version.created_at.rfc3339(),
        }
    }

    /// A summary of the API (`{name, version, created_at}`).
    fn from_api(json: &Value) -> Result<Version> {
        let bad =
            || Error::infrastructure(format!("the server described a workflow oddly: {json}"));
        Ok(Version {
            name: json.get("name").and_then(Value::as_str).ok_or_else(bad)?.to_owned(),
            version: json
                .get("version")
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(bad)?,
            created_at: json.get("created_at").and_then(Value::as_str).ok_or_else(bad)?.to_owned(),
        })
    }
}

fn not_registered(name: &str) -> Error {
    Error::invalid(format!("no workflow `{name}` is registered"))
}

impl Registry {
    /// Registers `source` as workflow `name`: the version it is, and whether it is new.
    async fn push(&self, name: &str, source: &str) -> Result<(Version, bool)> {
        match self {
            Registry::Server(remote) => {
                let path = format!("/api/v1/workflows/{}", segment(name));
                let (status, answer) = remote.put(&path, source.to_owned()).await?;
                Ok((Version::from_api(&answer)?, status == 201))
            }
            Registry::Store(store) => {
                let (stored, new) = store.put_workflow(name, source, Clock::system().now()).await?;
                Ok((Version::from_store(&stored), new))
            }
        }
    }

    async fn list(&self) -> Result<Vec<Version>> {
        match self {
            Registry::Server(remote) => {
                let answer = remote.get("/api/v1/workflows").await?;
                let items = answer.get("items").and_then(Value::as_array).cloned();
                items.unwrap_or_default().iter().map(Version::from_api).collect()
            }
            Registry::Store(store) => {
                Ok(store.workflows().await?.iter().map(Version::from_store).collect())
            }
        }
    }

    /// The chosen version (the newest without `version`), its source, and every version.
    async fn show(&self, name: &str, version: Option<u32>) -> Result<(Version, String, Vec<u32>)> {
        match self {
            Registry::Server(remote) => {
                let mut path = format!("/api/v1/workflows/{}", segment(name));
                if let Some(version) = version {
                    path.push_str(&format!("?version={version}"));
                }
                let answer = remote.get(&path).await?;
                let source = answer.get("source").and_then(Value::as_str).unwrap_or_default();
                let versions = answer.get("versions").and_then(Value::as_array).cloned();
                let versions = versions
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|v| v.as_u64().and_then(|v| u32::try_from(v).ok()))
                    .collect();
                Ok((Version::from_api(&answer)?, source.to_owned(), versions))
            }
            Registry::Store(store) => {
                let versions = match store.workflow_versions(name).await {
                    Err(wayline_store::Error::NotFound(_)) => return Err(not_registered(name)),
                    other => other?,
                };
                let numbers = versions.iter().map(|v| v.version).collect();
                let chosen = match version {
                    None => versions.last(),
                    Some(wanted) => versions.iter().find(|v| v.version == wanted),
                };
                let chosen = chosen.ok_or_else(|| match version {
                    Some(wanted) => {
                        Error::invalid(format!("workflow `{name}` has no version {wanted}"))
                    }
                    None => not_registered(name),
                })?;
                Ok((Version::from_store(chosen), chosen.source.clone(), numbers))
            }
        }
    }

    async fn delete(&self, name: &str) -> Result<()> {
        match self {
            Registry::Server(remote) => {
                remote.delete(&format!("/api/v1/workflows/{}", segment(name))).await
            }
            Registry::Store(store) => {
                if store.delete_workflow(name).await? {
                    Ok(())
                } else {
                    Err(not_registered(name))
                }
            }
        }
    }
}
