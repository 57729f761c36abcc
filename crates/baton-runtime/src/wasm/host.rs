//! The host side of a guest: its per-invocation state ([`Host`]: the payload, WASI built
//! on first use, the output, the memory limiter, nested calls, the bandwidth bucket) and
//! the `baton` imports (see the parent module's docs).

use super::{NestedCall, MAX_OUTPUT_BYTES};
use crate::bucket::TokenBucket;
use std::time::Instant;
use wasmtime::{Caller, Extern, Linker, ResourceLimiter};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::WasiCtxBuilder;

/// Per-invocation host state: the payload, WASI (built on first use), the output, the
/// memory limiter, nested calls and the bandwidth bucket.
pub(super) struct Host {
    pub(super) wasi: Option<WasiP1Ctx>,
    pub(super) stdout: Option<MemoryOutputPipe>,
    pub(super) input: Vec<u8>,
    /// When the guest first took its input (the hop's end).
    pub(super) input_taken: Option<Instant>,
    pub(super) output: Vec<u8>,
    pub(super) limit_bytes: usize,
    pub(super) denied: bool,
    pub(super) nested: Option<NestedCall>,
    /// Result of the last nested call.
    pub(super) result: Vec<u8>,
    pub(super) bucket: Option<TokenBucket>,
    /// Bytes moved through host calls.
    pub(super) moved: u64,
}

impl Host {
    /// The WASI context, built on the first WASI call with the payload as stdin.
    pub(super) fn wasi(&mut self) -> &mut WasiP1Ctx {
        if self.wasi.is_none() {
            self.input_taken.get_or_insert_with(Instant::now);
            let stdout = MemoryOutputPipe::new(MAX_OUTPUT_BYTES);
            self.wasi = Some(
                WasiCtxBuilder::new()
                    .stdin(MemoryInputPipe::new(std::mem::take(&mut self.input)))
                    .stdout(stdout.clone())
                    .build_p1(),
            );
            self.stdout = Some(stdout);
        }
        self.wasi
            .get_or_insert_with(|| WasiCtxBuilder::new().build_p1())
    }

    /// Charges `bytes` to the bucket and waits as long as it says.
    fn charge(&mut self, bytes: u64) {
        self.moved += bytes;
        if let Some(bucket) = self.bucket.as_mut() {
            let wait = bucket.take(bytes, Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
    }
}

/// Reads `len` bytes at `ptr` of the caller's memory.
fn read_guest(caller: &mut Caller<'_, Host>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return None;
    };
    let (start, len) = (usize::try_from(ptr).ok()?, usize::try_from(len).ok()?);
    memory
        .data(&caller)
        .get(start..start.checked_add(len)?)
        .map(<[u8]>::to_vec)
}

/// Copies `bytes` (cut to `cap`) to `ptr` of the caller's memory; returns the count or -1.
fn write_guest(caller: &mut Caller<'_, Host>, ptr: i32, cap: i32, bytes: &[u8]) -> i32 {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return -1;
    };
    let (Ok(start), Ok(cap)) = (usize::try_from(ptr), usize::try_from(cap)) else {
        return -1;
    };
    let n = bytes.len().min(cap);
    match memory.write(caller, start, &bytes[..n]) {
        Ok(()) => n as i32,
        Err(_) => -1,
    }
}

pub(super) fn add_baton_imports(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.func_wrap("baton", "input_len", |caller: Caller<'_, Host>| -> i32 {
        caller.data().input.len().min(i32::MAX as usize) as i32
    })?;
    linker.func_wrap(
        "baton",
        "input",
        |mut caller: Caller<'_, Host>, ptr: i32, cap: i32| -> i32 {
            caller
                .data_mut()
                .input_taken
                .get_or_insert_with(Instant::now);
            let input = std::mem::take(&mut caller.data_mut().input);
            let n = write_guest(&mut caller, ptr, cap, &input);
            caller.data_mut().input = input;
            n
        },
    )?;
    linker.func_wrap(
        "baton",
        "output",
        |mut caller: Caller<'_, Host>, ptr: i32, len: i32| -> i32 {
            match read_guest(&mut caller, ptr, len) {
                Some(bytes) if caller.data().output.len() + bytes.len() <= MAX_OUTPUT_BYTES => {
                    caller.data_mut().output.extend_from_slice(&bytes);
                    bytes.len() as i32
                }
                _ => -1,
            }
        },
    )?;
    linker.func_wrap(
        "baton",
        "invoke",
        |mut caller: Caller<'_, Host>, name_ptr: i32, name_len: i32, ptr: i32, len: i32| -> i32 {
            let name =
                read_guest(&mut caller, name_ptr, name_len).and_then(|n| String::from_utf8(n).ok());
            let payload = read_guest(&mut caller, ptr, len);
            let (Some(name), Some(payload)) = (name, payload) else {
                caller.data_mut().result = b"bad name or payload pointer".to_vec();
                return -1;
            };
            let Some(nested) = caller.data().nested.clone() else {
                caller.data_mut().result = b"nested calls are not available here".to_vec();
                return -1;
            };
            caller.data_mut().charge(payload.len() as u64);
            let (result, code) = match nested(&name, &payload) {
                Ok(output) => {
                    let n = output.len().min(i32::MAX as usize) as i32;
                    (output, n)
                }
                Err(message) => (message.into_bytes(), -1),
            };
            caller.data_mut().charge(result.len() as u64);
            caller.data_mut().result = result;
            code
        },
    )?;
    linker.func_wrap(
        "baton",
        "result",
        |mut caller: Caller<'_, Host>, ptr: i32, cap: i32| -> i32 {
            let result = std::mem::take(&mut caller.data_mut().result);
            let n = write_guest(&mut caller, ptr, cap, &result);
            caller.data_mut().result = result;
            n
        },
    )?;
    Ok(())
}

impl ResourceLimiter for Host {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.limit_bytes;
        self.denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}
