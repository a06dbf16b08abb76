//! Which of eframe's two renderers draws the window, and whether it draws on a GPU.
//!
//! Measured on 2 cores under Xvfb with Mesa's software rasterisers (tools/bench_window_training.sh,
//! BENCHMARKS.md session 8): one frame of the training panel at 1440×920 costs about 0.29 s of
//! CPU through wgpu on lavapipe (Vulkan) and about 0.04 s through glow on llvmpipe (OpenGL).
//! A person without a GPU (a VM, a remote desktop, a laptop without drivers) therefore gets
//! OpenGL by default; `CONVSCOPE_RENDERER=wgpu` picks wgpu. If OpenGL cannot open a window the
//! program starts itself again with wgpu (winit allows one event loop per process).

/// The renderer switch.
pub const ENV_VAR: &str = "CONVSCOPE_RENDERER";

/// The renderer to try first, and why the switch was not honoured (shown in the window).
pub fn from_env() -> (eframe::Renderer, Option<String>) {
    match std::env::var(ENV_VAR) {
        Err(std::env::VarError::NotPresent) => (eframe::Renderer::Glow, None),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "glow" | "gl" | "opengl" => (eframe::Renderer::Glow, None),
            "wgpu" => (eframe::Renderer::Wgpu, None),
            other => (
                eframe::Renderer::Glow,
                Some(format!(
                    "{ENV_VAR}={other:?} is not a renderer (glow or wgpu); drawing with glow"
                )),
            ),
        },
        Err(std::env::VarError::NotUnicode(_)) => (
            eframe::Renderer::Glow,
            Some(format!(
                "{ENV_VAR} is not text (glow or wgpu); drawing with glow"
            )),
        ),
    }
}

/// What draws the window, for the frame-time overlay and the repaint rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drawing {
    /// "glow" or "wgpu".
    pub renderer: &'static str,
    /// The driver's name for the device, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub device: String,
    /// The device is the CPU (llvmpipe, lavapipe, softpipe, SwiftShader, WARP).
    pub software: bool,
}

impl Drawing {
    /// Reads the renderer eframe created.
    pub fn of(cc: &eframe::CreationContext<'_>) -> Option<Self> {
        if let Some(gl) = &cc.gl {
            use eframe::glow::HasContext as _;
            // SAFETY: a plain glGetString on the context eframe made current for this thread.
            let device = unsafe { gl.get_parameter_string(eframe::glow::RENDERER) };
            return Some(Self {
                renderer: "glow",
                software: is_software_device_name(&device),
                device,
            });
        }
        if let Some(rs) = &cc.wgpu_render_state {
            let info = rs.adapter.get_info();
            return Some(Self {
                renderer: "wgpu",
                software: info.device_type == eframe::wgpu::DeviceType::Cpu
                    || is_software_device_name(&info.name),
                device: info.name,
            });
        }
        None
    }
}

/// Lowers the scheduling priority (nice 10) of Mesa's software rasteriser threads
/// (`llvmpipe-N`, used by both llvmpipe and lavapipe) in this process; returns how many it
/// found. Why: on 2 cores a frame's rasteriser threads preempt the engine's two workers, and
/// every preempted worker stalls the other at the next join, so ~2.5 s of rendering CPU cost
/// the engine ~3.3 s of its 20 per 10 s (tools/bench_window_training.sh). At nice 10 they take
/// what the engine leaves; while nothing trains they run as fast as before. Linux only; other
/// systems have no Mesa software rasteriser in practice.
pub fn yield_software_rasteriser() -> usize {
    #[cfg(target_os = "linux")]
    {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return 0;
        };
        let mut reniced = 0;
        for task in tasks.flatten() {
            let is_rasteriser = std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|c| c.starts_with("llvmpipe"));
            let tid = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<libc::id_t>().ok());
            if let (true, Some(tid)) = (is_rasteriser, tid) {
                // SAFETY: setpriority on a thread id of this process; no memory is passed.
                if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 10) } == 0 {
                    reniced += 1;
                }
            }
        }
        reniced
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Mesa's, Google's and Microsoft's software rasterisers by the names their drivers report.
pub fn is_software_device_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "llvmpipe",
        "lavapipe",
        "softpipe",
        "swiftshader",
        "microsoft basic render",
    ]
    .iter()
    .any(|s| name.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_rasterisers_are_recognised_by_name() {
        assert!(is_software_device_name("llvmpipe (LLVM 15.0.6, 256 bits)"));
        assert!(is_software_device_name("SwiftShader Device (Subzero)"));
        assert!(!is_software_device_name(
            "AMD Radeon 780M (radeonsi, gfx1103)"
        ));
        assert!(!is_software_device_name("Apple M2"));
    }
}
