//! Facts about the device a model runs on.

use candle_core::Device;

/// Free memory on a GPU device in bytes, as its driver reports it now; `None` on the
/// CPU (the host's memory is read elsewhere) and where the driver cannot say.
pub fn free_bytes(device: &Device) -> Option<u64> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => match d.cuda_stream().context().mem_get_info() {
            Ok((free, _total)) => Some(free as u64),
            Err(e) => {
                tracing::warn!("cannot read the GPU's free memory: {e}");
                None
            }
        },
        _ => None,
    }
}
