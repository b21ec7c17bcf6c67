//! What the supervisor knows of its workers, and what it does about each event: a slot per
//! worker, whose stage says which processes serve it now.
//!
//! A healthy worker is replaced with an overlap (SIGHUP, `--workers-max-rss`,
//! `--workers-lifetime`): its replacement starts in the same slot on the same sockets, and
//! only once that one reports ready is the old worker sent SIGTERM to drain. The listening
//! sockets are shared, so connections queue in one kernel backlog and are never refused
//! meanwhile. Planned replacements go one slot at a time, in the order asked.

use std::collections::VecDeque;
use std::io;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::launcher::{Event, Processes};
use super::metrics::{self, Census};
use super::recycle::{Cause, Limits};

/// The first wait before restarting a worker that crashed; doubled for each crash in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A worker that ran this long before crashing resets the back-off: it was healthy.
const HEALTHY_UPTIME: Duration = Duration::from_secs(10);

/// What the supervisor is doing, which decides what a worker's exit means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No worker has reported ready yet: a worker failing now fails the whole server.
    Starting,
    /// Workers that exit are replaced.
    Serving,
    /// A signal arrived: workers drain and are not replaced.
    Stopping,
}

/// One worker process.
#[derive(Debug)]
struct Worker {
    pid: u32,
    started: Instant,
    /// It reported ready (lifespan startup done, listening).
    ready: bool,
    /// When `--workers-lifetime` replaces it.
    retire_at: Option<Instant>,
    /// A replacement failed to start: no new attempt for `--workers-max-rss` or
    /// `--workers-lifetime` before this.
    not_before: Option<Instant>,
    /// Killed for not becoming ready in time; its exit is on its way.
    killed: bool,
}

/// Which processes serve a slot.
#[derive(Debug, Default)]
enum Stage {
    /// None: one starts after a back-off, or (`--reload`) when a file changes.
    #[default]
    Empty,
    Running(Worker),
    /// `current` serves while `next` starts; once `next` is ready, `current` drains.
    Replacing {
        current: Worker,
        next: Worker,
        cause: Cause,
    },
    /// `--reload`: the worker was asked to stop; the next one starts once it has exited.
    Restarting(Worker),
}

#[derive(Default)]
struct Slot {
    stage: Stage,
    /// Crashes (or failed replacements) in a row, for the back-off.
    crashes: u32,
}

impl Slot {
    /// Whether a replacement asked for at `asked` is still to be done: the worker that
    /// serves the slot (or will once its replacement is ready) started before that.
    fn still_due(&self, asked: Instant) -> bool {
        match &self.stage {
            Stage::Running(worker) | Stage::Replacing { next: worker, .. } => {
                worker.started <= asked
            }
            Stage::Empty | Stage::Restarting(_) => false,
        }
    }

    fn replacing(&self) -> Option<Cause> {
        match &self.stage {
            Stage::Replacing { cause, .. } => Some(*cause),
            _ => None,
        }
    }

    /// Forgets the worker `pid`, which has exited.
    fn remove(&mut self, pid: u32) {
        self.stage = match std::mem::take(&mut self.stage) {
            Stage::Running(worker) | Stage::Restarting(worker) if worker.pid == pid => Stage::Empty,
            Stage::Replacing { current, next, .. } if current.pid == pid => Stage::Running(next),
            Stage::Replacing { current, next, .. } if next.pid == pid => Stage::Running(current),
            stage => stage,
        }
    }

    fn pids(&self) -> Vec<u32> {
        match &self.stage {
            Stage::Empty => Vec::new(),
            Stage::Running(worker) | Stage::Restarting(worker) => vec![worker.pid],
            Stage::Replacing { current, next, .. } => vec![current.pid, next.pid],
        }
    }
}

/// A planned replacement waiting for its turn.
struct Replacement {
    slot: usize,
    cause: Cause,
    asked: Instant,
}

/// The workers of every slot, and what to do next.
pub(super) struct State<P> {
    processes: P,
    limits: Limits,
    slots: Vec<Slot>,
    /// Workers whose replacement has taken over, draining; their exit is expected.
    retiring: Vec<u32>,
    /// Planned replacements, done one at a time.
    queue: VecDeque<Replacement>,
    /// A SIGHUP's replacements are under way (to log when they are all done).
    rolling: bool,
    phase: Phase,
    /// `--reload`: a worker that fails waits for the next file change.
    reloading: bool,
    /// Why the server gives up, when it does.
    pub(super) failure: Option<String>,
}

