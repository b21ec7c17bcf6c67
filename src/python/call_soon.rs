//! `call_soon` of the loop of `--runtime-mode single`, written in Rust.
//!
//! That loop is asyncio's own (the one whose selector the connections' runtime can be), and
//! asyncio schedules a callback in Python: `call_soon`, `_check_closed`, `_call_soon` and
//! `Handle.__init__`, about 5k instructions under Python 3.11. Every request pays it at least
//! once (its task's first step), and an app again for each future it awaits. uvloop does the
//! same work in Cython; this does it as asyncio does outside debug mode: a `Handle` whose
//! slots are filled as `__init__` fills them, appended to the loop's ready queue. In debug
//! mode, or once the loop is closed, asyncio's own `call_soon` runs, with its checks and
//! errors.
//!
//! It also lets a request's task take its first step at once ([`first_step_of`]): the step
//! asyncio's `Task.__init__` schedules is kept instead, for the caller to run.

use std::cell::RefCell;

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::{ffi, intern};

/// `asyncio.Handle`'s slots but `__weakref__`, in the order [`call_soon`] fills them.
const HANDLE_SLOTS: [&str; 7] = [
    "_context",
    "_loop",
    "_callback",
    "_args",
    "_cancelled",
    "_repr",
    "_source_traceback",
];

/// `asyncio.Handle` and where its slots are in a handle, in [`HANDLE_SLOTS`]' order.
struct HandleLayout {
    handle_type: Py<PyType>,
    offsets: [ffi::Py_ssize_t; HANDLE_SLOTS.len()],
}

/// Makes `event_loop.call_soon` the Rust one, if this Python's `asyncio.Handle` has exactly
/// the slots [`call_soon`] fills; otherwise the loop keeps asyncio's.
pub(super) fn install(event_loop: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = event_loop.py();
    if handle_layout(py)?.is_none() {
        tracing::debug!("asyncio.Handle is not as expected: the loop keeps its call_soon");
        return Ok(());
    }
    let ready_append = event_loop
        .getattr(intern!(py, "_ready"))?
        .getattr(intern!(py, "append"))?;
    let call_soon = py.import("functools")?.getattr("partial")?.call1((
        pyo3::wrap_pyfunction!(call_soon, py)?,
        event_loop,
        ready_append,
    ))?;
    event_loop.setattr("call_soon", call_soon)
}

fn handle_layout(py: Python<'_>) -> PyResult<Option<&HandleLayout>> {
    static LAYOUT: PyOnceLock<Option<HandleLayout>> = PyOnceLock::new();
    let layout = LAYOUT.get_or_try_init(py, || {
        let handle_type = py
            .import("asyncio")?
            .getattr("Handle")?
            .cast_into::<PyType>()?;
        let mut slots: Vec<String> = handle_type.getattr("__slots__")?.extract()?;
        slots.retain(|slot| slot != "__weakref__");
        slots.sort();
        let mut expected = HANDLE_SLOTS.map(String::from).to_vec();
        expected.sort();
        if slots != expected {
            return Ok(None);
        }
        let member_descriptor = py.import("types")?.getattr("MemberDescriptorType")?;
        let class_dict = handle_type.getattr("__dict__")?;
        let mut offsets = [0; HANDLE_SLOTS.len()];
        for (offset, name) in offsets.iter_mut().zip(HANDLE_SLOTS) {
            let descriptor = class_dict.get_item(name)?;
            if !descriptor.get_type().is(&member_descriptor) {
                return Ok(None);
            }
            // SAFETY: a member descriptor is a `PyMemberDescrObject`, whose member definition
            // lives as long as its class, which `HandleLayout` keeps.
            let member =
                unsafe { &*(*descriptor.as_ptr().cast::<ffi::PyMemberDescrObject>()).d_member };
            if member.type_code != ffi::Py_T_OBJECT_EX || member.flags & ffi::Py_READONLY != 0 {
                return Ok(None);
            }
            *offset = member.offset;
        }
        Ok::<_, PyErr>(Some(HandleLayout {
            handle_type: handle_type.unbind(),
            offsets,
        }))
    })?;
    Ok(layout.as_ref())
}

