//! Starting the embedded interpreter the way `python` would start for the user's project:
//! inside their virtualenv when one is active, and without Python's own signal handlers
//! (the server owns SIGINT/SIGTERM).

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::path::PathBuf;

use pyo3::ffi;

/// Initialise CPython once for this process and release the GIL from the calling thread,
/// so that only the loop thread holds it from then on.
///
/// When `VIRTUAL_ENV` names a virtualenv, the interpreter is started as that venv's
/// `bin/python` would be: CPython then reads `pyvenv.cfg` and puts the venv's site-packages
/// on `sys.path`, exactly as for `pip install` + `python -m uvicorn`.
///
/// In an interpreter that is already running (this crate inside an extension module: the
/// wheel's `rust_asgi_server`, or a library user's maturin project) there is nothing to do:
/// the app is served by that interpreter, as it was started.
pub(crate) fn initialize() -> Result<(), String> {
    // SAFETY: Py_IsInitialized may be called at any time.
    if unsafe { ffi::Py_IsInitialized() } != 0 {
        // As below, `threading` must take the main thread for its own. A host program that
        // has not imported it yet (an extension module's caller, from the main thread) gets
        // it imported here rather than first on the loop thread. From another thread it is
        // left to the host.
        // SAFETY: gettid and getpid have no arguments; equal, this is the main thread.
        if unsafe { libc::gettid() == libc::getpid() } {
            pyo3::Python::attach(|py| py.import("threading").map(drop))
                .map_err(|err| format!("cannot import threading: {err}"))?;
        }
        return Ok(());
    }
    let virtual_env = std::env::var_os("VIRTUAL_ENV").map(PathBuf::from);
    // SAFETY: called once, before any other use of the interpreter in this process; the
    // config struct is initialised by CPython before we touch it and cleared afterwards.
    unsafe {
        let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        config.install_signal_handlers = 0;
        if let Some(venv) = &virtual_env {
            let python = venv.join("bin").join("python");
            let python = CString::new(python.to_string_lossy().as_bytes())
                .map_err(|_| "VIRTUAL_ENV contains a NUL byte".to_string())?;
            let status = ffi::PyConfig_SetBytesString(
                &mut config,
                &mut config.program_name,
                python.as_ptr(),
            );
            if ffi::PyStatus_Exception(status) != 0 {
                ffi::PyConfig_Clear(&mut config);
                return Err(format!("cannot use VIRTUAL_ENV={}", venv.display()));
            }
        }
        let status = ffi::Py_InitializeFromConfig(&config);
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(status) != 0 {
            return Err("the Python interpreter failed to start".into());
        }
    }
    // `threading` records the thread that first imports it as the main thread. That must be
    // this one, not the loop thread: uvloop would otherwise try to install signal wake-ups
    // from the loop thread and fail.
    pyo3::Python::attach(|py| py.import("threading").map(drop))
        .map_err(|err| format!("cannot import threading: {err}"))?;
    // SAFETY: the interpreter is initialised and this thread holds the GIL after
    // `Py_InitializeFromConfig`; the returned thread state is deliberately never restored.
    unsafe {
        ffi::PyEval_SaveThread();
    }
    Ok(())
}
