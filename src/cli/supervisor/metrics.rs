//! `--metrics-bind HOST:PORT` under a supervisor: the supervisor serves its own series on
//! PORT, and binds one listener per worker slot on the ports after it (PORT+1 … PORT+N).
//! Each slot's listener is handed to every worker of that slot in turn, so a slot keeps its
//! port across restarts and each port is one Prometheus target. With port 0 every listener
//! gets a free port of its own, logged at start.

use std::net::{SocketAddr, TcpListener};

use super::recycle::Cause;
use crate::error::{Error, ErrorKind};
use crate::metrics::Metrics;

const RESTARTS: &str = "asgi_worker_restarts_total";
const WORKERS: &str = "asgi_workers";

/// Workers by stage, for the `asgi_workers` gauge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Census {
    /// Started, lifespan startup not done yet.
    pub(super) starting: usize,
    pub(super) serving: usize,
    /// Told to stop, finishing their requests.
    pub(super) draining: usize,
}

/// Counts a worker replaced for `cause`. A no-op without `--metrics-bind`.
pub(super) fn restarted(cause: Cause) {
    ::metrics::counter!(RESTARTS, "cause" => cause.label()).increment(1);
}

/// Sets the `asgi_workers` gauge. A no-op without `--metrics-bind`.
pub(super) fn report(census: Census) {
    for (state, count) in [
        ("starting", census.starting),
        ("serving", census.serving),
        ("draining", census.draining),
    ] {
        ::metrics::gauge!(WORKERS, "state" => state).set(count as f64);
    }
}

/// The metrics listeners of a supervisor: its own, and one per worker slot.
pub(crate) struct MetricsListeners {
    supervisor: TcpListener,
    slots: Vec<socket2::Socket>,
}

impl MetricsListeners {
    /// Binds `address` and the `slots` ports after it; port 0 gives each a free port.
    pub(crate) fn bind(address: SocketAddr, slots: usize) -> Result<Self, Error> {
        let supervisor = crate::cli::metrics::bind(address)?;
        let slots = slot_addresses(address, slots)
            .map_err(|message| Error::new(ErrorKind::Config, message))?
            .into_iter()
            .map(|address| crate::cli::metrics::bind(address).map(socket2::Socket::from))
            .collect::<Result<_, _>>()?;
        Ok(MetricsListeners { supervisor, slots })
    }

    /// Installs the recorder with the supervisor's series, serves them on the current
    /// Tokio runtime, and gives back the slots' listeners for the workers.
    pub(super) fn serve(self) -> Result<Vec<socket2::Socket>, Error> {
        let metrics = Metrics::install_empty()?;
        describe();
        crate::cli::metrics::serve(self.supervisor, &metrics, "metrics of the supervisor")?;
        for (slot, listener) in self.slots.iter().enumerate() {
            let address = listener
                .local_addr()
                .ok()
                .and_then(|address| address.as_socket());
            if let Some(address) = address {
                tracing::info!("metrics of worker slot {slot} on http://{address}/metrics");
            }
        }
        Ok(self.slots)
    }
}

/// The addresses of the slots' listeners: the `slots` ports after `address`'s, or port 0
/// for each when `address`'s is 0.
pub(crate) fn slot_addresses(address: SocketAddr, slots: usize) -> Result<Vec<SocketAddr>, String> {
    (1..=slots)
        .map(|offset| {
            let port = match address.port() {
                0 => Some(0),
                port => u16::try_from(offset)
                    .ok()
                    .and_then(|offset| port.checked_add(offset)),
            };
            port.map(|port| SocketAddr::new(address.ip(), port))
                .ok_or_else(|| {
                    format!(
                        "--metrics-bind {address} with {slots} workers needs ports up to {}, \
                         past 65535",
                        usize::from(address.port()) + slots
                    )
                })
        })
        .collect()
}

/// The HELP lines, and every series at 0 from the start.
fn describe() {
    ::metrics::describe_counter!(
        RESTARTS,
        "Worker processes replaced, by cause: crash, max_requests, max_rss, lifetime, sighup, \
         reload"
    );
    ::metrics::describe_gauge!(
        WORKERS,
        "Worker processes, by state: starting, serving, draining"
    );
    for cause in Cause::ALL {
        ::metrics::counter!(RESTARTS, "cause" => cause.label()).absolute(0);
    }
    report(Census::default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_listen_on_the_ports_after_the_supervisors() {
        let address: SocketAddr = "10.0.0.1:9100".parse().unwrap();
        let ports: Vec<_> = slot_addresses(address, 3)
            .unwrap()
            .iter()
            .map(SocketAddr::port)
            .collect();
        assert_eq!(ports, [9101, 9102, 9103]);
        assert!(
            slot_addresses(address, 3)
                .unwrap()
                .iter()
                .all(|slot| slot.ip() == address.ip())
        );
    }

    #[test]
    fn port_zero_gives_every_slot_a_free_port_and_ports_past_65535_are_refused() {
        let any: SocketAddr = "[::1]:0".parse().unwrap();
        assert_eq!(slot_addresses(any, 2).unwrap(), [any, any]);
        let last: SocketAddr = "127.0.0.1:65534".parse().unwrap();
        assert_eq!(slot_addresses(last, 1).unwrap()[0].port(), 65535);
        let err = slot_addresses(last, 2).unwrap_err();
        assert!(err.contains("up to 65536"), "{err}");
        assert!(slot_addresses(last, 70_000).is_err());
    }
}