impl<P: Processes> State<P> {
    pub(super) fn new(processes: P, workers: usize, limits: Limits, reloading: bool) -> Self {
        State {
            processes,
            limits,
            slots: (0..workers).map(|_| Slot::default()).collect(),
            retiring: Vec::new(),
            queue: VecDeque::new(),
            rolling: false,
            phase: Phase::Starting,
            reloading,
            failure: None,
        }
    }

    pub(super) fn start_all(&mut self) {
        for slot in 0..self.slots.len() {
            self.start(slot);
        }
    }

    pub(super) fn finished(&self) -> bool {
        self.phase == Phase::Stopping
            && self.retiring.is_empty()
            && self
                .slots
                .iter()
                .all(|slot| matches!(slot.stage, Stage::Empty))
    }

    /// How many workers start, serve and drain, for the `asgi_workers` gauge.
    pub(super) fn census(&self) -> Census {
        let mut census = Census::default();
        for slot in &self.slots {
            match &slot.stage {
                Stage::Empty => {}
                Stage::Running(worker) if worker.ready => census.serving += 1,
                Stage::Running(_) => census.starting += 1,
                Stage::Replacing { .. } => {
                    census.serving += 1;
                    census.starting += 1;
                }
                Stage::Restarting(_) => census.draining += 1,
            }
        }
        census.draining += self.retiring.len();
        if self.phase == Phase::Stopping {
            census = Census {
                draining: census.starting + census.serving + census.draining,
                ..Census::default()
            };
        }
        census
    }

    fn new_worker(&self, pid: u32) -> Worker {
        let started = Instant::now();
        Worker {
            pid,
            started,
            ready: false,
            retire_at: self.limits.retire_at(started),
            not_before: None,
            killed: false,
        }
    }

    /// Starts a worker in the empty `slot`. Failing to start the first ones fails the
    /// server; later, it is retried after a back-off, like a crash (out of processes or
    /// memory passes).
    fn start(&mut self, slot: usize) {
        if self.phase == Phase::Stopping {
            return;
        }
        match self.processes.spawn(slot) {
            Ok(pid) => {
                tracing::info!("started worker process {pid}");
                self.slots[slot].stage = Stage::Running(self.new_worker(pid));
            }
            Err(err) if self.phase == Phase::Starting => {
                self.failure = Some(format!("cannot start a worker process: {err}"));
                self.stop(Signal::SIGTERM);
            }
            Err(err) => {
                let backoff = self.back_off(slot);
                tracing::error!(
                    "cannot start a worker process: {err}; trying again in {}ms",
                    backoff.as_millis()
                );
                self.processes.due_after(slot, backoff);
            }
        }
    }

    /// Counts a failure in a row in `slot`; how long to wait before the next attempt.
    fn back_off(&mut self, slot: usize) -> Duration {
        let state = &mut self.slots[slot];
        state.crashes += 1;
        backoff(state.crashes)
    }

    pub(super) fn handle(&mut self, event: Event) {
        match event {
            Event::Ready { slot, pid } => self.ready(slot, pid),
            Event::Exited {
                slot,
                pid,
                status,
                uptime,
            } => self.exited(slot, pid, status, uptime),
            Event::Due { slot } => {
                if matches!(self.slots[slot].stage, Stage::Empty) {
                    self.start(slot);
                }
            }
        }
        self.advance();
    }

    fn ready(&mut self, slot: usize, pid: u32) {
        if self.phase == Phase::Starting {
            self.phase = Phase::Serving;
        }
        let state = &mut self.slots[slot];
        state.crashes = 0;
        state.stage = match std::mem::take(&mut state.stage) {
            Stage::Running(mut worker) if worker.pid == pid => {
                worker.ready = true;
                Stage::Running(worker)
            }
            Stage::Replacing {
                current,
                mut next,
                cause,
            } if next.pid == pid => {
                tracing::info!(
                    "worker process {pid} is ready: stopping worker process {} ({})",
                    current.pid,
                    cause.reason()
                );
                self.processes.signal(current.pid, Signal::SIGTERM);
                self.retiring.push(current.pid);
                metrics::restarted(cause);
                next.ready = true;
                Stage::Running(next)
            }
            stage => stage,
        };
    }

