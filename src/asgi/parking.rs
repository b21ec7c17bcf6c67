//! Waiting without blocking: how `receive` and `send` park on asyncio futures that Tokio
//! (or, for lifespan, the server) resolves, for every bridge.
//!
//! [`Inbox`] reads one message at a time from a Tokio-side source. [`Outbox`] pushes items
//! into a bounded Tokio channel. Both answer at once when they can and otherwise return a
//! loop future; the Tokio task that finishes the wait queues a job that resolves it. A
//! future the app cancelled meanwhile is never resolved, and what it would have received is
//! kept for the next call, so cancelling never loses data or raises `InvalidStateError`.

use std::collections::VecDeque;
use std::future::Future;

use pyo3::intern;
use pyo3::prelude::*;
use tokio::sync::mpsc;

use super::awaitable::ready;
use super::cycle::Cycle;
use crate::python::EventLoop;

/// A message the app can receive, turned into its ASGI dict on the loop thread.
pub(super) trait IntoMessage: Send + 'static {
    fn into_message(self, py: Python<'_>) -> PyResult<Py<PyAny>>;
}

/// The receive side of a cycle: a source read on Tokio, one message per read.
pub(super) struct Inbox<S, M> {
    /// `None` while a read owns it, or once it has ended.
    source: Option<S>,
    in_flight: bool,
    waiter: Option<Py<PyAny>>,
    /// What arrived for a `receive()` the app had cancelled.
    early: Option<M>,
}

/// What `receive()` does when nothing is left from earlier calls.
pub(super) enum Next<S, M, F> {
    /// Answer at once; the source, while it goes on, returns to the inbox.
    Ready(Option<S>, M),
    /// Park and run this read on Tokio; it gives the source back with the message.
    Read(F),
}

impl<S: Send + 'static, M: IntoMessage> Inbox<S, M> {
    pub(super) fn new(source: S) -> Self {
        Inbox {
            source: Some(source),
            in_flight: false,
            waiter: None,
            early: None,
        }
    }

    /// The app's `receive()`: answers with a message kept from a cancelled wait, or parks
    /// behind the read in flight; otherwise `next` decides from the source (`None` once it
    /// has ended) what to answer or read.
    pub(super) fn receive<C, F>(
        slf: &Bound<'_, C>,
        inbox: fn(&mut C) -> &mut Self,
        next: impl FnOnce(&C, Option<S>) -> Next<S, M, F>,
    ) -> PyResult<Py<PyAny>>
    where
        C: Cycle,
        F: Future<Output = (Option<S>, M)> + Send + 'static,
    {
        let py = slf.py();
        let mut cycle = slf.borrow_mut();
        let event_loop = cycle.event_loop().clone();
        let this = inbox(&mut cycle);
        if let Some(message) = this.early.take() {
            return ready(py, Some(message.into_message(py)?));
        }
        if this.in_flight {
            return park(py, &event_loop, &mut this.waiter);
        }
        let source = this.source.take();
        match next(&cycle, source) {
            Next::Ready(source, message) => {
                inbox(&mut cycle).source = source;
                ready(py, Some(message.into_message(py)?))
            }
            Next::Read(read) => {
                let this = inbox(&mut cycle);
                this.in_flight = true;
                let waiter = park(py, &event_loop, &mut this.waiter)?;
                drop(cycle);
                Self::spawn_read(slf.clone().unbind(), event_loop, inbox, read);
                Ok(waiter)
            }
        }
    }

    /// Runs `read` on Tokio, then gives its message to the parked `receive()`.
    fn spawn_read<C, F>(
        cycle: Py<C>,
        event_loop: EventLoop,
        inbox: fn(&mut C) -> &mut Self,
        read: F,
    ) where
        C: Cycle,
        F: Future<Output = (Option<S>, M)> + Send + 'static,
    {
        let completion_loop = event_loop.clone();
        event_loop.runtime().spawn(async move {
            let (source, message) = read.await;
            completion_loop.submit(Box::new(move |py| {
                let mut cycle = cycle.bind(py).borrow_mut();
                let this = inbox(&mut cycle);
                this.in_flight = false;
                this.source = source;
                this.early = deliver(py, &mut this.waiter, message);
            }));
        });
    }
}

/// The send side of a cycle: items go into a bounded Tokio channel, in order.
pub(super) struct Outbox<T> {
    in_flight: bool,
    /// Items queued behind a parked send, each with its sender and the future to resolve.
    backlog: VecDeque<(mpsc::Sender<T>, T, Py<PyAny>)>,
}

/// The receiving end of the channel is gone (client disconnected).
pub(super) struct Closed;

