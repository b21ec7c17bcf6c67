//! The blocked-loop watchdog (`--loop-block-warn`): finds the blocking call in async code.
//!
//! A Tokio task queues a heartbeat job for the loop thread every [`BEAT`]. The job runs
//! when the loop thread is back in the event loop; when it has not run after the limit,
//! the loop is blocked (a sync database call, a `time.sleep`, a long computation): one
//! warning with the Python stack of what the loop thread is running, then one line when it
//! runs again. Meanwhile [`LoopWatch::is_blocked`] is true (the health path answers 503).
//! It also keeps the loop's metrics: the share of a CPU the loop thread used over the last
//! second, and the number of blocked spells.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::event_loop::EventLoop;
use crate::metrics;

/// How often the loop thread is asked to answer a heartbeat.
const BEAT: Duration = Duration::from_millis(100);
/// The window of the loop-busy gauge.
const BUSY_WINDOW: Duration = Duration::from_secs(1);

/// Whether the loop thread is blocked now, as the watchdog last found it.
#[derive(Clone, Default)]
pub(crate) struct LoopWatch {
    blocked: Arc<AtomicBool>,
}

impl LoopWatch {
    /// True while the loop thread has not answered a heartbeat for longer than the limit.
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::Relaxed)
    }
}

/// Starts watching `event_loop` on the current Tokio runtime; the task ends with the loop.
pub(crate) fn watch(event_loop: EventLoop, limit: Duration) -> LoopWatch {
    let watch = LoopWatch::default();
    tokio::spawn(run(event_loop, limit, watch.clone()));
    watch
}

async fn run(event_loop: EventLoop, limit: Duration, watch: LoopWatch) {
    // The loop thread's `threading.get_ident()`, learnt from the first heartbeat.
    let thread_ident = Arc::new(AtomicU64::new(0));
    let mut busy = BusyGauge::new(&event_loop);
    loop {
        let (answered, heartbeat) = oneshot::channel();
        let ident = thread_ident.clone();
        event_loop.submit(Box::new(move |py| {
            if ident.load(Ordering::Relaxed) == 0
                && let Ok(id) = py
                    .import("threading")
                    .and_then(|threading| threading.call_method0("get_ident"))
                    .and_then(|id| id.extract::<u64>())
            {
                ident.store(id, Ordering::Relaxed);
            }
            let _ = answered.send(());
        }));
        let sent = Instant::now();
        let mut heartbeat = std::pin::pin!(heartbeat);
        match tokio::time::timeout(limit, heartbeat.as_mut()).await {
            Ok(Ok(())) => busy.update(&event_loop),
            // The loop thread ended and dropped the job.
            Ok(Err(_)) => return,
            Err(_) => {
                watch.blocked.store(true, Ordering::Relaxed);
                ::metrics::counter!(metrics::LOOP_BLOCKED).increment(1);
                let ident = thread_ident.load(Ordering::Relaxed);
                let stack = tokio::task::spawn_blocking(move || loop_stack(ident))
                    .await
                    .unwrap_or_else(|_| "(the stack could not be read)".into());
                tracing::warn!(
                    "the event loop has been blocked for {:.1} s (--loop-block-warn); the loop thread is running:\n{stack}",
                    sent.elapsed().as_secs_f64()
                );
                let ended = heartbeat.await.is_err();
                watch.blocked.store(false, Ordering::Relaxed);
                if ended {
                    return;
                }
                tracing::warn!(
                    "the event loop runs again after being blocked for {:.1} s",
                    sent.elapsed().as_secs_f64()
                );
            }
        }
        tokio::time::sleep(BEAT).await;
    }
}

/// `asgi_loop_busy_ratio`: the share of a CPU the loop thread used over the last window.
struct BusyGauge {
    since: Instant,
    cpu: Option<Duration>,
}

impl BusyGauge {
    fn new(event_loop: &EventLoop) -> Self {
        BusyGauge {
            since: Instant::now(),
            cpu: event_loop.cpu_time(),
        }
    }

    fn update(&mut self, event_loop: &EventLoop) {
        let elapsed = self.since.elapsed();
        if elapsed < BUSY_WINDOW || !metrics::enabled() {
            return;
        }
        let cpu = event_loop.cpu_time();
        if let (Some(now), Some(before)) = (cpu, self.cpu) {
            let share = now.saturating_sub(before).as_secs_f64() / elapsed.as_secs_f64();
            ::metrics::gauge!(metrics::LOOP_BUSY).set(share);
        }
        *self = BusyGauge {
            since: Instant::now(),
            cpu,
        };
    }
}

/// The Python stack of the thread `ident`, innermost call last, as a traceback shows it.
/// Taking the GIL waits for the loop thread to let it go (it does every switch interval,
/// and whenever a call releases it, as `time.sleep` does), so this runs off the Tokio
/// workers.
fn loop_stack(ident: u64) -> String {
    Python::attach(|py| {
        let stack = || -> PyResult<String> {
            let frames = py.import("sys")?.call_method0("_current_frames")?;
            let frames = frames.cast_into::<PyDict>()?;
            let Some(frame) = frames.get_item(ident)? else {
                return Ok("(no Python frame: the loop thread is in native code)".into());
            };
            let lines = py
                .import("traceback")?
                .call_method1("format_stack", (frame,))?;
            Ok(lines.extract::<Vec<String>>()?.concat())
        };
        stack().unwrap_or_else(|err| format!("(the stack could not be read: {err})"))
    })
}
