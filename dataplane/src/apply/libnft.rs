//! In-process nft through libnftables, loaded at run time with `dlopen`.
//!
//! # Why
//!
//! A transaction that deletes anything (an endpoint replaced in a backend map is a delete plus an add)
//! leaves the kernel with objects to free after an RCU grace period. The kernel frees them from a
//! worker, but when a netfilter netlink socket is *closed* it waits for that worker
//! (`nft_rcv_nl_event` → `nf_tables_trans_destroy_flush_work`, measured with `perf sched` on this
//! kernel). Every `nft -f -` process closes its socket on exit, so each partial sync that replaced an
//! endpoint paid ~10 ms of waiting on top of ~5 ms of process start-up and cache fetch. One long-lived
//! libnftables context keeps its socket open: the kernel still frees asynchronously, nobody waits.
//!
//! # Safety
//!
//! This is the only module of the crate with `unsafe` code. It calls six C functions of
//! libnftables' stable public API (`libnftables(3)`, soname `libnftables.so.1`) through function
//! pointers resolved with `dlsym`; the library handle is never closed, so the pointers stay valid for
//! the life of the process. A context is used by one thread at a time (a [`Mutex`] guards it), as
//! libnftables requires. Strings passed in are NUL-terminated [`CString`]s that outlive the call;
//! strings returned are copied before the next call on the same context, which is when libnftables
//! may reuse their memory.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxBuffer = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxGetBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// The resolved entry points of libnftables.
struct Api {
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    buffer_output: CtxBuffer,
    buffer_error: CtxBuffer,
    get_error_buffer: CtxGetBuffer,
    run_cmd_from_buffer: RunCmd,
}

/// The function `name` of the library `handle`, as the function-pointer type `F`.
///
/// # Safety
/// `handle` must be a live `dlopen` handle and `F` the exact C signature of `name`.
unsafe fn func<F: Copy>(handle: *mut c_void, name: &CStr) -> Option<F> {
    // SAFETY: the caller guarantees `handle` is live; `name` is NUL-terminated.
    let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
    if p.is_null() || std::mem::size_of::<F>() != std::mem::size_of::<*mut c_void>() {
        return None;
    }
    // SAFETY: `F` is a function-pointer type of the same size as `p`, with the symbol's signature
    // (the caller's guarantee).
    Some(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

impl Api {
    fn load() -> Option<Api> {
        // SAFETY: plain dlopen of a system library by soname; the handle is intentionally leaked so
        // every symbol stays valid for the process lifetime.
        let handle = unsafe { libc::dlopen(c"libnftables.so.1".as_ptr(), libc::RTLD_NOW) };
        if handle.is_null() {
            return None;
        }
        // SAFETY: `handle` is live, and each type below is the symbol's C signature in
        // libnftables.h (stable since 0.9).
        unsafe {
            Some(Api {
                ctx_new: func::<CtxNew>(handle, c"nft_ctx_new")?,
                ctx_free: func::<CtxFree>(handle, c"nft_ctx_free")?,
                buffer_output: func::<CtxBuffer>(handle, c"nft_ctx_buffer_output")?,
                buffer_error: func::<CtxBuffer>(handle, c"nft_ctx_buffer_error")?,
                get_error_buffer: func::<CtxGetBuffer>(handle, c"nft_ctx_get_error_buffer")?,
                run_cmd_from_buffer: func::<RunCmd>(handle, c"nft_run_cmd_from_buffer")?,
            })
        }
    }

    /// The process-wide library, if it can be loaded.
    fn get() -> Option<&'static Api> {
        static API: OnceLock<Option<Api>> = OnceLock::new();
        API.get_or_init(Api::load).as_ref()
    }
}

/// An owned `struct nft_ctx *`.
struct Ctx {
    api: &'static Api,
    ptr: *mut c_void,
}

// SAFETY: the context is only ever used behind the `Mutex` of [`InProcessNft`], one thread at a time;
// libnftables keeps no thread-local state tied to the creating thread.
unsafe impl Send for Ctx {}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `nft_ctx_new` and is freed exactly once.
        unsafe { (self.api.ctx_free)(self.ptr) }
    }
}