impl<T: Send + 'static> Outbox<T> {
    pub(super) fn new() -> Self {
        Outbox {
            in_flight: false,
            backlog: VecDeque::new(),
        }
    }

    /// Queues `item`; returns `Ready(None)` when the channel took it, or a future that
    /// completes once Tokio has room for it.
    pub(super) fn push<C: Cycle>(
        slf: &Bound<'_, C>,
        outbox: fn(&mut C) -> &mut Self,
        sender: &mpsc::Sender<T>,
        item: T,
    ) -> PyResult<Result<Py<PyAny>, Closed>> {
        let py = slf.py();
        let mut cycle = slf.borrow_mut();
        let event_loop = cycle.event_loop().clone();
        let this = outbox(&mut cycle);
        if this.in_flight {
            let waiter = event_loop.objects().create_future.call0(py)?;
            this.backlog
                .push_back((sender.clone(), item, waiter.clone_ref(py)));
            return Ok(Ok(waiter));
        }
        match sender.try_send(item) {
            Ok(()) => Ok(Ok(ready(py, None)?)),
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(Err(Closed)),
            Err(mpsc::error::TrySendError::Full(item)) => {
                let waiter = event_loop.objects().create_future.call0(py)?;
                this.in_flight = true;
                drop(cycle);
                spawn_send(
                    slf.clone().unbind(),
                    &event_loop,
                    outbox,
                    sender.clone(),
                    item,
                    waiter.clone_ref(py),
                );
                Ok(Ok(waiter))
            }
        }
    }
}

impl<T: Send + 'static> Default for Outbox<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Waits for room on Tokio, then resolves `waiter` and starts the next queued item.
fn spawn_send<C, T>(
    cycle: Py<C>,
    event_loop: &EventLoop,
    outbox: fn(&mut C) -> &mut Outbox<T>,
    sender: mpsc::Sender<T>,
    item: T,
    waiter: Py<PyAny>,
) where
    C: Cycle,
    T: Send + 'static,
{
    let completion_loop = event_loop.clone();
    event_loop.runtime().spawn(async move {
        // Resume the app only once half the channel is free, so a long stream costs one
        // loop wake-up per few chunks rather than one per chunk. A closed channel means the
        // client left; the app learns it from `receive()`.
        let room = (sender.max_capacity() / 2).max(1);
        if let Ok(mut permits) = sender.reserve_many(room).await
            && let Some(permit) = permits.next()
        {
            permit.send(item);
        }
        completion_loop.clone().submit(Box::new(move |py| {
            resolve(py, waiter.bind(py), None);
            let next = {
                let mut bound = cycle.bind(py).borrow_mut();
                let this = outbox(&mut bound);
                let next = this.backlog.pop_front();
                this.in_flight = next.is_some();
                next
            };
            if let Some((sender, item, waiter)) = next {
                spawn_send(cycle, &completion_loop, outbox, sender, item, waiter);
            }
        }));
    });
}

/// Parks a call on a new loop future, which `waiter` keeps for [`deliver`].
pub(super) fn park(
    py: Python<'_>,
    event_loop: &EventLoop,
    waiter: &mut Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    let future = event_loop.objects().create_future.call0(py)?;
    *waiter = Some(future.clone_ref(py));
    Ok(future)
}

/// Hands `message` to the call parked in `waiter`. Gives it back when no call waits, or the
/// app cancelled the one that did: the caller keeps it for the next call.
pub(super) fn deliver<M: IntoMessage>(
    py: Python<'_>,
    waiter: &mut Option<Py<PyAny>>,
    message: M,
) -> Option<M> {
    let Some(waiter) = waiter.take().filter(|waiter| !is_done(waiter.bind(py))) else {
        return Some(message);
    };
    match message.into_message(py) {
        Ok(message) => resolve(py, waiter.bind(py), Some(message)),
        Err(err) => {
            let _ = waiter
                .bind(py)
                .call_method1(intern!(py, "set_exception"), (err.value(py),));
        }
    }
    None
}

fn is_done(future: &Bound<'_, PyAny>) -> bool {
    future
        .call_method0(intern!(future.py(), "done"))
        .and_then(|done| done.is_truthy())
        .unwrap_or(true)
}

/// Completes a parked awaitable unless the app cancelled it meanwhile: a cancelled future
/// must never get `set_result` (asyncio would raise `InvalidStateError`).
fn resolve(py: Python<'_>, future: &Bound<'_, PyAny>, value: Option<Py<PyAny>>) {
    if is_done(future) {
        return;
    }
    let value = value.unwrap_or_else(|| py.None());
    if let Err(err) = future.call_method1(intern!(py, "set_result"), (value,)) {
        tracing::error!("cannot resume the ASGI app: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Probe;

    impl IntoMessage for Probe {
        fn into_message(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
            Ok(py.None())
        }
    }

    #[test]
    fn a_cancelled_wait_is_never_resolved_and_its_message_is_kept() {
        Python::attach(|py| {
            let event_loop = py
                .import("asyncio")
                .unwrap()
                .call_method0("new_event_loop")
                .unwrap();
            let cancelled = event_loop.call_method0("create_future").unwrap();
            cancelled.call_method0("cancel").unwrap();
            let mut waiter = Some(cancelled.unbind());
            assert!(deliver(py, &mut waiter, Probe).is_some());
            assert!(waiter.is_none());

            let waiting = event_loop.call_method0("create_future").unwrap();
            let mut waiter = Some(waiting.clone().unbind());
            assert!(deliver(py, &mut waiter, Probe).is_none());
            assert!(is_done(&waiting));
            event_loop.call_method0("close").unwrap();
        });
    }
}