/// A task's first step, kept by [`first_step_of`] rather than scheduled.
pub(super) struct FirstStep {
    step: Py<PyAny>,
    context: Py<PyAny>,
}

impl FirstStep {
    /// Runs the step in its context, as the loop's `Handle` would have. What it raises goes
    /// to the loop's exception handler, as a handle's does, but for `SystemExit` and
    /// `KeyboardInterrupt`, which a handle lets out of the loop: they are returned.
    pub(super) fn run(self, event_loop: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = event_loop.py();
        // SAFETY: the GIL is held; the context is a live `contextvars.Context`, entered and
        // exited around the call on this thread; a NULL result comes with the exception set.
        let stepped = unsafe {
            if ffi::PyContext_Enter(self.context.as_ptr()) != 0 {
                Err(PyErr::fetch(py))
            } else {
                let result = ffi::PyObject_CallNoArgs(self.step.as_ptr());
                let stepped = Bound::from_owned_ptr_or_err(py, result).map(drop);
                ffi::PyContext_Exit(self.context.as_ptr());
                stepped
            }
        };
        let Err(err) = stepped else { return Ok(()) };
        if !err.is_instance_of::<PyException>(py) {
            return Err(err);
        }
        let report = PyDict::new(py);
        let reported = report
            .set_item("message", "Exception in a request task's first step")
            .and_then(|()| report.set_item("exception", err.value(py)))
            .and_then(|()| event_loop.call_method1("call_exception_handler", (report,)));
        if let Err(err) = reported {
            tracing::error!("a request task's first step failed: {err}");
        }
        Ok(())
    }
}

/// Whether [`call_soon`] keeps the callback it is given.
enum Keeping {
    /// Outside [`first_step_of`]: every callback is queued.
    No,
    /// Inside [`first_step_of`], nothing kept yet: the next callback is.
    Next,
    /// Inside [`first_step_of`], once the first callback was kept: the rest are queued.
    Kept(FirstStep),
}

thread_local! {
    static KEEPING: RefCell<Keeping> = const { RefCell::new(Keeping::No) };
}

/// Runs `create_task`, keeping the first callback it schedules with this loop's `call_soon`
/// (the new task's first step) instead of queueing it. `None` when nothing was kept: the
/// loop's `call_soon` is asyncio's (debug mode, another loop) and the step is queued.
pub(super) fn first_step_of<T>(create_task: impl FnOnce() -> T) -> (T, Option<FirstStep>) {
    let outer = KEEPING.replace(Keeping::Next);
    let created = create_task();
    let step = match KEEPING.replace(outer) {
        Keeping::Kept(step) => Some(step),
        Keeping::No | Keeping::Next => None,
    };
    (created, step)
}

/// `loop.call_soon(callback, *args, context=None)`: a `Handle` appended to the loop's
/// ready queue (`ready_append`), which the loop runs on its next pass; inside
/// [`first_step_of`], the first callback is kept instead, and `None` returned.
#[pyfunction]
#[pyo3(signature = (event_loop, ready_append, callback, *args, context=None))]
fn call_soon<'py>(
    event_loop: &Bound<'py, PyAny>,
    ready_append: &Bound<'py, PyAny>,
    callback: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    context: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = event_loop.py();
    let layout = handle_layout(py)?.expect("installed only with the expected Handle");
    if event_loop.getattr(intern!(py, "_debug"))?.is_truthy()?
        || event_loop.getattr(intern!(py, "_closed"))?.is_truthy()?
    {
        return asyncio_call_soon(event_loop, callback, args, context);
    }
    let context = match context {
        Some(context) if !context.is_none() => context.clone(),
        // SAFETY: the GIL is held; a non-NULL result is a new reference.
        _ => unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent())? },
    };
    if args.is_empty() {
        let kept = KEEPING.with_borrow_mut(|keeping| match keeping {
            Keeping::Next => {
                *keeping = Keeping::Kept(FirstStep {
                    step: callback.clone().unbind(),
                    context: context.clone().unbind(),
                });
                true
            }
            Keeping::No | Keeping::Kept(_) => false,
        });
        if kept {
            return Ok(py.None().into_bound(py));
        }
    }
    let values = [
        context.into_any(),
        event_loop.clone(),
        callback.clone(),
        args.clone().into_any(),
        pyo3::types::PyBool::new(py, false).to_owned().into_any(),
        py.None().into_bound(py),
        py.None().into_bound(py),
    ];
    // SAFETY: the GIL is held. `tp_alloc` returns a new handle with every slot NULL (or NULL
    // with an exception set), and each offset is that of an object slot of `Handle`
    // (checked in `handle_layout`): each slot takes the reference `into_ptr` gives up.
    let handle = unsafe {
        let type_object = layout.handle_type.bind(py).as_type_ptr();
        let alloc = (*type_object).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
        let handle = Bound::from_owned_ptr_or_err(py, alloc(type_object, 0))?;
        for (offset, value) in layout.offsets.iter().zip(values) {
            let slot = handle
                .as_ptr()
                .cast::<u8>()
                .offset(*offset)
                .cast::<*mut ffi::PyObject>();
            *slot = value.into_ptr();
        }
        handle
    };
    ready_append.call1((&handle,))?;
    Ok(handle)
}

