//! [`Signal`]: a one-shot event many tasks wait for, checked on every request's path.
//!
//! It does what tokio-util's `CancellationToken` does without child tokens, which is all
//! the server needs, and without the lock: the token keeps its state behind a mutex, so its
//! check, clone and drop each lock it, and its `cancelled()` future relocks its waiter list
//! each time the task polling it wakes for something else. A request took about twenty
//! such locks (the connection's shutdown stages, its disconnect, its body failure): 4–5 %
//! of the server's CPU with a raw ASGI app. Here a check is one atomic load, a clone one
//! reference count, and a waiting future takes the waiter list's lock once per task.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// A one-shot event: [`Signal::cancel`] fires it for every clone, once and for good.
#[derive(Clone, Default)]
pub(crate) struct Signal(Arc<Shared>);

#[derive(Default)]
struct Shared {
    fired: AtomicBool,
    waiters: Notify,
}

impl Signal {
    pub(crate) fn new() -> Self {
        Signal::default()
    }

    /// Fires the signal; waiting tasks wake, later checks see it.
    pub(crate) fn cancel(&self) {
        if !self.0.fired.swap(true, Ordering::AcqRel) {
            self.0.waiters.notify_waiters();
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.fired.load(Ordering::Acquire)
    }

    /// Completes once the signal has fired (at once if it has).
    pub(crate) fn cancelled(&self) -> Cancelled<'_> {
        Cancelled {
            signal: self,
            notified: self.0.waiters.notified(),
            registered: None,
        }
    }

    /// Fires the signal when the guard is dropped, unless it is disarmed first.
    pub(crate) fn drop_guard(self) -> DropGuard {
        DropGuard(Some(self))
    }
}

pin_project! {
    /// The future of [`Signal::cancelled`].
    pub(crate) struct Cancelled<'a> {
        signal: &'a Signal,
        // Created with the future: `notify_waiters` wakes it even before its first poll.
        #[pin]
        notified: Notified<'a>,
        // The waker the waiter list holds for this future.
        registered: Option<Waker>,
    }
}

impl Future for Cancelled<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.signal.is_cancelled() {
            return Poll::Ready(());
        }
        // Firing wakes the waker the list holds; while it is this task's, the list need not
        // be locked again to learn nothing happened.
        if let Some(registered) = this.registered
            && registered.will_wake(cx.waker())
        {
            return Poll::Pending;
        }
        if this.notified.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        *this.registered = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Fires its [`Signal`] when dropped, unless [disarmed](DropGuard::disarm).
pub(crate) struct DropGuard(Option<Signal>);

impl DropGuard {
    /// Gives the signal back without firing it.
    pub(crate) fn disarm(mut self) -> Signal {
        self.0.take().expect("a guard is armed until disarmed")
    }
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(signal) = &self.0 {
            signal.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_waiting_task_wakes_when_the_signal_fires() {
        let signal = Signal::new();
        let waiter = tokio::spawn({
            let signal = signal.clone();
            async move { signal.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        signal.cancel();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes")
            .expect("the waiter does not panic");
        assert!(signal.is_cancelled());
    }

    #[tokio::test]
    async fn a_future_created_before_the_signal_fires_completes_on_its_first_poll() {
        let signal = Signal::new();
        let cancelled = signal.cancelled();
        signal.cancel();
        tokio::time::timeout(Duration::from_secs(5), cancelled)
            .await
            .expect("already fired");
        tokio::time::timeout(Duration::from_secs(5), signal.cancelled())
            .await
            .expect("created after firing");
    }

    #[tokio::test]
    async fn a_task_woken_by_something_else_keeps_waiting_and_still_wakes_on_the_signal() {
        let signal = Signal::new();
        let other = Arc::new(Notify::new());
        let waiter = tokio::spawn({
            let (signal, other) = (signal.clone(), other.clone());
            async move {
                let mut cancelled = std::pin::pin!(signal.cancelled());
                let mut woken = 0;
                loop {
                    tokio::select! {
                        () = &mut cancelled => return woken,
                        () = other.notified() => woken += 1,
                    }
                }
            }
        });
        for _ in 0..3 {
            other.notify_one();
            tokio::task::yield_now().await;
        }
        signal.cancel();
        let woken = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes")
            .expect("the waiter does not panic");
        assert_eq!(woken, 3);
    }

    #[test]
    fn a_dropped_guard_fires_and_a_disarmed_one_does_not() {
        let signal = Signal::new();
        let kept = signal.clone().drop_guard().disarm();
        assert!(!kept.is_cancelled());
        drop(signal.clone().drop_guard());
        assert!(signal.is_cancelled());
    }
}