    fn exited(&mut self, slot: usize, pid: u32, status: io::Result<ExitStatus>, uptime: Duration) {
        let crashed = !matches!(&status, Ok(status) if status.success());
        let status = match status {
            Ok(status) => status.to_string(),
            Err(err) => format!("unknown status ({err})"),
        };
        if let Some(index) = self.retiring.iter().position(|&retired| retired == pid) {
            self.retiring.swap_remove(index);
            tracing::info!("worker process {pid} stopped ({status})");
            return;
        }
        if self.phase == Phase::Stopping {
            tracing::info!("worker process {pid} stopped ({status})");
            self.slots[slot].remove(pid);
            return;
        }
        match std::mem::take(&mut self.slots[slot].stage) {
            Stage::Replacing {
                current,
                next,
                cause,
            } if next.pid == pid => {
                let current_pid = current.pid;
                self.slots[slot].stage = Stage::Running(current);
                tracing::error!(
                    "worker process {pid}, started to replace worker process {current_pid} \
                     ({}), exited before it was ready ({status}); {current_pid} keeps serving",
                    cause.reason()
                );
                self.not_replaced(slot, cause);
            }
            Stage::Replacing { current, next, .. } if current.pid == pid => {
                self.slots[slot].stage = Stage::Running(next);
                let cause = if crashed {
                    Cause::Crash
                } else {
                    Cause::MaxRequests
                };
                metrics::restarted(cause);
                tracing::warn!(
                    "worker process {pid} exited ({status}) while its replacement starts"
                );
            }
            Stage::Running(worker) if worker.pid == pid => {
                self.serving_worker_exited(slot, pid, crashed, &status, uptime);
            }
            Stage::Restarting(worker) if worker.pid == pid => self.start(slot),
            stage => self.slots[slot].stage = stage,
        }
    }

    /// The worker serving `slot` exited on its own: start another, at once or after a
    /// back-off, or give up.
    fn serving_worker_exited(
        &mut self,
        slot: usize,
        pid: u32,
        crashed: bool,
        status: &str,
        uptime: Duration,
    ) {
        if crashed && self.reloading {
            tracing::error!(
                "worker process {pid} failed ({status}); waiting for a file change to restart"
            );
            return;
        }
        if crashed && self.phase == Phase::Starting {
            let message = format!("worker process {pid} failed to start ({status}); stopping");
            self.failure = Some(message);
            self.stop(Signal::SIGTERM);
            return;
        }
        if !crashed {
            // Recycled (--limit-max-requests): replace it at once.
            metrics::restarted(Cause::MaxRequests);
            tracing::info!("worker process {pid} exited; starting a new one");
            return self.start(slot);
        }
        metrics::restarted(Cause::Crash);
        if uptime >= HEALTHY_UPTIME {
            self.slots[slot].crashes = 0;
        }
        let backoff = self.back_off(slot);
        tracing::warn!(
            "worker process {pid} died ({status}); starting a new one in {}ms",
            backoff.as_millis()
        );
        self.processes.due_after(slot, backoff);
    }

    /// A planned replacement of `slot` could not start: the worker there keeps serving,
    /// and is not tried again before a back-off. A SIGHUP's other replacements would fail
    /// the same way: they are dropped.
    fn not_replaced(&mut self, slot: usize, cause: Cause) {
        let backoff = self.back_off(slot);
        if let Stage::Running(worker) = &mut self.slots[slot].stage {
            worker.not_before = Some(Instant::now() + backoff);
        }
        if cause == Cause::Sighup {
            self.queue
                .retain(|replacement| replacement.cause != Cause::Sighup);
            self.rolling = false;
            tracing::error!("SIGHUP: the workers not replaced yet keep serving");
        }
    }

    /// Starts the next planned replacement, when none is under way.
    fn advance(&mut self) {
        if self.phase != Phase::Serving {
            return;
        }
        let slots = &self.slots;
        self.queue
            .retain(|replacement| slots[replacement.slot].still_due(replacement.asked));
        let rolling = |cause: Option<Cause>| cause == Some(Cause::Sighup);
        if self.rolling
            && !self
                .queue
                .iter()
                .any(|waiting| rolling(Some(waiting.cause)))
            && !self.slots.iter().any(|slot| rolling(slot.replacing()))
        {
            self.rolling = false;
            tracing::info!("every worker has been replaced (SIGHUP)");
        }
        if self.slots.iter().any(|slot| slot.replacing().is_some()) {
            return;
        }
        let next = self.queue.iter().position(|waiting| {
            matches!(&self.slots[waiting.slot].stage, Stage::Running(worker) if worker.ready)
        });
        if let Some(replacement) = next.and_then(|index| self.queue.remove(index)) {
            self.replace(replacement.slot, replacement.cause);
        }
    }