/// One libnftables context with a persistent netlink socket, in the network namespace of the thread
/// that created it (the proxy's own).
pub struct InProcessNft {
    ctx: Mutex<Ctx>,
}

impl std::fmt::Debug for InProcessNft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InProcessNft")
    }
}

impl InProcessNft {
    /// Loads libnftables and creates a context; `None` when the library is not installed (callers
    /// then run the `nft` binary).
    pub fn open() -> Option<InProcessNft> {
        let api = Api::get()?;
        // SAFETY: `nft_ctx_new(NFT_CTX_DEFAULT = 0)` has no preconditions; a null result is handled.
        let ptr = unsafe { (api.ctx_new)(0) };
        if ptr.is_null() {
            return None;
        }
        let ctx = Ctx { api, ptr };
        // SAFETY: `ptr` is a live context; buffering output and errors only redirects them to memory.
        let (out, err) = unsafe { ((api.buffer_output)(ptr), (api.buffer_error)(ptr)) };
        if out != 0 || err != 0 {
            return None;
        }
        Some(InProcessNft {
            ctx: Mutex::new(ctx),
        })
    }

    /// Runs a script as one atomic transaction, like `nft -f -`.
    pub fn run_script(&self, script: &str) -> Result<()> {
        let input = CString::new(script)
            .map_err(|_| Error::Rejected("nft script contains a NUL byte".into()))?;
        let ctx = self
            .ctx
            .lock()
            .map_err(|_| Error::Rejected("libnftables context poisoned".into()))?;
        // SAFETY: `ctx.ptr` is live and used by this thread only (mutex held); `input` outlives the call.
        let rc = unsafe { (ctx.api.run_cmd_from_buffer)(ctx.ptr, input.as_ptr()) };
        // SAFETY: as above; the returned buffer is copied before any further call on this context.
        let errors = unsafe {
            let p = (ctx.api.get_error_buffer)(ctx.ptr);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        if rc == 0 {
            if !errors.trim().is_empty() {
                tracing::debug!(%errors, "libnftables warnings");
            }
            Ok(())
        } else {
            Err(Error::Nft {
                status: rc,
                stderr: errors,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root: runs in a fresh network namespace entered by this test's own thread only
    /// (`unshare(CLONE_NEWNET)`), so the host's ruleset is never touched.
    #[test]
    fn runs_atomic_transactions_and_reports_errors_in_a_private_namespace() {
        std::thread::spawn(|| {
            // SAFETY: unshare only changes this (short-lived, test-owned) thread's network namespace.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare(CLONE_NEWNET) needs root");
            let nft = InProcessNft::open().expect("libnftables is installed with nftables");
            nft.run_script(
                "add table ip t\nadd set ip t s { type ipv4_addr ; }\nadd element ip t s { 10.0.0.1 }\n",
            )
            .unwrap();
            // Deleting an element that exists works; deleting it again fails with nft's message.
            nft.run_script("delete element ip t s { 10.0.0.1 }\n").unwrap();
            let err = nft
                .run_script("delete element ip t s { 10.0.0.1 }\n")
                .unwrap_err();
            assert!(err.to_string().contains("10.0.0.1"), "{err}");
            // A failing transaction applies nothing: the element added before the error is absent.
            assert!(nft
                .run_script("add element ip t s { 10.0.0.2 }\nadd element ip t nosuchset { 10.0.0.3 }\n")
                .is_err());
            nft.run_script("delete element ip t s { 10.0.0.2 }\n")
                .unwrap_err();
            assert!(nft.run_script("bad\0script").is_err());
        })
        .join()
        .unwrap();
    }
}