/// asyncio's own `call_soon` of `event_loop`'s class.
fn asyncio_call_soon<'py>(
    event_loop: &Bound<'py, PyAny>,
    callback: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    context: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = event_loop.py();
    let method = event_loop.get_type().getattr(intern!(py, "call_soon"))?;
    let mut positional = vec![event_loop.clone(), callback.clone()];
    positional.extend(args.iter());
    let kwargs = PyDict::new(py);
    if let Some(context) = context {
        kwargs.set_item(intern!(py, "context"), context)?;
    }
    method.call(PyTuple::new(py, positional)?, Some(&kwargs))
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;

    use super::*;

    /// Runs `code` with `event_loop`, a new asyncio loop with the Rust `call_soon`, and
    /// [`keep_first`].
    fn run(code: &str) {
        Python::attach(|py| {
            let event_loop = py
                .import("asyncio")
                .unwrap()
                .call_method0("new_event_loop")
                .unwrap();
            install(&event_loop).unwrap();
            let globals = PyDict::new(py);
            globals.set_item("event_loop", &event_loop).unwrap();
            let keep_first = wrap_pyfunction!(keep_first, py).unwrap();
            globals.set_item("keep_first", keep_first).unwrap();
            let code = CString::new(code).unwrap();
            let ran = py.run(&code, Some(&globals), None);
            event_loop.call_method0("close").unwrap();
            ran.unwrap();
        });
    }

    /// `keep_first(event_loop, create)`: calls `create()` inside [`first_step_of`] and gives
    /// its result and a callable that runs the kept step (`None` when nothing was kept); the
    /// callable returns what the step let out of the loop, as a string, or `None`.
    #[pyfunction]
    fn keep_first<'py>(
        py: Python<'py>,
        event_loop: Py<PyAny>,
        create: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyAny>, Option<Py<PyAny>>)> {
        let (created, first_step) = first_step_of(|| create.call0());
        let first_step = first_step.map(|first_step| {
            let first_step = std::sync::Mutex::new(Some(first_step));
            let run = move |_args: &Bound<'_, PyTuple>,
                            _kwargs: Option<&Bound<'_, PyDict>>|
                  -> Option<String> {
                Python::attach(|py| {
                    let first_step = first_step.lock().unwrap().take().expect("run once");
                    let escaped = first_step.run(event_loop.bind(py)).err();
                    escaped.map(|err| err.to_string())
                })
            };
            pyo3::types::PyCFunction::new_closure(py, None, None, run)
                .expect("a closure")
                .into_any()
                .unbind()
        });
        Ok((created?, first_step))
    }

    #[test]
    fn callbacks_run_in_order_with_their_arguments_and_context() {
        run(r#"
import asyncio, contextvars, functools
# The Rust call_soon, bound to the loop.
assert isinstance(event_loop.call_soon, functools.partial)
var = contextvars.ContextVar("var", default="unset")
calls = []
context = contextvars.copy_context()
context.run(var.set, "given")
event_loop.call_soon(lambda *args: calls.append(("first", args, var.get())), 1, 2)
event_loop.call_soon(lambda: calls.append(("second", (), var.get())), context=context)
cancelled = event_loop.call_soon(lambda: calls.append(("cancelled", (), var.get())))
cancelled.cancel()
event_loop.run_until_complete(asyncio.sleep(0))
assert calls == [("first", (1, 2), "unset"), ("second", (), "given")], calls
"#);
    }

    #[test]
    fn handles_are_asyncio_handles_as_asyncio_makes_them() {
        run(r#"
import asyncio
ours = event_loop.call_soon(print, "x")
theirs = asyncio.Handle(print, ("x",), event_loop, ours._context)
assert type(ours) is asyncio.Handle
for slot in ("_callback", "_args", "_cancelled", "_loop", "_source_traceback", "_repr", "_context"):
    assert getattr(ours, slot) == getattr(theirs, slot), slot
assert repr(ours) == repr(theirs), (repr(ours), repr(theirs))
ours.cancel()
assert ours.cancelled()
"#);
    }

    #[test]
    fn a_closed_loop_refuses_and_debug_mode_keeps_asyncios_checks() {
        run(r#"
import asyncio
event_loop.set_debug(True)
try:
    event_loop.call_soon(asyncio.sleep)
except TypeError as error:
    assert "coroutines cannot be used with call_soon()" in str(error), error
else:
    raise AssertionError("debug mode did not check the callback")
event_loop.set_debug(False)
event_loop.close()
try:
    event_loop.call_soon(print)
except RuntimeError as error:
    assert "closed" in str(error), error
else:
    raise AssertionError("a closed loop took a callback")
"#);
    }

    #[test]
    fn a_new_tasks_first_step_is_kept_and_runs_as_the_task_in_its_context() {
        run(r#"
import asyncio, contextvars
var = contextvars.ContextVar("var", default="unset")
seen = []
async def app():
    seen.append(("first", asyncio.current_task() is task, var.get()))
    var.set("set in the task")
    await asyncio.sleep(0)
    seen.append(("second", asyncio.current_task() is task, var.get()))
def start():
    # As the server starts a request: from a callback of the running loop, no task current.
    global task
    queued = len(event_loop._ready)
    task, step = keep_first(event_loop, lambda: asyncio.Task(app(), loop=event_loop))
    # The step was kept, not queued: nothing ran yet.
    seen.append(("kept", step is not None, len(event_loop._ready) - queued))
    seen.append(("stepped", step()))
    seen.append(("after", asyncio.current_task(event_loop) is None, var.get()))
event_loop.call_soon(start)
event_loop.run_until_complete(asyncio.sleep(0))
event_loop.run_until_complete(task)
assert seen == [
    ("kept", True, 0),
    ("first", True, "unset"),
    ("stepped", None),
    ("after", True, "unset"),
    # The rest of the task runs as a queued task's does, in the task's own context.
    ("second", True, "set in the task"),
], seen
"#);
    }

    #[test]
    fn only_the_first_callback_is_kept_and_none_outside() {
        run(r#"
import asyncio
calls = []
def create():
    event_loop.call_soon(calls.append, "queued with arguments")
    event_loop.call_soon(calls.append, "also queued")
    first = event_loop.call_soon(lambda: calls.append("kept"))
    event_loop.call_soon(lambda: calls.append("queued after"))
    return first
kept, step = keep_first(event_loop, create)
assert kept is None, kept
after = event_loop.call_soon(lambda: calls.append("outside"))
assert isinstance(after, asyncio.Handle)
event_loop.run_until_complete(asyncio.sleep(0))
assert calls == ["queued with arguments", "also queued", "queued after", "outside"], calls
assert step() is None
assert calls[-1] == "kept", calls
"#);
    }

    #[test]
    fn a_first_step_lets_system_exit_out_and_reports_other_errors_to_the_loop() {
        run(r#"
reported = []
event_loop.set_exception_handler(lambda loop, context: reported.append(context))
def fail(error):
    def step():
        raise error
    return keep_first(event_loop, lambda: event_loop.call_soon(step))[1]
assert "SystemExit: stop" in fail(SystemExit("stop"))(), reported
assert reported == []
assert fail(ValueError("broken"))() is None
assert [type(context["exception"]) for context in reported] == [ValueError], reported
assert "first step" in reported[0]["message"], reported
"#);
    }
}