    /// Starts a replacement for the worker serving `slot`.
    fn replace(&mut self, slot: usize, cause: Cause) {
        let Stage::Running(current) = std::mem::take(&mut self.slots[slot].stage) else {
            return;
        };
        match self.processes.spawn(slot) {
            Ok(pid) => {
                tracing::info!(
                    "started worker process {pid} to replace worker process {} ({})",
                    current.pid,
                    cause.reason()
                );
                let next = self.new_worker(pid);
                self.slots[slot].stage = Stage::Replacing {
                    current,
                    next,
                    cause,
                };
            }
            Err(err) => {
                tracing::error!(
                    "cannot start a worker process to replace worker process {}: {err}",
                    current.pid
                );
                self.slots[slot].stage = Stage::Running(current);
                self.not_replaced(slot, cause);
            }
        }
    }

    /// The periodic look at `--workers-max-rss` and `--workers-lifetime`, at `now`: a
    /// worker past either is queued for replacement.
    pub(super) fn check_limits(&mut self, now: Instant) {
        self.kill_late_starters(now);
        if self.phase != Phase::Serving {
            return;
        }
        for slot in 0..self.slots.len() {
            let Stage::Running(worker) = &self.slots[slot].stage else {
                continue;
            };
            let queued = self.queue.iter().any(|waiting| waiting.slot == slot);
            let resting = worker.not_before.is_some_and(|at| at > now);
            if !worker.ready || queued || resting {
                continue;
            }
            let cause = if worker.retire_at.is_some_and(|at| at <= now) {
                tracing::info!(
                    "worker process {} has reached --workers-lifetime: replacing it",
                    worker.pid
                );
                Cause::Lifetime
            } else if let Some(resident) = self
                .processes
                .resident(worker.pid)
                .filter(|&resident| self.limits.over_max_rss(resident))
            {
                tracing::warn!(
                    "worker process {} uses {} MiB, over --workers-max-rss {}: replacing it",
                    worker.pid,
                    resident >> 20,
                    self.limits.max_rss.unwrap_or_default() >> 20
                );
                Cause::MaxRss
            } else {
                continue;
            };
            self.queue.push_back(Replacement {
                slot,
                cause,
                asked: now,
            });
        }
        self.advance();
    }

    /// Kills the workers not ready `--timeout-worker-startup` after they started (an app
    /// whose import or lifespan startup hangs): their exit then counts as a failure to
    /// start, of the server or of a replacement, as if they had crashed.
    fn kill_late_starters(&mut self, now: Instant) {
        if self.phase == Phase::Stopping {
            return;
        }
        for slot in &mut self.slots {
            let starting = match &mut slot.stage {
                Stage::Running(worker) | Stage::Replacing { next: worker, .. } => worker,
                Stage::Empty | Stage::Restarting(_) => continue,
            };
            if starting.ready
                || starting.killed
                || !self.limits.late_to_start(starting.started, now)
            {
                continue;
            }
            tracing::error!(
                "worker process {} is not ready after --timeout-worker-startup ({}s): killing it",
                starting.pid,
                self.limits.startup.unwrap_or_default().as_secs()
            );
            self.processes.signal(starting.pid, Signal::SIGKILL);
            starting.killed = true;
        }
    }

    /// SIGHUP: every worker is replaced, one at a time, each only once its replacement is
    /// ready. A worker started after the signal counts as replaced already.
    pub(super) fn hangup(&mut self) {
        if self.phase == Phase::Stopping {
            return;
        }
        tracing::info!("received SIGHUP: replacing every worker, one at a time");
        let asked = Instant::now();
        self.queue
            .retain(|replacement| replacement.cause != Cause::Sighup);
        self.queue
            .extend((0..self.slots.len()).map(|slot| Replacement {
                slot,
                cause: Cause::Sighup,
                asked,
            }));
        self.rolling = true;
        self.advance();
    }

    /// A signal for the server: every worker gets it too. A second SIGINT is a second
    /// SIGINT for the workers as well ("exit now").
    pub(super) fn received(&mut self, signal: Signal) {
        if self.phase != Phase::Stopping {
            tracing::info!("received {signal}: stopping the workers");
        }
        self.stop(signal);
    }

