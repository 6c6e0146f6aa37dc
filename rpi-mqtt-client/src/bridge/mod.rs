//! The vehicle bridge (`vehicle = bridge`, docs/vehicle-bridge.md): vehicle processes written
//! in any language connect to a Unix socket, claim entities, get their segments and actions and
//! send back answers and states. `frame.rs` is the codec, `shared.rs` what the threads share,
//! `conn.rs` one connection (a `bridge-conn` reader and a `bridge-write` writer thread),
//! `entity.rs` the [`Vehicle`] the `vehicles` thread drives for each entity. The `bridge`
//! worker accepts connections.

pub mod conn;
pub mod entity;
pub mod frame;
pub mod shared;

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use log::{info, warn};

use crate::config::BridgeConfig;
use crate::vehicle::Vehicle;
use entity::BridgeEntity;
use shared::{Counters, Shared};

/// Connections beyond the entities' count (a process being replaced, a refused one).
const SPARE_CONNECTIONS: usize = 4;
/// How long a shutdown waits for the connection threads to end.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// The bound socket and what its threads share.
pub struct Bridge {
    listener: UnixListener,
    path: PathBuf,
    shared: Arc<Shared>,
    max_connections: usize,
}

/// Stops a running bridge: wakes the `bridge` worker's accept, closes every connection and
/// removes the socket file.
pub struct Closer {
    path: PathBuf,
    shared: Arc<Shared>,
}

impl Bridge {
    /// Binds the socket (a stale socket file is replaced; one another process listens on is
    /// an error), sets its mode and group.
    pub fn bind(cfg: &BridgeConfig, entities: &[u32]) -> io::Result<Bridge> {
        let path = PathBuf::from(&cfg.socket);
        if let Ok(meta) = fs::symlink_metadata(&path) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            if UnixStream::connect(&path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another process listens on {}", path.display()),
                ));
            }
            fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("bind {}: {e}", path.display())))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(cfg.mode))?;
        if let Some((name, gid)) = &cfg.group {
            std::os::unix::fs::chown(&path, None, Some(*gid)).map_err(|e| {
                io::Error::new(e.kind(), format!("chgrp {name} {}: {e}", path.display()))
            })?;
        }
        Ok(Bridge {
            listener,
            path,
            shared: Shared::new(entities, cfg.timeout),
            max_connections: entities.len() + SPARE_CONNECTIONS,
        })
    }

    /// One [`Vehicle`] per entity, in the order given to [`Bridge::bind`].
    pub fn vehicles(&self, entities: &[u32], queue_depth: usize) -> Vec<(u32, Box<dyn Vehicle>)> {
        entities
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let v: Box<dyn Vehicle> =
                    Box::new(BridgeEntity::new(self.shared.clone(), i, *id, queue_depth));
                (*id, v)
            })
            .collect()
    }

    pub fn closer(&self) -> Closer {
        Closer {
            path: self.path.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Wakes the `vehicles` thread when a vehicle process answers or is lost.
    pub fn wakes(&self) -> Receiver<()> {
        self.shared.wakes()
    }

    /// The `bridge` worker's body: accepts connections until `stop` disconnects (and
    /// [`Closer::close`] wakes it).
    pub fn run(self, stop: Receiver<()>) {
        info!(
            "vehicle bridge listening on {} (hung after {} ms without state)",
            self.path.display(),
            self.shared.timeout.as_millis()
        );
        let mut next_id: u64 = 1;
        loop {
            let accepted = self.listener.accept();
            if !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
                break;
            }
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    self.shared
                        .warn(format_args!("accept on {}: {e}", self.path.display()));
                    // Out of descriptors, say: do not spin.
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let id = next_id;
            next_id += 1;
            Counters::bump(&self.shared.counters.connections);
            if self.shared.live.load(Ordering::Relaxed) >= self.max_connections {
                let refused = frame::Frame::HelloAck(frame::HelloAck {
                    version: frame::BRIDGE_VERSION,
                    result: frame::HelloResult::TooManyConnections,
                    entity_id: 0,
                });
                let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
                let _ = io::Write::write_all(&mut &stream, &refused.encode());
                Counters::bump(&self.shared.counters.refused);
                self.shared.warn(format_args!(
                    "connection {id} refused: {} connections already",
                    self.max_connections
                ));
                continue;
            }
            self.shared.live.fetch_add(1, Ordering::Relaxed);
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("bridge-conn".into())
                .spawn(move || conn::serve(stream, id, shared));
            if let Err(e) = spawned {
                self.shared.live.fetch_sub(1, Ordering::Relaxed);
                self.shared.warn(format_args!(
                    "connection {id}: cannot start its thread: {e}"
                ));
            }
        }
        info!("vehicle bridge stopped: {}", self.shared.counters.summary());
    }
}

impl Closer {
    /// Wakes the accept loop (after its worker was told to stop), closes every connection,
    /// waits a little for their threads and removes the socket file.
    pub fn close(&self) {
        let _ = UnixStream::connect(&self.path);
        self.shared.close_all();
        let start = Instant::now();
        while self.shared.live.load(Ordering::Relaxed) > 0 && start.elapsed() < CLOSE_WAIT {
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Err(e) = remove_socket(&self.path) {
            warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

fn remove_socket(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
