//! `baton functions`, `baton sequences` and `baton invocations`: what a server holds, listed,
//! shown and removed, and how an asynchronous invocation went.

use crate::server::{checked, shown, Remote};
use anyhow::Result;
use baton_server::client::Client;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// `baton functions ...`.
#[derive(Debug, Args)]
pub struct FunctionsArgs {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    remote: Remote,
}

/// `baton sequences ...`.
#[derive(Debug, Args)]
pub struct SequencesArgs {
    #[command(subcommand)]
    action: SequenceAction,
    #[command(flatten)]
    remote: Remote,
}

/// `baton invocations ...`.
#[derive(Debug, Args)]
pub struct InvocationsArgs {
    #[command(subcommand)]
    action: InvocationAction,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Subcommand)]
enum InvocationAction {
    /// The latest asynchronous invocations, newest first: id, state, function.
    List {
        /// Only this function's (or sequence's).
        #[arg(long)]
        function: Option<String>,
        /// How many (at most 1000).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
    },
    /// An asynchronous invocation (`baton invoke --async` printed its id): its state and,
    /// once done, its output, as JSON.
    Get { id: String },
    /// Forgets an invocation that has ended (its record and output).
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
enum Action {
    /// One line each: name, kind, memory, what it runs.
    List {
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Everything the server knows of one (its manifest included), as JSON.
    Get { name: String },
    /// Remove it (sequences naming it stop working).
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
enum SequenceAction {
    /// One line each: name and steps.
    List {
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Its steps, as JSON.
    Get { name: String },
    /// Declare (or replace) a sequence of deployed functions, invoked like a function.
    Put {
        name: String,
        /// The functions, in order.
        #[arg(required = true)]
        steps: Vec<String>,
    },
    /// Remove it (its functions stay).
    Delete { name: String },
}

fn print_json(value: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints what `GET path` answers, as JSON.
fn show(client: &Client, path: &str, what: &str) -> Result<()> {
    print_json(&checked(client.get(path)?, what)?.json())
}

/// `DELETE path`, then says `removed name`.
fn remove(client: &Client, path: &str, what: &str, name: &str) -> Result<()> {
    checked(client.request("DELETE", path, "text/plain", b"")?, what)?;
    println!("removed {name}");
    Ok(())
}

pub fn functions(args: FunctionsArgs) -> Result<()> {
    let client = args.remote.client()?;
    match args.action {
        Action::List { json } => {
            let all = checked(client.get("/v1/functions")?, "listing functions")?.json();
            if json {
                return print_json(&all);
            }
            for f in all["functions"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<8} {:>6} MiB  {}",
                    shown(f["name"].as_str().unwrap_or("?")),
                    shown(f["kind"].as_str().unwrap_or("?")),
                    f["memory_mib"],
                    shown(f["target"].as_str().unwrap_or(""))
                );
            }
            Ok(())
        }
        Action::Get { name } => show(
            &client,
            &format!("/v1/functions/{name}"),
            &format!("function `{name}`"),
        ),
        Action::Delete { name } => remove(
            &client,
            &format!("/v1/functions/{name}"),
            &format!("removing function `{name}`"),
            &name,
        ),
    }
}

pub fn sequences(args: SequencesArgs) -> Result<()> {
    let client = args.remote.client()?;
    match args.action {
        SequenceAction::List { json } => {
            let all = checked(client.get("/v1/sequences")?, "listing sequences")?.json();
            if json {
                return print_json(&all);
            }
            for s in all["sequences"].as_array().into_iter().flatten() {
                let steps: Vec<&str> = s["steps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                println!(
                    "{:<24} {}",
                    shown(s["name"].as_str().unwrap_or("?")),
                    shown(&steps.join(" → "))
                );
            }
            Ok(())
        }
        SequenceAction::Get { name } => show(
            &client,
            &format!("/v1/sequences/{name}"),
            &format!("sequence `{name}`"),
        ),
        SequenceAction::Put { name, steps } => {
            let body = json!({ "steps": steps }).to_string();
            checked(
                client.request(
                    "POST",
                    &format!("/v1/sequences/{name}"),
                    "application/json",
                    body.as_bytes(),
                )?,
                &format!("declaring sequence `{name}`"),
            )?;
            println!("declared {name}: {}", steps.join(" → "));
            Ok(())
        }
        SequenceAction::Delete { name } => remove(
            &client,
            &format!("/v1/sequences/{name}"),
            &format!("removing sequence `{name}`"),
            &name,
        ),
    }
}

pub fn invocations(args: InvocationsArgs) -> Result<()> {
    let client = args.remote.client()?;
    match args.action {
        InvocationAction::List {
            function,
            limit,
            json,
        } => {
            let mut path = format!("/v1/invocations?limit={limit}");
            if let Some(function) = &function {
                path.push_str("&function=");
                path.push_str(&crate::commands::query_escape(function));
            }
            let all = checked(client.get(&path)?, "listing invocations")?.json();
            if json {
                return print_json(&all);
            }
            for i in all["invocations"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<9} {}{}",
                    shown(i["id"].as_str().unwrap_or("?")),
                    shown(i["state"].as_str().unwrap_or("?")),
                    shown(i["function"].as_str().unwrap_or("?")),
                    i["error"]
                        .as_str()
                        .map(|e| format!("  ({})", shown(e)))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        InvocationAction::Get { id } => show(
            &client,
            &format!("/v1/invocations/{id}"),
            &format!("invocation `{id}`"),
        ),
        InvocationAction::Delete { id } => remove(
            &client,
            &format!("/v1/invocations/{}", crate::commands::query_escape(&id)),
            &format!("invocation `{id}`"),
            &id,
        ),
    }
}