    /// Sends `signal` to every worker; they drain and exit, and are not replaced.
    fn stop(&mut self, signal: Signal) {
        self.phase = Phase::Stopping;
        self.queue.clear();
        let slots = self.slots.iter().flat_map(Slot::pids);
        for pid in slots
            .chain(self.retiring.iter().copied())
            .collect::<Vec<_>>()
        {
            self.processes.signal(pid, signal);
        }
    }

    /// A watched file changed: stop every worker to start a fresh one in its place.
    pub(super) fn reload(&mut self, changed: &std::path::Path) {
        if self.phase == Phase::Stopping {
            return;
        }
        tracing::info!("{} changed: restarting", changed.display());
        self.queue.clear();
        self.rolling = false;
        for slot in 0..self.slots.len() {
            let worker = match std::mem::take(&mut self.slots[slot].stage) {
                Stage::Empty => {
                    self.start(slot);
                    continue;
                }
                Stage::Restarting(worker) => {
                    self.slots[slot].stage = Stage::Restarting(worker);
                    continue;
                }
                Stage::Running(worker) => worker,
                Stage::Replacing { current, next, .. } => {
                    self.processes.signal(next.pid, Signal::SIGTERM);
                    self.retiring.push(next.pid);
                    current
                }
            };
            self.processes.signal(worker.pid, Signal::SIGTERM);
            metrics::restarted(Cause::Reload);
            self.slots[slot].stage = Stage::Restarting(worker);
        }
    }
}

