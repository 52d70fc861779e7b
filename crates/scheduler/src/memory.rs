//! How much memory a load needs and how much the machine has free, so that a model that
//! cannot fit is refused with an error instead of the process being killed.

use std::path::Path;

/// Room for a first sequence's KV cache, scratch buffers and the tokenizer on top of
/// the weights.
const LOAD_OVERHEAD: u64 = 128 << 20;

/// Bytes loading the GGUF at `path` takes: its weights plus some working room.
pub fn estimate_load_bytes(path: &Path) -> Option<u64> {
    let weights = std::fs::metadata(path).ok()?.len();
    Some(weights + weights / 10 + LOAD_OVERHEAD)
}

/// `MemAvailable` from `/proc/meminfo`, or `WICK_MEMORY_AVAILABLE` (bytes) when set
/// (tests use it to simulate a small machine). `None` where neither is known.
pub fn available_bytes() -> Option<u64> {
    if let Some(v) = std::env::var("WICK_MEMORY_AVAILABLE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return Some(v);
    }
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&info)
}

/// Memory free for a load on `device`: on a GPU its driver's free memory less
/// `OLLAMA_GPU_OVERHEAD` (bytes kept free per GPU, as in Ollama); on the CPU
/// [`available_bytes`]. `WICK_MEMORY_AVAILABLE` overrides both.
pub fn available_bytes_on(device: &wick_engine::Device) -> Option<u64> {
    if device.is_cpu() || std::env::var_os("WICK_MEMORY_AVAILABLE").is_some() {
        return available_bytes();
    }
    let free = wick_engine::device::free_bytes(device)?;
    Some(free.saturating_sub(gpu_overhead(
        std::env::var("OLLAMA_GPU_OVERHEAD").ok().as_deref(),
    )))
}

/// `OLLAMA_GPU_OVERHEAD` in bytes; unset, empty or not a number is 0 (a bad value is
/// logged, as Ollama ignores it).
fn gpu_overhead(value: Option<&str>) -> u64 {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return 0;
    };
    v.parse().unwrap_or_else(|_| {
        tracing::warn!("OLLAMA_GPU_OVERHEAD={v:?} is not a number of bytes; ignored");
        0
    })
}

/// Give the memory the allocator holds free back to the OS. glibc keeps freed heap
/// pages (and raises its mmap threshold after big frees), so without this a server's RSS
/// stays at its busiest level after the load is gone or a model is unloaded.
pub(crate) fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory that is already free.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn parse_mem_available(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_overhead_is_bytes_and_a_bad_value_is_none() {
        assert_eq!(gpu_overhead(None), 0);
        assert_eq!(gpu_overhead(Some("")), 0);
        assert_eq!(gpu_overhead(Some("536870912")), 512 << 20);
        assert_eq!(gpu_overhead(Some("lots")), 0);
    }

    #[test]
    fn reads_mem_available() {
        let info = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(parse_mem_available(info), Some(20_000_000 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }
}
