//! Auxiliary services (a cache, a sidecar) that functions declare they need: started before
//! the first step that needs them (by a pre-warm when the step is predicted, else by the
//! step itself), ready once their check passes (a TCP port accepting connections), and
//! stopped after an idle time.
//!
//! ```toml
//! name = "cache"
//! command = ["python3", "-m", "http.server", "7070", "--bind", "127.0.0.1"]
//! ready_tcp = "127.0.0.1:7070"
//! start_timeout_ms = 5000
//! idle_stop_ms = 30000
//! ```

use crate::process::resolve_program;
use baton_core::sync::Unpoisoned;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why a service spec was refused or a service could not be made ready.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// The spec is not valid TOML or has a bad field.
    #[error("service spec: {0}")]
    Spec(String),
    /// Nobody declared a service of that name.
    #[error("service `{0}` is not declared")]
    Unknown(String),
    /// The command could not be started.
    #[error("service `{service}`: cannot start `{program}`: {source}")]
    Spawn {
        /// The service.
        service: String,
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The readiness check did not pass in time, or the process exited first.
    #[error("service `{service}` not ready after {waited_ms} ms: {why}")]
    NotReady {
        /// The service.
        service: String,
        /// How long baton waited.
        waited_ms: u64,
        /// What was seen.
        why: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceWire {
    name: String,
    command: Vec<String>,
    ready_tcp: Option<String>,
    start_timeout_ms: Option<u64>,
    idle_stop_ms: Option<u64>,
    workdir: Option<PathBuf>,
}

/// A declared service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Its name, as functions' `services` lists name it.
    pub name: String,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Ready once this address accepts a TCP connection (none: ready once started).
    pub ready_tcp: Option<SocketAddr>,
    /// Longest wait for readiness.
    pub start_timeout: Duration,
    /// Stopped after this long unused.
    pub idle_stop: Duration,
    /// Directory it runs in.
    pub workdir: Option<PathBuf>,
}

impl ServiceSpec {
    /// Parses a service spec (see the module docs); defaults: 10 s to get ready, stopped
    /// after 60 s idle.
    pub fn from_toml(text: &str) -> Result<ServiceSpec, ServiceError> {
        let wire: ServiceWire =
            toml::from_str(text).map_err(|e| ServiceError::Spec(e.to_string().trim().into()))?;
        if wire.name.is_empty() {
            return Err(ServiceError::Spec("field `name`: empty".into()));
        }
        if wire.command.first().is_none_or(String::is_empty) {
            return Err(ServiceError::Spec(
                "field `command`: needs at least the program".into(),
            ));
        }
        let ready_tcp =
            match wire.ready_tcp {
                Some(address) => Some(address.parse().map_err(|e| {
                    ServiceError::Spec(format!("field `ready_tcp`: {address:?}: {e}"))
                })?),
                None => None,
            };
        Ok(ServiceSpec {
            name: wire.name,
            command: wire.command,
            ready_tcp,
            start_timeout: Duration::from_millis(wire.start_timeout_ms.unwrap_or(10_000)),
            idle_stop: Duration::from_millis(wire.idle_stop_ms.unwrap_or(60_000)),
            workdir: wire.workdir,
        })
    }
}

#[derive(Debug)]
struct Running {
    child: Child,
    last_used: Instant,
}

/// Counters of service work.
#[derive(Debug, Default)]
pub struct ServiceCounters {
    /// Services started.
    pub starts: AtomicU64,
    /// Services stopped for being idle.
    pub idle_stops: AtomicU64,
}

/// The declared services and the running ones.
#[derive(Debug)]
pub struct Services {
    specs: HashMap<String, ServiceSpec>,
    running: Mutex<HashMap<String, Running>>,
    /// The counts.
    pub counters: ServiceCounters,
}

fn stop(mut running: Running) {
    let _ = running.child.kill();
    let _ = running.child.wait();
}

impl Services {
    /// Services for `specs`; nothing starts until needed.
    pub fn new(specs: Vec<ServiceSpec>) -> Services {
        Services {
            specs: specs.into_iter().map(|s| (s.name.clone(), s)).collect(),
            running: Mutex::new(HashMap::new()),
            counters: ServiceCounters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock_unpoisoned()
    }

    /// Whether `name` is running.
    pub fn is_running(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// Makes `name` ready (starting it and waiting for its check when it is not running)
    /// and marks it used now; returns how long it waited.
    pub fn ensure(&self, name: &str) -> Result<Duration, ServiceError> {
        let spec = self
            .specs
            .get(name)
            .ok_or_else(|| ServiceError::Unknown(name.to_owned()))?;
        let asked = Instant::now();
        // Held while starting, so two steps never start the same service twice.
        let mut running = self.lock();
        if let Some(service) = running.get_mut(name) {
            if service.child.try_wait().ok().flatten().is_none() {
                service.last_used = Instant::now();
                return Ok(asked.elapsed());
            }
            running.remove(name);
        }
        let program = resolve_program(&spec.command[0]);
        let mut command = Command::new(&program);
        command
            .args(&spec.command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(dir) = &spec.workdir {
            command.current_dir(dir);
        }
        let mut child = command.spawn().map_err(|source| ServiceError::Spawn {
            service: name.to_owned(),
            program,
            source,
        })?;
        if let Some(address) = spec.ready_tcp {
            loop {
                if TcpStream::connect_timeout(&address, Duration::from_millis(50)).is_ok() {
                    break;
                }
                let not_ready = |why: String| ServiceError::NotReady {
                    service: name.to_owned(),
                    waited_ms: asked.elapsed().as_millis() as u64,
                    why,
                };
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(not_ready(format!("exited with {status}")));
                }
                if asked.elapsed() >= spec.start_timeout {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(not_ready(format!("{address} never accepted")));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.counters.starts.fetch_add(1, Ordering::Relaxed);
        running.insert(
            name.to_owned(),
            Running {
                child,
                last_used: Instant::now(),
            },
        );
        Ok(asked.elapsed())
    }

    /// Stops the services unused for longer than their idle time; returns their names.
    pub fn stop_idle(&self, now: Instant) -> Vec<String> {
        let mut running = self.lock();
        let idle: Vec<String> = running
            .iter()
            .filter(|(name, service)| {
                self.specs.get(*name).is_none_or(|spec| {
                    now.saturating_duration_since(service.last_used) >= spec.idle_stop
                })
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in &idle {
            if let Some(service) = running.remove(name) {
                stop(service);
                self.counters.idle_stops.fetch_add(1, Ordering::Relaxed);
            }
        }
        idle
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for (_, service) in self.lock().drain() {
            stop(service);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_their_bad_fields() {
        let spec = ServiceSpec::from_toml(
            "name = \"cache\"\ncommand = [\"x\"]\nready_tcp = \"127.0.0.1:7070\"\nidle_stop_ms = 5",
        )
        .unwrap();
        assert_eq!(spec.idle_stop, Duration::from_millis(5));
        assert_eq!(spec.ready_tcp, Some("127.0.0.1:7070".parse().unwrap()));
        for (text, expected) in [
            ("name = \"c\"\ncommand = []", "command"),
            (
                "name = \"c\"\ncommand = [\"x\"]\nready_tcp = \"nowhere\"",
                "ready_tcp",
            ),
            ("name = \"c\"\ncommand = [\"x\"]\ncolour = 1", "colour"),
        ] {
            let message = ServiceSpec::from_toml(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    #[test]
    fn an_unknown_service_is_an_error() {
        let services = Services::new(Vec::new());
        assert!(matches!(
            services.ensure("cache"),
            Err(ServiceError::Unknown(_))
        ));
    }
}