fn backoff(crashes: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << crashes.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    /// Worker processes on paper: pids from 1, and a record of what was asked.
    #[derive(Default)]
    struct Fake {
        started: Vec<(usize, u32)>,
        signals: Vec<(u32, Signal)>,
        due: Vec<(usize, Duration)>,
        resident: HashMap<u32, u64>,
        cannot_start: bool,
    }

    impl Processes for Fake {
        fn spawn(&mut self, slot: usize) -> io::Result<u32> {
            if self.cannot_start {
                return Err(io::Error::other("out of processes"));
            }
            let pid = u32::try_from(self.started.len()).unwrap() + 1;
            self.started.push((slot, pid));
            Ok(pid)
        }

        fn due_after(&mut self, slot: usize, delay: Duration) {
            self.due.push((slot, delay));
        }

        fn signal(&mut self, pid: u32, signal: Signal) {
            self.signals.push((pid, signal));
        }

        fn resident(&self, pid: u32) -> Option<u64> {
            self.resident.get(&pid).copied()
        }
    }

    const MIB: u64 = 1 << 20;

    /// `workers` started (pids 1…) and ready.
    fn serving(workers: usize, limits: Limits) -> State<Fake> {
        let mut state = State::new(Fake::default(), workers, limits, false);
        state.start_all();
        for pid in 1..=workers {
            state.handle(Event::Ready {
                slot: pid - 1,
                pid: u32::try_from(pid).unwrap(),
            });
        }
        state
    }

    fn ready(state: &mut State<Fake>, slot: usize, pid: u32) {
        state.handle(Event::Ready { slot, pid });
    }

    /// `pid` exited with `code`, or was killed by signal `-code`.
    fn exited(state: &mut State<Fake>, slot: usize, pid: u32, code: i32) {
        let raw = if code < 0 { -code } else { code << 8 };
        state.handle(Event::Exited {
            slot,
            pid,
            status: Ok(ExitStatus::from_raw(raw)),
            uptime: Duration::from_secs(60),
        });
    }

    fn terminated(state: &State<Fake>) -> Vec<u32> {
        signalled(state, Signal::SIGTERM)
    }

    fn killed(state: &State<Fake>) -> Vec<u32> {
        signalled(state, Signal::SIGKILL)
    }

    fn signalled(state: &State<Fake>, sent: Signal) -> Vec<u32> {
        let signals = &state.processes.signals;
        signals
            .iter()
            .filter(|(_, signal)| *signal == sent)
            .map(|(pid, _)| *pid)
            .collect()
    }

    fn census(starting: usize, serving: usize, draining: usize) -> Census {
        Census {
            starting,
            serving,
            draining,
        }
    }

    #[test]
    fn sighup_replaces_one_slot_at_a_time_each_old_worker_stopped_once_its_successor_is_ready() {
        let mut state = serving(2, Limits::default());
        state.hangup();
        assert_eq!(state.processes.started[2..], [(0, 3)]);
        assert!(terminated(&state).is_empty());
        assert_eq!(state.census(), census(1, 2, 0));
        ready(&mut state, 0, 3);
        assert_eq!(terminated(&state), [1]);
        assert_eq!(state.processes.started[3..], [(1, 4)]);
        exited(&mut state, 0, 1, 0);
        assert_eq!(
            state.processes.started.len(),
            4,
            "a retired worker is not replaced"
        );
        ready(&mut state, 1, 4);
        assert_eq!(terminated(&state), [1, 2]);
        assert_eq!(state.census(), census(0, 2, 1));
        assert!(state.queue.is_empty() && !state.rolling);
    }

    #[test]
    fn a_replacement_that_fails_to_start_leaves_the_old_worker_and_ends_the_sighup_round() {
        let mut state = serving(2, Limits::default());
        state.hangup();
        exited(&mut state, 0, 3, 3);
        assert!(terminated(&state).is_empty());
        assert_eq!(state.processes.started.len(), 3, "slot 1 is not tried");
        assert_eq!(state.census(), census(0, 2, 0));
        assert!(state.queue.is_empty());
        // A later SIGHUP tries again.
        state.hangup();
        assert_eq!(state.processes.started[3..], [(0, 4)]);
    }

    #[test]
    fn a_worker_that_dies_while_its_replacement_starts_leaves_the_slot_to_it() {
        let mut state = serving(1, Limits::default());
        state.hangup();
        exited(&mut state, 0, 1, -9);
        assert_eq!(
            state.processes.due,
            [],
            "no back-off: the replacement is on its way"
        );
        assert_eq!(state.census(), census(1, 0, 0));
        ready(&mut state, 0, 2);
        assert!(terminated(&state).is_empty());
        assert_eq!(state.census(), census(0, 1, 0));
    }

    #[test]
    fn a_crashed_worker_is_started_again_after_a_back_off() {
        let mut state = serving(2, Limits::default());
        exited(&mut state, 1, 2, -9);
        assert_eq!(state.processes.due, [(1, FIRST_BACKOFF)]);
        assert_eq!(state.census(), census(0, 1, 0));
        state.handle(Event::Due { slot: 1 });
        assert_eq!(state.processes.started[2..], [(1, 3)]);
    }

    #[test]
    fn workers_past_their_lifetime_are_replaced_one_after_the_other() {
        let mut state = serving(2, Limits::new(None, Some(60)));
        state.check_limits(Instant::now());
        assert_eq!(state.processes.started.len(), 2);
        state.check_limits(Instant::now() + Duration::from_secs(61));
        assert_eq!(state.processes.started[2..], [(0, 3)]);
        ready(&mut state, 0, 3);
        assert_eq!(terminated(&state), [1]);
        assert_eq!(state.processes.started[3..], [(1, 4)]);
        ready(&mut state, 1, 4);
        assert_eq!(terminated(&state), [1, 2]);
    }

    #[test]
    fn only_the_worker_over_max_rss_is_replaced_and_not_again_before_a_back_off_if_that_fails() {
        let mut state = serving(2, Limits::new(Some(150), None));
        state
            .processes
            .resident
            .extend([(1, 200 * MIB), (2, 30 * MIB)]);
        let now = Instant::now();
        state.check_limits(now);
        assert_eq!(state.processes.started[2..], [(0, 3)]);
        exited(&mut state, 0, 3, 3);
        state.check_limits(now);
        assert_eq!(state.processes.started.len(), 3);
        state.check_limits(now + MAX_BACKOFF);
        assert_eq!(state.processes.started[3..], [(0, 4)]);
        ready(&mut state, 0, 4);
        assert_eq!(terminated(&state), [1]);
    }

    #[test]
    fn a_replacement_that_never_becomes_ready_is_killed_and_the_old_worker_keeps_serving() {
        let limits = Limits::default().startup_within(Duration::from_secs(30));
        let mut state = serving(2, limits);
        state.hangup();
        assert_eq!(state.processes.started[2..], [(0, 3)]);
        state.check_limits(Instant::now() + Duration::from_secs(29));
        assert!(killed(&state).is_empty());
        state.check_limits(Instant::now() + Duration::from_secs(31));
        state.check_limits(Instant::now() + Duration::from_secs(32));
        assert_eq!(killed(&state), [3], "killed once");
        exited(&mut state, 0, 3, -9);
        assert!(terminated(&state).is_empty(), "worker 1 still serves");
        assert_eq!(state.census(), census(0, 2, 0));
        assert!(state.failure.is_none());
    }

    #[test]
    fn a_first_worker_that_never_becomes_ready_fails_the_server() {
        let limits = Limits::default().startup_within(Duration::from_secs(30));
        let mut state = State::new(Fake::default(), 1, limits, false);
        state.start_all();
        state.check_limits(Instant::now() + Duration::from_secs(31));
        assert_eq!(killed(&state), [1]);
        exited(&mut state, 0, 1, -9);
        assert!(state.failure.is_some() && state.finished());
    }

    #[test]
    fn a_worker_restarted_after_a_crash_is_killed_if_it_never_becomes_ready() {
        let limits = Limits::default().startup_within(Duration::from_secs(30));
        let mut state = serving(2, limits);
        exited(&mut state, 1, 2, 1);
        state.handle(Event::Due { slot: 1 });
        assert_eq!(state.processes.started[2..], [(1, 3)]);
        state.check_limits(Instant::now() + Duration::from_secs(31));
        assert_eq!(killed(&state), [3], "the ready worker 1 is left alone");
    }

    #[test]
    fn sighup_before_any_worker_is_ready_waits_for_the_first() {
        let mut state = State::new(Fake::default(), 1, Limits::default(), false);
        state.start_all();
        state.hangup();
        assert_eq!(state.processes.started.len(), 1);
        ready(&mut state, 0, 1);
        assert_eq!(state.processes.started[1..], [(0, 2)]);
    }

    #[test]
    fn stopping_signals_every_process_and_ends_when_all_have_exited() {
        let mut state = serving(2, Limits::default());
        state.hangup();
        ready(&mut state, 0, 3);
        // 1 drains, 3 serves, 2 serves while its replacement 4 starts.
        state.received(Signal::SIGINT);
        let signals = &state.processes.signals;
        let mut interrupted: Vec<_> = signals[1..].iter().map(|(pid, _)| *pid).collect();
        interrupted.sort_unstable();
        assert_eq!(interrupted, [1, 2, 3, 4]);
        exited(&mut state, 1, 2, 0);
        assert_eq!(
            state.processes.started.len(),
            4,
            "nothing is started while stopping"
        );
        for (slot, pid) in [(0, 1), (0, 3), (1, 4)] {
            assert!(!state.finished());
            exited(&mut state, slot, pid, 0);
        }
        assert!(state.finished());
        assert!(state.failure.is_none());
    }

    #[test]
    fn workers_that_cannot_start_at_first_fail_the_server() {
        let mut state = State::new(Fake::default(), 2, Limits::default(), false);
        state.start_all();
        exited(&mut state, 0, 1, 1);
        assert!(
            state
                .failure
                .as_deref()
                .unwrap()
                .contains("failed to start")
        );
        exited(&mut state, 1, 2, 0);
        assert!(state.finished());
        let mut state = State::new(
            Fake {
                cannot_start: true,
                ..Fake::default()
            },
            1,
            Limits::default(),
            false,
        );
        state.start_all();
        assert!(state.failure.is_some() && state.finished());
    }

    #[test]
    fn a_file_change_stops_each_worker_and_starts_the_next_once_it_has_exited() {
        let mut state = State::new(Fake::default(), 1, Limits::default(), true);
        state.start_all();
        ready(&mut state, 0, 1);
        state.hangup();
        state.reload(std::path::Path::new("app.py"));
        // The replacement under way and the worker both stop.
        assert_eq!(terminated(&state), [2, 1]);
        exited(&mut state, 0, 2, 0);
        assert_eq!(state.processes.started.len(), 2);
        exited(&mut state, 0, 1, 0);
        assert_eq!(state.processes.started[2..], [(0, 3)]);
        // Under --reload, a worker that fails waits for the next change.
        exited(&mut state, 0, 3, 1);
        assert!(state.processes.due.is_empty());
        state.reload(std::path::Path::new("app.py"));
        assert_eq!(state.processes.started[3..], [(0, 4)]);
    }

    #[test]
    fn back_off_doubles_from_a_tenth_of_a_second_up_to_ten_seconds() {
        let waits: Vec<_> = (1..=9)
            .map(|crashes| backoff(crashes).as_millis())
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
